"""GPU benchmark: BERT-base training throughput and model-FLOPs utilisation of the trainable.

Runs `trainables.train.train` (the function every trial runs) on the CS224N data with a
BERT-base-sized encoder (randomly initialised: throughput does not depend on the weights; the
uncased WordPiece tokenizer of all-MiniLM-L6-v2, which is BERT-base's vocabulary):

  fast      bf16 autocast, PyTorch SDPA attention, length-bucketed batches
  baseline  fp32, eager attention, unbucketed batches (each padded to its longest row)

MFU = 6 × encoder parameters × real (non-padding) training tokens per second ÷ the GPU's dense
bf16 peak. Tokens are counted by a hook on the encoder's forward in training mode; each
configuration is timed over its second epoch (the first one warms up kernels and caches).
Also checks that two identical runs on the GPU agree within the reproduction tolerance.

    python bench/gpu.py --data DIR --tokenizer DIR [--out gpu.md] [--quick]

Needs torch, transformers, accelerate, pyarrow, numpy and pyyaml (not Ray, Optuna or MLflow).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Dense bf16 tensor-core peaks (FLOP/s), by the name torch reports.
PEAKS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}
TARGET_MFU = 0.40
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")


def bert_base_folder(tokenizer_dir: Path, work: Path) -> Path:
    """A BERT-base (uncased) folder with random weights and the given tokenizer."""
    from transformers import BertConfig, BertModel

    folder = work / "bert-base-random"
    folder.mkdir(parents=True, exist_ok=True)
    BertModel(BertConfig(), add_pooling_layer=False).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, folder / name)
    return folder


def peak_flops() -> tuple[str, float | None]:
    import torch

    name = torch.cuda.get_device_name(0)
    for key, peak in PEAKS.items():
        if key in name:
            return name, peak
    return name, None


def measure(config, runtime) -> dict:
    """Train `config`; the second epoch's examples/s and real / computed tokens per second."""
    import torch

    import trainables.train as T
    from trainables.train import train

    counts = {"real": 0, "computed": 0}
    per_epoch: list[dict] = []
    original = T.load_encoder

    def load_with_counter(*args, **kwargs):
        tokenizer, encoder = original(*args, **kwargs)

        def hook(module, args, kwargs):
            if module.training:
                mask = kwargs.get("attention_mask")
                ids = kwargs.get("input_ids", args[0] if args else None)
                if mask is not None:
                    counts["real"] += int(mask.sum())
                if ids is not None:
                    counts["computed"] += ids.numel()

        encoder.register_forward_pre_hook(hook, with_kwargs=True)
        return tokenizer, encoder

    def on_epoch(rep) -> None:
        per_epoch.append({**rep.metrics, "real": counts["real"], "computed": counts["computed"]})
        counts["real"] = counts["computed"] = 0

    T.load_encoder = load_with_counter
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            train(config, runtime, callbacks=[on_epoch])
    finally:
        T.load_encoder = original
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    last = per_epoch[-1]
    seconds = last["epoch_seconds"]
    return {
        "examples_per_s": last["examples_per_second"],
        "real_tokens_per_s": last["real"] / seconds,
        "computed_tokens_per_s": last["computed"] / seconds,
        "epoch_seconds": seconds,
        "padding_efficiency": last["real"] / max(1, last["computed"]),
        "metrics": {k: last[k] for k in ("sst_acc", "para_acc", "sts_corr", "overall")},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="CS224N data folder")
    p.add_argument("--tokenizer", type=Path, required=True,
                   help="folder with BERT-base-uncased tokenizer files (vocab.txt …)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--batches", default="32,128,256",
                   help="batch sizes of the fast configuration (comma-separated)")
    p.add_argument("--no-baseline", action="store_true", help="skip the fp32 baseline")
    p.add_argument("--no-repro", action="store_true", help="skip the two-run agreement check")
    p.add_argument("--epoch-length", default="shortest",
                   help="schedule.epoch_length (longest: more steps at large batches)")
    a = p.parse_args(argv)

    import torch

    from trainables.config import TrialConfig
    from trainables.encoder import count_parameters
    from trainables.runtime import Runtime

    if not torch.cuda.is_available():
        print("no GPU: nothing to measure", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mtsweep-gpu-"))
    folder = bert_base_folder(a.tokenizer, work)
    gpu, peak = peak_flops()
    limit = 2000 if a.quick else 8000
    base = TrialConfig.load(REPO / "search_spaces" / "trials" / "bert_base_cs224n.yaml")

    def config(batch: int, bucket: bool, epochs: int = 2):
        return base.replace({
            "encoder.name": str(folder), "epochs": epochs, "batch_size": batch,
            "data.dir": str(a.data), "data.bucket": bucket,
            "data.train_limit": {"sst": limit, "para": limit, "sts": limit},
            "data.dev_limit": {"sst": 256, "para": 256, "sts": 256},
            "schedule.epoch_length": a.epoch_length,
        })

    from transformers import AutoModel

    n_params = count_parameters(AutoModel.from_pretrained(folder))
    cache = str(work / "cache")
    fast = Runtime(mixed_precision="bf16", attention="sdpa", cache_dir=cache, progress_lines=0)
    slow = Runtime(mixed_precision="no", attention="eager", cache_dir=cache, progress_lines=0)
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    plan = [] if a.no_baseline else [("baseline: fp32, eager, unbucketed", slow, 32, False)]
    plan += [("fast: bf16, SDPA, bucketed", fast, int(b), True) for b in a.batches.split(",")]
    for name, rt, batch, bucket in plan:
        t0 = time.perf_counter()
        r = measure(config(batch, bucket), rt)
        r.update(name=name, batch=batch, wall=time.perf_counter() - t0,
                 mfu=(6 * n_params * r["real_tokens_per_s"] / peak) if peak else None)
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "metrics"}), file=sys.stderr,
              flush=True)

    # Reproduction on the GPU: the same trial twice.
    diff = float("nan")
    if not a.no_repro:
        twice = [measure(config(32, True, epochs=1), fast)["metrics"] for _ in range(2)]
        diff = max(abs(twice[0][k] - twice[1][k]) for k in twice[0])

    base_row = rows[0]
    best = max(rows[0 if a.no_baseline else 1:], key=lambda r: r["real_tokens_per_s"])
    lines = [
        "## 7. GPU: BERT-base throughput and MFU",
        "",
        f"GPU: {gpu}; torch {torch.__version__}; BERT-base encoder, {n_params / 1e6:.1f} M "
        f"parameters; dense bf16 peak {peak / 1e12:.0f} TFLOP/s" if peak else f"GPU: {gpu}",
        f"CS224N data, {limit} training rows per task, max_length 128, round-robin; timed over "
        "the second of 2 epochs.",
        "",
        "| configuration | batch | examples/s | real tokens/s | padding efficiency | MFU |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "-"
        lines.append(f"| {r['name']} | {r['batch']} | {r['examples_per_s']:.0f} | "
                     f"{r['real_tokens_per_s']:.0f} | {r['padding_efficiency']:.2f} | {mfu} |")
    speed = best["real_tokens_per_s"] / base_row["real_tokens_per_s"]
    lines += [
        "",
        f"Speed-up of the fast path (batch {best['batch']}) over the fp32 baseline (batch 32), "
        f"real tokens/s: **{speed:.1f}×**. Best MFU **{100 * (best['mfu'] or 0):.1f} %** "
        f"(target ≥ {100 * TARGET_MFU:.0f} % on an H100).",
        f"Two identical bf16 runs on this GPU: largest metric difference {diff:.2e} "
        f"(reproduction tolerance 1e-3).",
        "Multi-GPU (1 GPU vs 2+ workers): only one GPU was available.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if a.out:
        a.out.write_text(report)
    if a.json:
        a.json.write_text(json.dumps({"gpu": gpu, "params": n_params, "rows": rows,
                                      "repro_max_diff": diff, "speedup": speed}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
