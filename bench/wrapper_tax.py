"""Wrapper tax: examples/s of a trial under `mtsweep launch` (Ray Tune + Ray Train +
Accelerate + MLflow) ÷ examples/s of a bare PyTorch loop over the same model, batches and
threads.

Each repetition runs a two-trial sweep (`mtsweep launch`, local Ray, one 1-CPU worker, MLflow
on SQLite) between two runs of the bare loop of `bench_trainable.run_bare` in this process with
one thread, on the same demo data and config: bare, sweep, bare, sweep, …, bare, each bare run
shared by the sweeps on either side of it. A sweep is compared with the mean of the bare runs
just before and after it, which cancels a machine that speeds up or slows down steadily over
the ~25 s between them (on the shared 2-core machine the bare loop's speed drifts by up to
20 % from one minute to the next). Both rates count training steps only (the trial's own
`examples_per_second`, as reported to MLflow). Median of the per-repetition ratios.

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

    bare = [run_bare(config, settings)[0]]
    rows = []
    for i in range(reps):
        result = launch(workdir / f"tax-{i}", f"tax{i}", sweep)
        cold, warm = result.trials_by_start()
        bare.append(run_bare(config, settings)[0])
        rows.append({"before": bare[-2], "after": bare[-1],
                     "bare": (bare[-2] + bare[-1]) / 2,
                     "sweep": warm["metrics"]["examples_per_second"],
                     "cold": cold["metrics"]["examples_per_second"],
                     "startup": warm["metrics"].get("startup_seconds"),
                     "wall": result.wall_s})
    ratios = [r["sweep"] / r["bare"] for r in rows]
    ratio = statistics.median(ratios)
    table = ["| rep | bare ex/s before | trial under `mtsweep launch` ex/s (2nd trial) "
             "| bare ex/s after | ratio to their mean | 1st trial ex/s (cold process) "
             "| 2nd trial start-up (s) | launch wall (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for i, (r, q) in enumerate(zip(rows, ratios)):
        table.append(f"| {i + 1} | {r['before']:.0f} | {r['sweep']:.0f} | {r['after']:.0f} | "
                     f"{q:.3f} | {r['cold']:.0f} | {r['startup']:.2f} | {r['wall']:.1f} |")
    cold_ratio = statistics.median(r["cold"] / r["bare"] for r in rows)
    details = "\n".join([
        f"Demo trial (tiny encoder), {train_limit} training rows per task, 1 epoch, batch 16, "
        f"1 thread; the sweep runs two such trials one after the other, each on one CPU in its "
        f"Ray Tune trial process (one worker: `resources.ray_train: auto`), with MLflow on "
        f"SQLite; the second trial is measured. {reps} repetitions, each sweep between two runs "
        f"of the bare loop ({reps + 1} in all) and compared with their mean.",
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
