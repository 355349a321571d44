"""Orchestration efficiency: sweep wall time ÷ (sum of the trials' training time ÷ concurrency)
for a sweep of short trials on the local Ray, and the per-trial start-up latency.

The sweep is `mtsweep launch` on the demo trial (tiny encoder), `max_concurrent` trials at a
time, one 1-CPU worker each, FIFO (every trial runs all its epochs). A trial's training time is
what it spends in its epochs (training + evaluation, as it reports them to MLflow); its start-up
latency is the time from the trial function's start to its first training step (Ray Train worker
group or reused trial process, imports, data, model: the `startup_seconds` metric every trial
records). An efficiency of 1.0 means the orchestration costs nothing beyond the trials' own
work. The wall time is split into the fixed cost before the first trial and after the last one
and the span of the trials themselves.
"""

from __future__ import annotations

import contextlib
import io
import statistics
from pathlib import Path

from bench.common import Result
from bench.sweep_runs import demo_data, launch, trial_dict

TARGET = 1.15
TRIAL_SECONDS = 30.0  # the target's trial length


def epochs_for(seconds: float, data: Path, train_limit: int, workdir: Path) -> tuple[int, float]:
    """(epochs, seconds per epoch) of a demo trial that trains for about `seconds` on this
    machine: two epochs of it in this process, on one thread as the sweep's trials run, the
    second (warm) one timed with its evaluation."""
    import torch

    from trainables import Runtime, TrialConfig, train

    config = TrialConfig.from_dict(trial_dict(data, train_limit, 64, epochs=2))
    times: list[float] = []
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the trial's epoch lines
            train(config, Runtime(cpu=True, num_threads=1, progress_lines=0,
                                  cache_dir=str(workdir / "calibration-cache")),
                  callbacks=[lambda report: times.append(report.metrics["epoch_seconds"]
                                                         + report.metrics["eval_seconds"])])
    finally:
        torch.set_num_threads(threads)
    return max(2, round(seconds / times[-1])), times[-1]


def run(quick: bool, workdir: Path) -> Result:
    trials = 4 if quick else 12
    concurrency = 2
    train_limit = 256 if quick else 1200
    data = demo_data(workdir)
    # Trials of ~30 s in the full run, whatever this machine's speed: the epochs are set from
    # one timed epoch of the same trial.
    epochs, calibrated = (2, float("nan")) if quick else epochs_for(
        TRIAL_SECONDS, data, train_limit, workdir)
    sweep = {
        "base": trial_dict(data, train_limit, 64, epochs=epochs),
        "space": {"optim.lr": {"float": [3e-4, 3e-3], "log": True}},
        "search": {"algorithm": "random", "num_samples": trials,
                   "max_concurrent": concurrency, "seed": 0},
        "resources": {"workers": 1, "cpus_per_worker": 1},
    }
    result = launch(workdir / "orchestration", "orchestration", sweep)
    epoch_s = result.histories("epoch_seconds")
    eval_s = result.histories("eval_seconds")
    startup = result.histories("startup_seconds")
    work = {rid: sum(v for _, v in epoch_s[rid]) + sum(v for _, v in eval_s[rid])
            for rid in epoch_s}
    total_work = sum(work.values())
    ideal = total_work / concurrency
    efficiency = result.wall_s / ideal
    startups = [v for h in startup.values() for _, v in h]
    per_trial = statistics.median(work.values())
    median_startup = statistics.median(startups) if startups else float("nan")
    spans = result.trial_spans()
    head = min(a for a, _ in spans) - result.started
    tail = result.ended - max(b for _, b in spans)
    middle = result.wall_s - head - tail
    details = "\n".join([
        f"{trials} trials of the demo trial ({train_limit} training rows per task, {epochs} "
        f"epochs), {concurrency} at a time, one 1-CPU worker each, FIFO, local Ray, MLflow on "
        "SQLite; the wall time is the whole `mtsweep launch` command (Ray start included)."
        + ("" if quick else f" The epochs make trials of about {TRIAL_SECONDS:.0f} s here: "
           f"one epoch of the same trial, timed on one thread before the sweep, took "
           f"{calibrated:.2f} s with its evaluation."),
        "",
        "| | seconds |",
        "|---|---|",
        f"| sweep wall time | {result.wall_s:.1f} |",
        f"| sum of trial training time (epochs + evaluation) | {total_work:.1f} |",
        f"| ideal wall time = sum ÷ {concurrency} | {ideal:.1f} |",
        f"| median training time per trial | {per_trial:.1f} |",
        f"| median start-up latency per trial (trial start → first step) | "
        f"{median_startup:.1f} |",
        f"| start-up latency, min / max | {min(startups):.1f} / {max(startups):.1f} |",
        f"| before the first trial (Ray start, MLflow sweep run, searcher) | {head:.1f} |",
        f"| from the first trial's start to the last one's end | {middle:.1f} "
        f"(÷ ideal = {middle / ideal:.2f}) |",
        f"| after the last trial (results table, Ray shut down) | {tail:.1f} |",
        "",
        f"**Efficiency {efficiency:.2f}** (target ≤ {TARGET} for trials of ~30 s; these trials "
        f"train for {per_trial:.0f} s each). The first trial pays the trial process's start "
        "(imports, data, model); each later one reuses it (one-worker trials: "
        "`resources.ray_train: auto`), hence the min / max start-up.",
    ])
    return Result(
        key="orchestration", title="2. Orchestration efficiency", ratio=efficiency,
        target=f"≤ {TARGET}", met=efficiency <= TARGET,
        summary=(f"sweep wall ÷ (Σ trial time ÷ {concurrency}): {efficiency:.2f} with "
                 f"{per_trial:.0f}-s trials; start-up {median_startup:.1f} s per trial"),
        details_md=details, files=[],
    )
