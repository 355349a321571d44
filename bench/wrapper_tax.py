"""Wrapper tax: examples/s of a trial under `mtsweep launch` (Ray Tune + Ray Train +
Accelerate + MLflow) ÷ examples/s of a bare PyTorch loop over the same model, batches and
threads.

Each repetition runs, in alternating order, a one-trial sweep (`mtsweep launch`, local Ray, one
1-CPU worker, MLflow on SQLite) and the bare loop of `bench_trainable.run_bare` in this process
with one thread, on the same demo data and config. Both rates count training steps only (the
trial's own `examples_per_second`, as reported to MLflow). Median of the per-repetition ratios.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.common import Result
from bench.sweep_runs import demo_data, launch, trial_dict

TARGET = 0.95


def run(quick: bool, workdir: Path) -> Result:
    from bench.bench_trainable import Settings, run_bare
    from trainables.config import TrialConfig

    reps = 1 if quick else 3
    train_limit = 256 if quick else 1200
    data = demo_data(workdir)
    trial = trial_dict(data, train_limit, 16, epochs=1)
    config = TrialConfig.from_dict(trial)
    settings = Settings(quick=quick, reps=reps, train_limit=train_limit, dev_limit=16,
                        threads=1, max_length=128, speed_batches=None, speed_batch_size=16,
                        work=workdir / "bare")
    sweep = {"base": trial, "search": {"algorithm": "random", "num_samples": 1},
             "resources": {"workers": 1, "cpus_per_worker": 1}}
    run_bare(config, settings)  # warm the token cache and imports for the bare loop

    rows = []
    for i in range(reps):
        order = ("sweep", "bare") if i % 2 == 0 else ("bare", "sweep")
        rate = {}
        for which in order:
            if which == "bare":
                rate["bare"] = run_bare(config, settings)[0]
            else:
                result = launch(workdir / f"tax-{i}", f"tax{i}", sweep)
                rate["sweep"] = result.summary["trials"][0]["metrics"]["examples_per_second"]
                rate["startup"] = result.summary["trials"][0]["metrics"].get("startup_seconds")
                rate["wall"] = result.wall_s
        rows.append(rate)
    ratios = [r["sweep"] / r["bare"] for r in rows]
    ratio = statistics.median(ratios)
    table = ["| rep | order | bare ex/s | trial under `mtsweep launch` ex/s | ratio | "
             "launch wall (s) |", "|---|---|---|---|---|---|"]
    for i, (r, q) in enumerate(zip(rows, ratios)):
        order = "sweep, bare" if i % 2 == 0 else "bare, sweep"
        table.append(f"| {i + 1} | {order} | {r['bare']:.0f} | {r['sweep']:.0f} | {q:.3f} | "
                     f"{r['wall']:.1f} |")
    details = "\n".join([
        f"Demo trial (tiny encoder), {train_limit} training rows per task, 1 epoch, batch 16, "
        f"1 thread; the sweep runs one trial on one 1-CPU Ray Train worker with MLflow on "
        f"SQLite. {reps} repetitions, order alternating.",
        "",
        *table,
        "",
        f"**Median ratio {ratio:.3f}** (target ≥ {TARGET}).",
    ])
    return Result(
        key="tax", title="1. Wrapper tax", ratio=ratio, target=f"≥ {TARGET}",
        met=ratio >= TARGET,
        summary=f"trial under mtsweep launch ÷ bare loop, examples/s: {ratio:.3f}",
        details_md=details, files=[],
    )
