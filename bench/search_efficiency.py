"""Benchmark "search": how much training TPE + ASHA spends to find a near-best configuration.

A small space whose every point has been trained for real: 3 learning rates × 2 update
schedules × 2 paraphrase heads × 2 dropouts = 24 configurations of the demo trial (tiny
encoder, demo data), 4 epochs each, trained once with `trainables.training.train` (no Ray). Their
per-epoch `overall` curves are kept in `bench/cache/search_grid.json` (committed; rebuilt with
`--refresh` or when missing, a few minutes).

The searches then run for real through Ray Tune — `OptunaSearch` (TPE or random) over the
same four categorical parameters, `ASHAScheduler` or none, one trial at a time — but a trial
"trains" by reporting its cached curve epoch by epoch. Compute = trial-epochs reported until
the best value seen reaches within 1 % of the best final value of the grid; the benchmark
reports compute ÷ the grid's total (24 points × 4 epochs), median over 5 seeds, per strategy.
Target ≤ 0.25 for TPE + ASHA.

    .venv/bin/python -m bench.search_efficiency [--refresh] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.common import REPO, Result, cpu_model, md_table, plot_setup, save_figure, verdict

DEMO_YAML = REPO / "search_spaces" / "trials" / "tiny_demo.yaml"
QUICKSTART_YAML = REPO / "search_spaces" / "quickstart.yaml"
GRID_FILE = REPO / "bench" / "cache" / "search_grid.json"
METRIC = "overall"
EPOCHS = 4
# The space: every combination is one grid point (sorted keys fix the point order).
SPACE: dict[str, list[Any]] = {
    "optim.lr": [3.0e-4, 1.0e-3, 3.0e-3],
    "schedule.name": ["round_robin", "round_robin_sum"],
    "tasks.para.head": ["cosine", "sbert"],
    "encoder.hidden_dropout": [0.0, 0.1],
}
TOLERANCE = 0.01  # "near-best": within 1 % of the grid's best final value
TARGET = 0.25
SEEDS = (0, 1, 2, 3, 4)
MAX_TRIALS_FACTOR = 3  # a search stops after 3 × the grid's points if it never gets there


# ---- the grid: every point trained once ---------------------------------------------------------


def grid_points() -> list[dict[str, Any]]:
    names = list(SPACE)
    return [dict(zip(names, values)) for values in itertools.product(*SPACE.values())]


def point_key(params: dict[str, Any]) -> str:
    return json.dumps({k: params[k] for k in sorted(SPACE)}, sort_keys=True)


def point_config(params: dict[str, Any], data_dir: Path):
    """The demo trial at one grid point, EPOCHS epochs, on `data_dir`."""
    from trainables.config import TrialConfig

    over: dict[str, Any] = {"epochs": EPOCHS, "data.dir": str(data_dir), **params}
    if params["tasks.para.head"] != "cosine":
        over["tasks.para.head_args"] = {}  # the demo's `scale` belongs to the cosine head
    return TrialConfig.load(DEMO_YAML).replace(over)


def compute_grid(workdir: Path, path: Path = GRID_FILE) -> dict[str, Any]:
    """Train every grid point (1 thread, CPU) and write the curves to `path`."""
    from trainables.data.demo import write_demo_data
    from trainables.runtime import Runtime
    from trainables.training import train

    data_dir = workdir / "demo"
    write_demo_data(data_dir)
    rt = Runtime(cpu=True, num_threads=1, progress_lines=0, cache_dir=str(workdir / "cache"))
    points = []
    t_all = time.perf_counter()
    for i, params in enumerate(grid_points(), 1):
        history: list[dict[str, float]] = []
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            train(point_config(params, data_dir), rt,
                  callbacks=[lambda r, h=history: h.append(dict(r.metrics))])
        keep = ("sst_acc", "para_acc", "sts_corr", "overall", "overall_mean")
        points.append({
            "params": params,
            "curve": [round(m[METRIC], 6) for m in history],
            "epochs": [{k: round(float(m[k]), 6) for k in keep if k in m} for m in history],
            "seconds": round(time.perf_counter() - t0, 1),
        })
        print(f"  grid {i}/{len(SPACE_POINTS)}: {point_key(params)} → "
              f"{points[-1]['curve']} ({points[-1]['seconds']} s)", file=sys.stderr)
    grid = {
        "what": "per-epoch dev metrics of every point of bench/search_efficiency.py's space: "
                f"{DEMO_YAML.relative_to(REPO)} on the demo data (write_demo_data, seed 0), "
                f"{EPOCHS} epochs, trainables.training.train on CPU, 1 thread",
        "space": SPACE,
        "epochs": EPOCHS,
        "metric": METRIC,
        "created": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "machine": cpu_model(),
        "train_seconds_total": round(time.perf_counter() - t_all, 1),
        "points": points,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(grid, indent=1) + "\n")
    return grid


SPACE_POINTS = grid_points()


def load_grid(workdir: Path, refresh: bool = False) -> tuple[dict[str, Any], bool]:
    """(grid, whether it was computed now)."""
    if not refresh and GRID_FILE.is_file():
        grid = json.loads(GRID_FILE.read_text())
        if grid.get("space") == json.loads(json.dumps(SPACE)) and grid.get("epochs") == EPOCHS:
            return grid, False
        print("  the cached grid is for another space; recomputing", file=sys.stderr)
    return compute_grid(workdir), True


# ---- the searches, replayed through Ray Tune -----------------------------------------------------


def _space(trial) -> None:
    """The define-by-run space of the searches: the grid's four parameters as categoricals."""
    for name, values in SPACE.items():
        trial.suggest_categorical(name, values)


def _replay(config: dict[str, Any], curves: dict[str, list[float]]) -> None:
    """The trial: report the cached curve of its point, one epoch at a time."""
    from ray import tune

    for epoch, value in enumerate(curves[point_key(config)], 1):
        tune.report({METRIC: value, "epoch": epoch})


def shipped_asha() -> dict[str, Any]:
    """The ASHA arguments of the shipped sweeps (`search_spaces/quickstart.yaml`; a copy)."""
    return dict(_shipped_asha())


@functools.cache
def _shipped_asha() -> dict[str, Any]:
    """Read once: every search of a run uses them."""
    from orchestrator.space import load_sweep

    return dict(load_sweep(QUICKSTART_YAML).scheduler.args)


# name -> (sampler, ASHA reduction factor (0: the shipped sweeps', None: no ASHA),
#          repeats answered from the study?). "tpe" is TPE as a sweep builds it
# (`orchestrator.space.make_sampler`'s start-up rule); "tpe10" keeps Optuna's 10 start-up trials.
STRATEGIES: dict[str, tuple[str, int | None, bool]] = {
    "TPE + ASHA": ("tpe", 0, True),
    "TPE (Optuna's 10 start-up trials) + ASHA": ("tpe10", 0, True),
    "TPE + ASHA halving (reduction factor 2)": ("tpe", 2, True),
    "random + ASHA": ("random", 0, True),
    "random": ("random", None, True),
}
# Not in the suite's run (which has to stay under 10 minutes); `--all` adds it: what answering
# repeated proposals from the study saves (0.46 → 0.30 when it was introduced).
PLAIN = "TPE + ASHA, repeats trained (Ray's OptunaSearch)"
EXTRA = {PLAIN: ("tpe", 0, False)}
TPE10 = "TPE (Optuna's 10 start-up trials) + ASHA"
HALVING = "TPE + ASHA halving (reduction factor 2)"


def startup_trials() -> int:
    """TPE's random start-up trials on this space, as a sweep of MAX_TRIALS_FACTOR × its points
    would get them."""
    from orchestrator.space import tpe_startup_trials

    return tpe_startup_trials(len(SPACE), MAX_TRIALS_FACTOR * len(SPACE_POINTS))


def _counter(threshold: float, budget: int):
    """A Tune callback counting reported trial-epochs until the best value seen reaches
    `threshold`, and a stopper that ends the search then (or after `budget` trial-epochs)."""
    from ray import tune

    class Count(tune.Callback):
        def __init__(self) -> None:
            self.epochs = 0
            self.best = float("-inf")
            self.reached: int | None = None
            self.trials: set[str] = set()
            self.points: set[str] = set()  # distinct configurations tried
            self.trace: list[float] = []  # best value seen after each reported trial-epoch

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self.epochs += 1
            self.trials.add(trial.trial_id)
            self.points.add(point_key(trial.config))
            self.best = max(self.best, result[METRIC])
            self.trace.append(self.best)
            if self.reached is None and self.best >= threshold:
                self.reached = self.epochs

    class Stop(tune.Stopper):
        def __init__(self, count: Count) -> None:
            self.count = count

        def __call__(self, trial_id, result) -> bool:
            return False

        def stop_all(self) -> bool:
            return self.count.reached is not None or self.count.epochs >= budget

    count = Count()
    return count, Stop(count)


def run_search(strategy: str, seed: int, curves: dict[str, list[float]], threshold: float,
               storage: Path) -> dict[str, Any]:
    """One search; {"epochs": trial-epochs until near-best (None: not within the budget),
    "trials": trials started, "spent": trial-epochs run in all}."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch as RayOptunaSearch

    from orchestrator.searcher import OptunaSearch

    sampler_name, factor, skip_repeats = {**STRATEGIES, **EXTRA}[strategy]
    if sampler_name.startswith("tpe"):
        startup = 10 if sampler_name == "tpe10" else startup_trials()
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                             n_startup_trials=startup)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    cls = OptunaSearch if skip_repeats else RayOptunaSearch
    searcher = cls(space=_space, metric=METRIC, mode="max", sampler=sampler)
    if factor is None:
        scheduler = FIFOScheduler()
    else:
        asha = shipped_asha()
        if factor:
            asha["reduction_factor"] = factor
        scheduler = ASHAScheduler(time_attr="epoch", max_t=EPOCHS, **asha)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    points = len(curves)
    count, stop = _counter(threshold, MAX_TRIALS_FACTOR * points * EPOCHS)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_replay, curves=curves), {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=1),
            scheduler=scheduler, metric=METRIC, mode="max",
            num_samples=MAX_TRIALS_FACTOR * points, reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"search-{sampler_name}-{factor}-{int(skip_repeats)}-{seed}",
            storage_path=str(storage),
            verbose=0, callbacks=[count], stop=stop,
        ),
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tuner.fit()
    return {"epochs": count.reached, "trials": len(count.trials), "spent": count.epochs,
            "distinct": len(count.points), "skipped": getattr(searcher, "repeats_skipped", 0),
            "trace": count.trace}


@contextlib.contextmanager
def local_ray(num_cpus: int = 2):
    """A local Ray for the searches (no dashboard: function trainables need none)."""
    import ray

    temp = tempfile.mkdtemp(prefix="mtsw-bench-", dir="/tmp")
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp,
                 _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=True,
                 logging_level="ERROR")
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _plot(runs: dict[str, list[dict[str, Any]]], best: float, total: int, path: Path) -> None:
    plt = plot_setup()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colors = {"TPE + ASHA": "#4c72b0", TPE10: "#8172b3", HALVING: "#64b5cd",
              "random + ASHA": "#dd8452", "random": "#55a868",
              PLAIN: "#937860"}
    for name, seeds in runs.items():
        for i, r in enumerate(seeds):
            ax.step([x / total for x in range(1, len(r["trace"]) + 1)],
                    [v / best for v in r["trace"]], where="post", color=colors.get(name),
                    alpha=0.7, lw=1.2, label=name if i == 0 else None)
    ax.axhline(1 - TOLERANCE, color="gray", ls="--", lw=1, label="within 1 % of the best")
    ax.axvline(TARGET, color="#c44e52", ls=":", lw=1, label=f"target {TARGET}")
    ax.set_xlabel("trial-epochs ÷ the whole grid's")
    ax.set_ylabel("best overall so far ÷ grid's best")
    ax.set_ylim(0.6, 1.01)
    ax.set_title(f"Search on a fully evaluated {len(SPACE_POINTS)}-point space "
                 f"({len(next(iter(runs.values())))} seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def _rank_first_epoch(curves: dict[str, list[float]], key: str) -> int:
    """Rank (1 = best) of a point's first-epoch value among all points'."""
    return 1 + sum(c[0] > curves[key][0] for c in curves.values())


def _repeats(runs: list[dict[str, Any]]) -> float:
    """Share of trials that re-ran a configuration already tried in the same search."""
    trials = sum(r["trials"] for r in runs)
    return sum(r["trials"] - r["distinct"] for r in runs) / trials if trials else 0.0


def _cell(r: dict[str, Any], total: int) -> str:
    if r["epochs"] is None:
        return f"not reached (> {r['spent'] / total:.2f}, {r['trials']} trials)"
    skipped = f", {r['skipped']} repeats skipped" if r.get("skipped") else ""
    return (f"{r['epochs'] / total:.3f} ({r['trials']} trials, {r['distinct']} distinct"
            f"{skipped})")


def run(quick: bool, workdir: Path, refresh: bool = False, n_seeds: int | None = None,
        extra: bool = False, objective: str = METRIC) -> Result:
    grid, computed = load_grid(workdir, refresh)
    # Another dev metric of the same grid as the objective (`--objective`): a check that a
    # default is not tuned to one objective's curves. Reported under METRIC's name all the same.
    curves = {point_key(p["params"]): p["curve"] if objective == METRIC
              else [e[objective] for e in p["epochs"]] for p in grid["points"]}
    finals = sorted(((c[-1], k) for k, c in curves.items()), reverse=True)
    best = finals[0][0]
    threshold = (1 - TOLERANCE) * best
    near = [k for v, k in finals if v >= threshold]
    total = len(curves) * grid["epochs"]
    seeds = SEEDS[:1] if quick else SEEDS if n_seeds is None else tuple(range(n_seeds))
    strategies = [*STRATEGIES, *(EXTRA if extra else ())]

    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in strategies}
    t0 = time.perf_counter()
    with local_ray():
        for seed in seeds:
            for s in strategies:
                runs[s].append(run_search(s, seed, curves, threshold, workdir / "tune"))
            print(f"  search seed {seed}: " + ", ".join(
                f"{s} {_cell(runs[s][-1], total)}" for s in strategies), file=sys.stderr)
    secs = time.perf_counter() - t0

    def median_ratio(name: str) -> float:
        # A search that never got there counts as the trial-epochs it spent (a lower bound).
        return statistics.median((r["epochs"] or r["spent"]) / total for r in runs[name])

    med = {s: median_ratio(s) for s in strategies}

    def median_within(name: str, tol: float) -> float:
        """Median compute ÷ grid until the best seen is within `tol` of the grid's best."""
        def first(r: dict[str, Any]) -> int:
            return next((i + 1 for i, v in enumerate(r["trace"]) if v >= (1 - tol) * best),
                        r["spent"])
        return statistics.median(first(r) / total for r in runs[name])

    within3 = {s: median_within(s, 0.03) for s in strategies}
    ratio = med["TPE + ASHA"]
    reached_all = all(r["epochs"] is not None for r in runs["TPE + ASHA"])
    met = ratio <= TARGET and reached_all
    plot_path = workdir / "search_efficiency.png"
    _plot(runs, best, total, plot_path)

    best_params = json.loads(finals[0][1])
    table = md_table(
        ["strategy", *(f"seed {s}" for s in seeds), "median compute ÷ grid",
         "median, within 3 %"],
        [[s, *(_cell(r, total) for r in runs[s]), f"**{med[s]:.3f}**", f"{within3[s]:.3f}"]
         for s in strategies],
        "l" + "r" * (len(seeds) + 2),
    )
    spread = ", ".join(f"{v:.3f}" for v, _ in finals[:4])
    startup, asha = startup_trials(), shipped_asha()
    details = "\n".join([
        f"The space: {' × '.join(f'{len(v)} `{k}`' for k, v in SPACE.items())} = "
        f"{len(curves)} configurations of the demo trial (`{DEMO_YAML.relative_to(REPO)}`, "
        f"tiny encoder, demo data), each trained for real for {grid['epochs']} epochs with "
        f"`trainables.training.train` ({grid['train_seconds_total'] / 60:.0f} min in all, "
        f"{grid['created']}; the curves are in `{GRID_FILE.relative_to(REPO)}`"
        f"{', computed in this run' if computed else ''}). Best final `{objective}` "
        f"{best:.4f} ({', '.join(f'{k}={v}' for k, v in best_params.items())}); the top four: "
        f"{spread}. Near-best = within {TOLERANCE:.0%} of the best, ≥ {threshold:.4f}: "
        f"{len(near)} point(s) — a search has to find the best configuration *and* train it "
        "to its last epoch.",
        "",
        "Each search runs through Ray Tune for real (local Ray, one trial at a time so that "
        "the count does not depend on timing): mtsweep's searcher (`orchestrator.searcher."
        "OptunaSearch`, which a sweep uses: a proposal that repeats a completed configuration "
        "gets its known result and no trial) with the four parameters as categoricals and "
        f"Optuna's `TPESampler(multivariate=True, seed, n_startup_trials={startup})` — "
        f"{startup} random start-up trials, as `make_sampler` gives a sweep of this space "
        f"(one more than its {len(SPACE)} parameters; Optuna's default is 10) — or "
        "`RandomSampler(seed)`, with the shipped sweeps' ASHA, `ASHAScheduler(time_attr="
        f"epoch, {', '.join(f'{k}={v}' for k, v in asha.items())}, max_t={grid['epochs']})`, "
        "or no early stopping"
        + ("; the last row is Ray's plain `OptunaSearch`, which trains every repeat" if extra
           else "") + ". A "
        "trial reports its cached curve epoch by epoch; a stopper ends the search "
        "when the best value seen reaches near-best. Compute = trial-epochs reported until "
        f"then ÷ {total} (the whole grid); a configuration trained twice is paid twice. A "
        f"search stops unfinished after {MAX_TRIALS_FACTOR * len(curves)} trials "
        f"({secs:.0f} s for all searches). In the cells: trials run, distinct configurations "
        "among them, and repeated proposals answered without a trial.",
        "",
        table,
        "",
        f"**TPE + ASHA: compute to near-best ÷ grid = {ratio:.3f}** (median of "
        f"{len(seeds)} seeds; target ≤ {TARGET}: {verdict(met)}). Random search without "
        f"early stopping: {med['random']:.3f}; random + ASHA: {med['random + ASHA']:.3f}.",
        "",
        f"Reading it: {len(near)} configuration(s) count as near-best; the best one's "
        f"epoch-{grid['epochs'] - 1} value is {curves[finals[0][1]][-2] / best:.1%} of its "
        "final one, so a search must find it *and* ASHA must promote it through every rung; "
        f"its first-epoch value ranks {_rank_first_epoch(curves, finals[0][1])} of "
        f"{len(curves)}. "
        f"Within 3 % instead of 1 %: TPE + ASHA {within3['TPE + ASHA']:.3f}, random + ASHA "
        f"{within3['random + ASHA']:.3f}. With Optuna's 10 random start-up trials (10 of "
        f"{len(curves)} points) TPE + ASHA needs {med[TPE10]:.3f}; with ASHA halving "
        f"(reduction factor 2: half the trials go on at each rung instead of a third) "
        f"{med[HALVING]:.3f}; the two together were the defaults before (the overview's "
        "*before*)."
        + (f" Without skipping repeats (Ray's `OptunaSearch`) TPE + ASHA needs "
           f"{med[PLAIN]:.3f}: {_repeats(runs[PLAIN]):.0%} of its trials re-train a "
           "configuration it already tried." if PLAIN in med else ""),
    ])
    summary = (f"TPE + ASHA reaches within 1 % of the grid's best with {ratio:.2f} of the grid's "
               f"compute (random {med['random']:.2f}, random + ASHA {med['random + ASHA']:.2f}; "
               f"median of {len(seeds)} seeds)")
    return Result(
        key="search", title="5. Search efficiency on a fully evaluated space", ratio=ratio,
        target=f"≤ {TARGET}", met=met, summary=summary, details_md=details,
        files=[plot_path],
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Search efficiency on a fully evaluated space.")
    p.add_argument("--refresh", action="store_true",
                   help=f"train every grid point again and rewrite {GRID_FILE.relative_to(REPO)}")
    p.add_argument("--quick", action="store_true", help="1 seed instead of 5 (a smoke test)")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="seeds 0..N-1 instead of the 5 the target is defined on (robustness)")
    p.add_argument("--objective", default=METRIC,
                   choices=["overall", "overall_mean", "sst_acc", "para_acc", "sts_corr"],
                   help="the dev metric the searches maximise (the target is defined on overall)")
    p.add_argument("--all", action="store_true",
                   help="also run TPE + ASHA with Ray's plain OptunaSearch (trains repeats)")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="mtsweep-search-") as tmp:
        res = run(a.quick, Path(tmp), refresh=a.refresh, n_seeds=a.seeds, extra=a.all,
                  objective=a.objective)
        print(res.details_md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
