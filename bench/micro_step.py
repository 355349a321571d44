"""Microbenchmark of the per-step extras of `train()`'s loop on the tiny demo model: each call
timed on its own (many calls, median of rounds), in µs per call.

Run: .venv/bin/python bench/micro_step.py [--threads 1]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trainable import Settings, bench_config, machine_line  # noqa: E402


def timeit(fn: Callable[[], object], number: int = 200, rounds: int = 7) -> float:
    """Median over rounds of µs per call."""
    fn()
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        per.append((time.perf_counter() - t0) / number)
    return 1e6 * statistics.median(per)


def main(argv: list[str] | None = None) -> int:
    import logging
    import warnings

    from accelerate import Accelerator

    from trainables.data.batching import collate
    from trainables.data.demo import write_demo_data
    from trainables.training import _check_finite, _lr_scheduler, _optimizer, _to_device

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ablate_trainable import build

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    s = Settings(quick=False, reps=1, train_limit=256, dev_limit=16, threads=a.threads,
                 max_length=128, speed_batches=None, speed_batch_size=16,
                 work=Path(tempfile.mkdtemp(prefix="mtsweep-micro-")))
    torch.set_num_threads(s.threads)
    write_demo_data(s.work / "demo")
    config = bench_config(s.work / "demo", s)
    accelerator = Accelerator(cpu=True, mixed_precision="no")
    model, splits, plan, pad_id = build(config, s, accelerator)
    params = list(model.parameters())

    def fill_grads() -> None:
        for q in params:
            q.grad = torch.randn_like(q) * 1e-3

    fill_grads()
    sst_rows = splits["sst"]["train"].batches(16, shuffle=True, seed=0, bucket=True)[0]
    para_rows = splits["para"]["train"].batches(16, shuffle=True, seed=0, bucket=True)[0]
    batch = _to_device(collate(splits["sst"]["train"].data, sst_rows, pad_id), "cpu")
    out = model({"sst": batch})
    losses = {t: v.detach() for t, v in out["losses"].items()}
    sums = {t: torch.zeros(()) for t in losses}

    def add_sums() -> None:
        for t, v in losses.items():
            sums[t] += v.detach().float()

    plain = _optimizer(model, config)
    sched = _lr_scheduler(plain, config, 10**9)
    wrapped_model, wrapped = accelerator.prepare(model, _optimizer(model, config))
    opts = {
        "AdamW step (default: single-tensor on CPU)": plain,
        "AdamW step, foreach=True": _with(model, config, foreach=True),
        "AdamW step, fused=True": _with(model, config, fused=True),
    }
    rows: list[tuple[str, float]] = []
    rows.append(("torch clip_grad_norm_ (default foreach=None)",
                 timeit(lambda: torch.nn.utils.clip_grad_norm_(params, 1.0))))
    rows.append(("torch clip_grad_norm_, foreach=True",
                 timeit(lambda: torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True))))
    rows.append(("accelerator.clip_grad_norm_(model.parameters())",
                 timeit(lambda: accelerator.clip_grad_norm_(wrapped_model.parameters(), 1.0))))
    rows.append(("lr_scheduler.step() (linear warmup/decay)", timeit(sched.step)))
    for name, opt in opts.items():
        rows.append((name, timeit(opt.step, number=50)))
    rows.append(("AcceleratedOptimizer.zero_grad (grads already None: call overhead)",
                 timeit(lambda: (wrapped.zero_grad(set_to_none=True), _noop()), number=500)))
    rows.append(("torch optimizer.zero_grad (grads already None: call overhead)",
                 timeit(lambda: (plain.zero_grad(set_to_none=True), _noop()), number=500)))
    fill_grads()
    rows.append(("loss sums += loss.detach().float() (1 task)", timeit(add_sums, number=2000)))
    rows.append(("_check_finite (1 task; train() runs it every 10 steps)",
                 timeit(lambda: _check_finite(losses, 0, 0), number=2000)))
    rows.append(("collate sst batch (single, 16 rows)",
                 timeit(lambda: collate(splits["sst"]["train"].data, sst_rows, pad_id))))
    rows.append(("collate para batch (separate, 16 rows)",
                 timeit(lambda: collate(splits["para"]["train"].data, para_rows, pad_id))))
    rows.append(("_to_device on CPU", timeit(lambda: _to_device(batch, "cpu"), number=2000)))

    def fwd_bwd() -> None:
        o = model({"sst": batch})
        sum(o["weighted"].values()).backward()

    rows.append(("reference: forward+backward of one sst batch", timeit(fwd_bwd, number=20)))
    shutil.rmtree(s.work, ignore_errors=True)  # demo data and token cache
    n_tensors = len(params)
    n_params = sum(q.numel() for q in params)
    lines = [
        "# Per-call cost of the training loop's extras (tiny demo model)",
        "",
        machine_line(s),
        "",
        f"{n_tensors} parameter tensors, {n_params} parameters. Median of 7 rounds.",
        "",
        "| call | µs per call |",
        "|---|---:|",
        *[f"| {name} | {us:.0f} |" for name, us in rows],
        "",
    ]
    print("\n".join(lines))
    return 0


def _noop() -> None:
    return None


def _with(model, config, **kw) -> torch.optim.Optimizer:
    o = config.optim
    decay = [q for q in model.parameters() if q.ndim >= 2]
    no_decay = [q for q in model.parameters() if q.ndim < 2]
    groups = [{"params": decay, "weight_decay": o.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps, **kw)


if __name__ == "__main__":
    sys.exit(main())
