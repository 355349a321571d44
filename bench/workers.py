"""Multi-worker trials: examples/s of one trial on 2 DDP workers ÷ the same trial on 1 worker.

What a GPU machine with several GPUs would measure as "1-GPU trial vs the same trial with 2+
workers", here on the CPU: `mtsweep launch` runs a one-trial sweep of the demo trial (tiny
encoder) with `resources.workers: 1`, then 2 (Ray Train workers, DDP over gloo, 1 CPU and 1
thread each), in alternating order. `batch_size` is per worker (data parallel: 2 workers take
2 × batch_size rows per step), so each worker computes what the 1-worker trial computes and the
gradients are averaged across them. Rates are the trial's own training examples/s (all workers
together, epochs only); the per-trial start-up (trial start → first step) is reported beside
them. Ideal ratio: the number of workers, when each has a core of its own.

Not in the default suite (about 2 minutes): `bench/run_all.py --only workers`.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from bench.common import Result, md_table
from bench.sweep_runs import demo_data, launch, trial_dict

WORKERS = 2


def run(quick: bool, workdir: Path) -> Result:
    reps = 1 if quick else 3
    train_limit = 256 if quick else 1200
    batch = 64
    data = demo_data(workdir)
    trial = trial_dict(data, train_limit, 64, epochs=2)
    trial["batch_size"] = batch

    def sweep(workers: int) -> dict:
        return {"base": trial, "search": {"algorithm": "random", "num_samples": 1,
                                          "max_concurrent": 1},
                "resources": {"workers": workers, "cpus_per_worker": 1}}

    rows = []
    for i in range(reps):
        order = (1, WORKERS) if i % 2 == 0 else (WORKERS, 1)
        row: dict = {"order": order}
        for n in order:
            result = launch(workdir / f"workers-{n}-{i}", f"workers{n}r{i}", sweep(n))
            (only,) = result.trials_by_start()
            m = only["metrics"]
            row[n] = {"rate": m["examples_per_second"], "startup": m.get("startup_seconds"),
                      "wall": result.wall_s, "overall": m.get("overall")}
        rows.append(row)
    ratios = [r[WORKERS]["rate"] / r[1]["rate"] for r in rows]
    ratio = statistics.median(ratios)
    cores = os.cpu_count() or 1

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    table = md_table(
        ["rep", "order", "1 worker ex/s", f"{WORKERS} workers ex/s", "ratio",
         "start-up s (1 / 2)", "launch wall s (1 / 2)", "overall (1 / 2)"],
        [[i + 1, ", ".join(f"{n} worker{'s' if n > 1 else ''}" for n in r["order"]),
          f"{r[1]['rate']:.0f}", f"{r[WORKERS]['rate']:.0f}", f"{q:.2f}",
          f"{fmt(r[1]['startup'], '.1f')} / {fmt(r[WORKERS]['startup'], '.1f')}",
          f"{r[1]['wall']:.1f} / {r[WORKERS]['wall']:.1f}",
          f"{fmt(r[1]['overall'], '.3f')} / {fmt(r[WORKERS]['overall'], '.3f')}"]
         for i, (r, q) in enumerate(zip(rows, ratios, strict=True))])
    details = "\n".join([
        f"The demo trial (tiny encoder), {train_limit} training rows per task, 2 epochs, batch "
        f"{batch} per worker, as a one-trial sweep under `mtsweep launch` (local Ray, MLflow on "
        f"SQLite) with 1 worker, then {WORKERS} (Ray Train workers, DDP over gloo; 1 CPU and 1 "
        f"thread each; {WORKERS} × {batch} rows per step). {reps} repetition(s), order "
        f"alternating; this machine has {cores} core(s). "
        "Rates: the trial's training examples/s, all workers together. Start-up: trial start → "
        "first step (a one-worker trial runs in its Ray Tune trial process; a multi-worker one "
        "starts its worker processes).",
        "",
        table,
        "",
        f"**{WORKERS} workers ÷ 1 worker (median): {ratio:.2f}×** (ideal {WORKERS}× with a core "
        f"per worker; scaling efficiency {ratio / WORKERS:.0%}). On a GPU machine with several "
        "GPUs the same comparison is `resources.workers` 1 vs 2+ with `gpus_per_worker: 1`; "
        "not measured (the lent machines have one GPU).",
    ])
    return Result(
        key="workers", title=f"Multi-worker trials: {WORKERS} DDP workers ÷ 1 (CPU)",
        ratio=ratio, target=f"none (ideal {WORKERS}×)", met=None,
        summary=(f"{WORKERS} workers ÷ 1, training examples/s: {ratio:.2f}× "
                 f"(efficiency {ratio / WORKERS:.0%}; CPU, gloo)"),
        details_md=details, files=[],
    )
