"""GPU benchmark: BERT-base training throughput and model-FLOPs utilisation of the trainable.

Runs `trainables.training.train` (the function every trial runs) on the CS224N data with a
BERT-base-sized encoder (randomly initialised: throughput does not depend on the weights; the
uncased WordPiece tokenizer of all-MiniLM-L6-v2, which is BERT-base's vocabulary):

  baseline  fp32, eager attention, unbucketed batches (each padded to its longest row)
  fast      bf16 autocast, PyTorch SDPA attention (flash / memory-efficient kernels),
            length-bucketed batches; once more with SDPA's own kernel choice (cuDNN)
  compiled  fast, with the encoder compiled by torch.compile (`Runtime(compile=True)`)
  packed    fast, with the encoder on the real tokens only (`Runtime(attention="packed")`:
            no padding, variable-length flash attention), eager and compiled; these run
            without attention dropout, which variable-length attention does not have
  flex      packed, with FlexAttention's block-diagonal mask instead of variable-length
            flash attention (`Runtime(attention="packed_flex")`), eager and compiled

  workers   fast, as one trial on 1 GPU and on N (`--workers`; default: every GPU when there
            are 2 or more): `accelerate launch` of `python -m trainables` (DDP, one process per
            GPU, each with the trial's batch), examples/s of the timed epoch

MFU = 6 × encoder parameters × real (non-padding) training tokens per second ÷ the GPU's dense
bf16 peak (also given with the embedding parameters left out, which do no matrix products).
Each configuration trains 2 epochs of `--steps` optimizer steps and is timed over the second
(the first warms up kernels, caches and compilation); each row also counts the waits on the GPU
in the timed epoch's training and, compiled, the graphs torch.compile built (recompilations show
there). Also checks that two identical runs on the GPU agree within the reproduction tolerance.

    python bench/gpu.py --data DIR --tokenizer DIR [--out gpu.md] [--json gpu.json] [--quick]
    python bench/gpu.py --data DIR --smoke      # checks the script on a CPU (tiny encoder)

Needs torch, transformers, accelerate, pyarrow, numpy and pyyaml (not Ray, Optuna or MLflow).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
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


def matmul_ceiling() -> float | None:
    """bf16 TFLOP/s of an 8192³ matrix product on this GPU (median of 10 after warm-up): the
    practical ceiling beside the datasheet peak."""
    import torch

    if not torch.cuda.is_available():
        return None
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return 2 * n**3 / times[len(times) // 2]


def measure(config, runtime, profile: Path | None = None) -> dict:
    """Train `config` for 2 epochs; the second epoch's examples/s, real and computed tokens/s.

    Tokens are counted as each training step's batches enter the model: real = attention-mask
    ones (summed on the device, read once per epoch: no extra waits on the GPU), computed =
    the shapes the encoder runs (a bi-encoder's two sides stacked to a common length)."""
    import torch

    import trainables.training as T
    from trainables.runtime import PACKED_ATTENTIONS

    counts: dict = {"real": 0, "computed": 0}
    per_epoch: list[dict] = []
    original = T.MultiTaskModel
    steps = config.schedule.steps_per_epoch
    # --profile: up to 10 steps inside the timed epoch, under torch.profiler.
    first = steps + steps // 4 + 1
    window = (first, first + min(10, steps // 2)) if profile else None
    profiler: dict = {"step": 0}
    syncs = SyncCounter()
    graphs = _compiled_graphs()

    class Counting(original):
        def train(self, mode: bool = True):
            if not mode:  # evaluation: the timed epoch's training steps are over
                syncs.stop()
            return super().train(mode)

        def forward(self, step):
            if self.training:
                i = profiler["step"] = profiler["step"] + 1
                if i == steps + 1:  # the timed epoch's first step
                    syncs.start()
            if self.training and window:
                if i == window[0]:
                    kinds = [torch.profiler.ProfilerActivity.CPU]
                    if torch.cuda.is_available():
                        kinds.append(torch.profiler.ProfilerActivity.CUDA)
                    profiler["p"] = torch.profiler.profile(activities=kinds)
                    _sync()
                    profiler["p"].__enter__()
                    profiler["t0"] = time.perf_counter()
                elif i == window[1]:
                    _sync()
                    profiler["wall"] = time.perf_counter() - profiler["t0"]
                    profiler["p"].__exit__(None, None, None)
            if self.training:
                for batch in step.values():
                    if "input_ids_a" in batch:
                        a, b = batch["attention_mask_a"], batch["attention_mask_b"]
                        counts["real"] = counts["real"] + a.sum() + b.sum()
                        counts["computed"] += 2 * a.shape[0] * max(a.shape[1], b.shape[1])
                    else:
                        counts["real"] = counts["real"] + batch["attention_mask"].sum()
                        counts["computed"] += batch["attention_mask"].numel()
            return super().forward(step)

    packed = runtime.attention in PACKED_ATTENTIONS  # the encoder computes real tokens only

    def on_epoch(rep) -> None:
        real = int(counts["real"])
        per_epoch.append({**rep.metrics, "real": real,
                          "computed": real if packed else counts["computed"]})
        counts["real"] = counts["computed"] = 0

    T.MultiTaskModel = Counting
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            T.train(config, runtime, callbacks=[on_epoch])
    finally:
        T.MultiTaskModel = original
        syncs.stop()  # a failed configuration leaves no sync debug mode behind
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    if profile and "wall" in profiler:
        _write_profile(profiler["p"], profiler["wall"], window[1] - window[0], profile)
    last = per_epoch[-1]
    seconds = last["epoch_seconds"]
    return {
        "examples_per_s": _epoch_examples(per_epoch) / seconds,
        "real_tokens_per_s": last["real"] / seconds,
        "computed_tokens_per_s": last["computed"] / seconds,
        "epoch_seconds": seconds,
        "step_ms": 1e3 * seconds / steps if steps else None,
        "first_epoch_seconds": per_epoch[0]["epoch_seconds"],
        "padding_efficiency": last["real"] / max(1, last["computed"]),
        "metrics": {k: last[k] for k in ("sst_acc", "para_acc", "sts_corr", "overall")},
        "gpu_waits": syncs.count if syncs.counted else None,
        "compiled_graphs": _compiled_graphs() - graphs if runtime.compile else None,
    }


class SyncCounter:
    """Counts the calls that make the host wait for the GPU (PyTorch's CUDA sync debug mode,
    which warns at each) between `start` and `stop`; nothing without a GPU. A training step
    that waits for the GPU cannot queue the next step's work while the GPU runs this one."""

    def __init__(self) -> None:
        self.count, self.counted, self._catch = 0, False, None

    def start(self) -> None:
        import warnings

        import torch

        if not torch.cuda.is_available() or self._catch is not None:
            return
        self._catch = warnings.catch_warnings(record=True)
        self._log = self._catch.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> None:
        import torch

        if self._catch is None:
            return
        torch.cuda.set_sync_debug_mode(0)
        self.count = sum("synchronizing" in str(w.message) for w in self._log)
        self._catch.__exit__(None, None, None)
        self._catch, self.counted = None, True


def _compiled_graphs() -> int:
    """How many graphs torch.compile has built in this process so far: a compiled trial
    builds one for training and one for evaluation; more mean recompilations."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def measure_workers(config, workers: int, work: Path, precision: str, cpu: bool) -> dict:
    """`config` as one trial on `workers` processes (DDP; one GPU each, or CPU processes with
    one thread each when `cpu`) through `accelerate launch`: the second epoch's examples/s."""
    import subprocess

    import yaml

    folder = work / f"workers-{workers}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trial.yaml"
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    cmd = [accelerate, "launch", *(["--multi_gpu"] if workers > 1 else []),
           "--num_processes", str(workers), "--num_machines", "1", "--mixed_precision",
           precision, "--dynamo_backend", "no", "-m", "trainables", str(path), "--json",
           "--precision", precision, "--cache-dir", str(work / "cache"),
           "--out", str(folder / "out"), *(["--cpu", "--threads", "1"] if cpu else [])]
    env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if cpu else {})}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{workers} workers: exit {proc.returncode}: {proc.stderr[-1500:]}")
    per_epoch = [json.loads(line) for line in
                 (folder / "out" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    seconds = per_epoch[-1]["epoch_seconds"]
    steps = config.schedule.steps_per_epoch
    return {"workers": workers, "batch": config.batch_size,
            "examples_per_s": _epoch_examples(per_epoch) / seconds,
            "step_ms": 1e3 * seconds / steps if steps else None,
            "first_epoch_seconds": per_epoch[0]["epoch_seconds"],
            "wall": time.perf_counter() - t0,
            "overall": per_epoch[-1].get("overall")}


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _write_profile(prof, wall: float, steps: int, path: Path) -> None:
    """GPU busy time ÷ wall time over the profiled steps, and the kernels that took longest."""
    events = prof.key_averages()
    kernels = [e for e in events if str(e.device_type).endswith("CUDA")]
    busy = sum(e.self_device_time_total for e in kernels) / 1e6
    cpu_ops = sum(e.self_cpu_time_total for e in events) / 1e6
    text = (f"{steps} steps in {wall * 1e3:.1f} ms ({wall * 1e3 / steps:.1f} ms/step); GPU busy "
            f"{busy * 1e3:.1f} ms ({busy / wall:.0%} of the wall time); CPU time in torch ops "
            f"{cpu_ops * 1e3:.1f} ms; GPU kernels "
            f"{sum(e.count for e in kernels)}\n\n")
    text += events.table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=60)
    path.write_text(text)
    print(text.split("\n\n")[0], file=sys.stderr, flush=True)


def _epoch_examples(per_epoch: list[dict]) -> float:
    """Examples trained in the last epoch (examples_per_second is cumulative over epochs)."""
    last = per_epoch[-1]
    total = last["examples_per_second"] * last["train_seconds"]
    before = per_epoch[-2]["examples_per_second"] * per_epoch[-2]["train_seconds"] \
        if len(per_epoch) > 1 else 0.0
    return total - before


def _sizes(text: str) -> list[int]:
    """'256,1024' → [256, 1024]; '' → [] (none)."""
    return [int(b) for b in text.split(",") if b.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="CS224N data folder")
    p.add_argument("--tokenizer", type=Path, default=None,
                   help="folder with BERT-base-uncased tokenizer files (vocab.txt …)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--batches", default="32,256,1024", type=_sizes,
                   help="batch sizes of the fast configuration (comma-separated)")
    p.add_argument("--compiled", default="512,1024", type=_sizes,
                   help="batch sizes of the fast configuration with torch.compile ('' for none)")
    p.add_argument("--packed", default="1024", type=_sizes,
                   help="batch sizes of the fast configuration on packed tokens ('' for none)")
    p.add_argument("--packed-compiled", default="1024", type=_sizes,
                   help="the same with torch.compile ('' for none)")
    p.add_argument("--flex", default="", type=_sizes,
                   help="batch sizes of packed with FlexAttention, encoder not compiled ('' for "
                        "none)")
    p.add_argument("--flex-compiled", default="1024", type=_sizes,
                   help="the same with torch.compile ('' for none)")
    p.add_argument("--steps", type=int, default=80, help="optimizer steps per timed epoch")
    p.add_argument("--no-baseline", action="store_true", help="skip the fp32 baseline")
    p.add_argument("--no-attention-dropout", action="store_true",
                   help="padded configurations without attention dropout too, as packed ones "
                        "always run: compares the two on the same arithmetic")
    p.add_argument("--profile", type=Path, default=None,
                   help="also profile 10 steps of the fast, compiled, packed-compiled and "
                        "flex-compiled configurations at their largest batch and write the GPU "
                        "busy fraction and top kernels to this file (PROFILE, PROFILE.compiled, "
                        "PROFILE.packed-compiled, PROFILE.flex-compiled)")
    p.add_argument("--workers", default=None, type=_sizes,
                   help="worker counts to compare with 1 worker, one GPU each (default: the "
                        "number of GPUs when there are 2 or more; '' for none; with --smoke: "
                        "CPU processes)")
    p.add_argument("--workers-batch", type=int, default=1024,
                   help="the batch per worker of the worker comparison")
    p.add_argument("--no-repro", action="store_true", help="skip the two-run agreement check")
    p.add_argument("--smoke", action="store_true",
                   help="check the script on a CPU: the tiny encoder, a few steps, no GPU numbers")
    a = p.parse_args(argv)

    import torch

    from trainables.config import TrialConfig
    from trainables.encoder import count_parameters
    from trainables.runtime import PACKED_ATTENTIONS, Runtime

    if not torch.cuda.is_available() and not a.smoke:
        print("no GPU: nothing to measure (--smoke checks the script on a CPU)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mtsweep-gpu-"))
    if a.smoke:
        encoder, gpu, peak, ceiling = "tiny", "CPU (smoke run)", None, None
    else:
        if a.tokenizer is None:
            p.error("--tokenizer is required on a GPU")
        encoder = str(bert_base_folder(a.tokenizer, work))
        gpu, peak = peak_flops()
        ceiling = matmul_ceiling()
    steps = 4 if a.smoke else (a.steps // 2 if a.quick else a.steps)
    base = TrialConfig.load(REPO / "search_spaces" / "trials" / "bert_base_cs224n.yaml")

    def config(batch: int, bucket: bool, epochs: int = 2, packed: bool = False):
        return base.replace({
            "encoder.name": encoder, "epochs": epochs, "batch_size": batch,
            "data.dir": str(a.data), "data.bucket": bucket,
            "data.dev_limit": {"sst": 512, "para": 512, "sts": 512},
            "schedule.epoch_length": "fixed", "schedule.steps_per_epoch": steps,
            **({"encoder.attention_dropout": 0.0} if packed or a.no_attention_dropout else {}),
        })

    import trainables.encoder as E

    tokenizer, model = E.load_encoder(config(32, True).encoder)
    n_params = count_parameters(model)
    embedding = count_parameters(model.embeddings)
    del model
    cache = str(work / "cache")
    cpu = True if a.smoke else None
    fast_precision = "no" if a.smoke else "bf16"

    def rt(precision, attention, compiled=False):
        return Runtime(cpu=cpu, mixed_precision=precision, attention=attention, cache_dir=cache,
                       progress_lines=0, compile=compiled)

    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    plan = [] if a.no_baseline else [
        ("baseline: fp32, eager, unbucketed", rt("no", "eager"), 32, False)]
    batches = a.batches
    plan += [("fast: bf16, SDPA, bucketed", rt(fast_precision, "auto"), b, True) for b in batches]
    if batches and not a.smoke:
        # The same at the largest batch with PyTorch's own attention kernel choice (cuDNN).
        plan.append(("fast, cuDNN attention", rt(fast_precision, "sdpa"), max(batches), True))
    plan += [("fast + packed", rt(fast_precision, "packed"), b, True) for b in a.packed]
    plan += [("fast + packed, FlexAttention", rt(fast_precision, "packed_flex"), b, True)
             for b in a.flex]
    compiled = [("fast + torch.compile", rt(fast_precision, "auto", True), b, True)
                for b in a.compiled]
    compiled += [("fast + packed + torch.compile", rt(fast_precision, "packed", True), b, True)
                 for b in a.packed_compiled]
    compiled += [("fast + packed, FlexAttention + torch.compile",
                  rt(fast_precision, "packed_flex", True), b, True) for b in a.flex_compiled]

    def reproduction() -> float:
        """The same bf16 trial twice on this GPU: the largest difference in a dev metric."""
        if a.no_repro:
            return float("nan")
        twice = [measure(config(32, True, epochs=1), rt(fast_precision, "auto"))["metrics"]
                 for _ in range(2)]
        return max(abs(twice[0][k] - twice[1][k]) for k in twice[0])

    diff = float("nan")
    # The reproduction check runs before the compiled configurations, which take minutes to
    # start: a run cut short still has it.
    for item in [*plan, None, *compiled]:
        if item is None:
            diff = reproduction()
            continue
        name, runtime, batch, bucket = item
        t0 = time.perf_counter()
        trial = config(batch, bucket, packed=runtime.attention in PACKED_ATTENTIONS)
        try:
            r = measure(trial, runtime)
        except Exception as e:  # noqa: BLE001 - report the configuration that broke, go on
            print(f"{name}, batch {batch}: failed: {type(e).__name__}: {e}", file=sys.stderr,
                  flush=True)
            continue
        r.update(name=name, batch=batch, wall=time.perf_counter() - t0,
                 attention_dropout=trial.encoder.attention_dropout,
                 mfu=(6 * n_params * r["real_tokens_per_s"] / peak) if peak else None,
                 mfu_non_embedding=(6 * (n_params - embedding) * r["real_tokens_per_s"] / peak)
                 if peak else None)
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "metrics"}), file=sys.stderr,
              flush=True)
        if a.json:  # after each configuration: a run cut short keeps what it measured
            _write_json(a.json, gpu, n_params, embedding, ceiling, rows, diff)

    counts = a.workers if a.workers is not None else (
        [] if a.smoke or torch.cuda.device_count() < 2 else [torch.cuda.device_count()])
    workers: list[dict] = []
    one = None  # the 1-worker measurement the others are compared with
    for n in [1, *counts] if counts else []:
        try:
            w = measure_workers(config(a.workers_batch, True), n, work, fast_precision, a.smoke)
        except Exception as e:  # noqa: BLE001 - report it, go on
            print(f"{n} workers: failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            continue
        one = w if n == 1 else one
        w["vs_one"] = w["examples_per_s"] / one["examples_per_s"] if one else None
        workers.append(w)
        print(json.dumps(w), file=sys.stderr, flush=True)
        if a.json:
            _write_json(a.json, gpu, n_params, embedding, ceiling, rows, diff, workers)

    if a.profile:
        # 10 steps of each kind of configuration at its largest batch: eager, compiled,
        # packed and compiled, FlexAttention and compiled (PROFILE, PROFILE.compiled,
        # PROFILE.packed-compiled, PROFILE.flex-compiled).
        for suffix, sizes, runtime in (
                ("", a.batches, rt(fast_precision, "auto")),
                ("compiled", a.compiled, rt(fast_precision, "auto", True)),
                ("packed-compiled", a.packed_compiled, rt(fast_precision, "packed", True)),
                ("flex-compiled", a.flex_compiled, rt(fast_precision, "packed_flex", True))):
            if not sizes:
                continue
            path = a.profile.with_suffix(f".{suffix}{a.profile.suffix}") if suffix else a.profile
            measure(config(max(sizes), True, packed=runtime.attention in PACKED_ATTENTIONS),
                    runtime, profile=path)

    report = render(rows, gpu, n_params, embedding, peak, ceiling, diff, steps, workers)
    print(report)
    if a.out:
        a.out.write_text(report)
    if a.json:
        _write_json(a.json, gpu, n_params, embedding, ceiling, rows, diff, workers)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _write_json(path: Path, gpu, n_params, embedding, ceiling, rows, diff,
                workers: list[dict] | None = None) -> None:
    path.write_text(json.dumps({
        "gpu": gpu, "params": n_params, "embedding_params": embedding,
        "matmul_tflops": ceiling and ceiling / 1e12, "rows": rows, "repro_max_diff": diff,
        "workers": workers or [],
    }, indent=1))


def workers_table(workers: list[dict]) -> list[str]:
    """The worker comparison (1 worker vs N, one GPU each) as Markdown, with what it measured;
    nothing without one."""
    if not workers:
        return []
    out = ["", "One trial on 1 worker and on N (DDP through `accelerate launch`, one GPU each, the "
           "trial's batch on each: N × batch rows per step; timed over the second epoch):", "",
           "| workers | batch per worker | examples/s | ms/step | ÷ 1 worker | per-worker efficiency "
           "| first epoch s | dev overall |", "|---|---|---|---|---|---|---|---|"]
    for w in workers:
        vs, overall, n = w.get("vs_one"), w.get("overall"), w["workers"]
        out.append(
            f"| {n} | {w['batch']} | {w['examples_per_s']:.0f} | {w['step_ms']:.1f} | "
            f"{'-' if vs is None else f'{vs:.2f}×'} | "
            f"{'-' if vs is None else f'{vs / n:.0%}'} | {w['first_epoch_seconds']:.1f} | "
            f"{'-' if overall is None else f'{overall:.3f}'} |")
    return out


def rows_table(rows: list[dict]) -> list[str]:
    """The rows as a Markdown table (rows recorded before a column existed show "-" there)."""
    out = ["| configuration | batch | examples/s | real tokens/s | padding efficiency | ms/step "
           "| MFU | MFU, non-embedding | waits on the GPU | compiled graphs |",
           "|---|---|---|---|---|---|---|---|---|---|"]

    def pct(v):
        return f"{100 * v:.1f} %" if v is not None else "-"

    def plain(v):
        return "-" if v is None else str(v)

    for r in rows:
        step = f"{r['step_ms']:.1f}" if r.get("step_ms") is not None else "-"
        out.append(f"| {r['name']} | {r['batch']} | {r['examples_per_s']:.0f} | "
                   f"{r['real_tokens_per_s']:.0f} | {r['padding_efficiency']:.2f} | {step} | "
                   f"{pct(r.get('mfu'))} | {pct(r.get('mfu_non_embedding'))} | "
                   f"{plain(r.get('gpu_waits'))} | {plain(r.get('compiled_graphs'))} |")
    return out


WAITS_NOTE = ("*Waits on the GPU*: calls in the timed epoch's training that made the host "
              "wait for the GPU (PyTorch's CUDA sync debug mode); the epoch's closing finiteness "
              "check is one, so more than one or two mean a step waits and cannot queue its "
              "successor while the GPU works. *Compiled graphs*: graphs torch.compile built "
              "for the row (training and evaluation: 2; more are recompilations).")


def waits_note(rows: list[dict]) -> list[str]:
    """`WAITS_NOTE` after the table, where some row records those columns."""
    recorded = any(r.get("gpu_waits") is not None or r.get("compiled_graphs") is not None
                   for r in rows)
    return ["", WAITS_NOTE] if recorded else []


def render(rows, gpu, n_params, embedding, peak, ceiling, diff, steps,
           workers: list[dict] | None = None) -> str:
    import torch

    lines = [
        "## 7. GPU: BERT-base throughput and MFU",
        "",
        f"GPU: {gpu}; torch {torch.__version__}; encoder {n_params / 1e6:.1f} M parameters "
        f"({embedding / 1e6:.1f} M of them embeddings)"
        + (f"; dense bf16 peak {peak / 1e12:.0f} TFLOP/s" if peak else "")
        + (f", an 8192³ bf16 matrix product here {ceiling / 1e12:.0f}" if ceiling else "") + ".",
        f"CS224N data, max_length 128, round-robin; timed over the second of 2 epochs of "
        f"{steps} steps.",
        "",
        *rows_table(rows),
    ]
    lines += waits_note(rows)
    by_dropout: dict[float, set[str]] = {}
    for r in rows:
        if r.get("attention_dropout") is not None:
            by_dropout.setdefault(r["attention_dropout"], set()).add(r["name"])
    if len(by_dropout) > 1:
        groups = "; ".join(f"{', '.join(sorted(names))}: {d:g}"
                           for d, names in sorted(by_dropout.items()))
        lines += ["", f"Attention dropout differs between the rows (packed rows have none): "
                  f"{groups}. `--no-attention-dropout` runs every row without it."]
    fast = [r for r in rows if not r["name"].startswith("baseline")]
    base = next((r for r in rows if r["name"].startswith("baseline")), None)
    if fast and base:
        best = max(fast, key=lambda r: r["real_tokens_per_s"])
        lines += ["", f"Best: {best['name']}, batch {best['batch']}: "
                  f"{best['real_tokens_per_s'] / base['real_tokens_per_s']:.1f}× the real "
                  f"tokens/s of the fp32 baseline (batch {base['batch']})"
                  + (f"; MFU **{100 * best['mfu']:.1f} %** (target ≥ {100 * TARGET_MFU:.0f} % "
                     "on an H100)." if best["mfu"] is not None else ".")]
    lines += workers_table(workers or [])
    if diff == diff and diff is not None:  # NaN: the check was not run (--no-repro)
        lines.append(f"Two identical bf16 runs on this GPU: largest metric difference "
                     f"{diff:.2e} (reproduction tolerance 1e-3).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
