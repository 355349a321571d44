"""Wrapper tax: examples/s of a trial under `mtsweep launch` (Ray Tune + Ray Train +
Accelerate + MLflow) ÷ examples/s of a bare PyTorch loop over the same model, batches and
threads.

Each repetition runs, in alternating order, a two-trial sweep (`mtsweep launch`, local Ray, one
1-CPU worker, MLflow on SQLite) and the bare loop of `bench_trainable.run_bare` in this process
with one thread, on the same demo data and config. Both rates count training steps only (the
trial's own `examples_per_second`, as reported to MLflow). Median of the per-repetition ratios.

Both sides are measured warm, as in a sweep's steady state: the bare loop after a warm-up run in
this process, the sweep's second trial in the trial process the first one warmed (Ray Tune
reuses it). The first trial's rate (a cold process: first-call kernel set-up for each new
batch shape) is reported beside it.
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
    sweep = {"base": trial, "search": {"algorithm": "random", "num_samples": 2,
                                       "max_concurrent": 1},
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
                cold, warm = result.trials_by_start()
                rate["sweep"] = warm["metrics"]["examples_per_second"]
                rate["cold"] = cold["metrics"]["examples_per_second"]
                rate["startup"] = warm["metrics"].get("startup_seconds")
                rate["wall"] = result.wall_s
        rows.append(rate)
    ratios = [r["sweep"] / r["bare"] for r in rows]
    ratio = statistics.median(ratios)
    table = ["| rep | order | bare ex/s | trial under `mtsweep launch` ex/s (2nd trial) | ratio "
             "| 1st trial ex/s (cold process) | 2nd trial start-up (s) | launch wall (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for i, (r, q) in enumerate(zip(rows, ratios)):
        order = "sweep, bare" if i % 2 == 0 else "bare, sweep"
        table.append(f"| {i + 1} | {order} | {r['bare']:.0f} | {r['sweep']:.0f} | {q:.3f} | "
                     f"{r['cold']:.0f} | {r['startup']:.2f} | {r['wall']:.1f} |")
    cold_ratio = statistics.median(r["cold"] / r["bare"] for r in rows)
    details = "\n".join([
        f"Demo trial (tiny encoder), {train_limit} training rows per task, 1 epoch, batch 16, "
        f"1 thread; the sweep runs two such trials one after the other, each on one CPU in its "
        f"Ray Tune trial process (one worker: `resources.ray_train: auto`), with MLflow on "
        f"SQLite; the second trial is measured. {reps} repetitions, order alternating.",
        "",
        *table,
        "",
        f"**Median ratio {ratio:.3f}** (target ≥ {TARGET}); the first, cold trial: "
        f"{cold_ratio:.3f}.",
    ])
    return Result(
        key="tax", title="1. Wrapper tax", ratio=ratio, target=f"≥ {TARGET}",
        met=ratio >= TARGET,
        summary=f"trial under mtsweep launch ÷ bare loop, examples/s: {ratio:.3f}",
        details_md=details, files=[],
    )
