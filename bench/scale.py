"""Benchmark "scale": what grows with the size of a sweep, measured on this machine.

(a) Driver overhead: Ray Tune with mtsweep's OptunaSearch (TPE over the space of
    `search_spaces/full.yaml`) and ASHA, on a local multi-node Ray (`ray.cluster_utils.Cluster`:
    a head with no CPUs for trials + 3 nodes of 2 logical CPUs), running trials that only sleep
    and report (3 reports, 0.05 s apart) for 10 → 100 → 1,000 trials (--quick: 10 → 30;
    MTSWEEP_BENCH_SCALE_TRIALS sets the sizes; MTSWEEP_BENCH_SCALE_BASELINE=1 runs the largest
    size once more, first, with Optuna's own TPE sampler instead of the sweep's).
    Overhead per trial = (wall − ideal) ÷ trials, per result = (wall − ideal) ÷ results, where
    ideal = results × 0.05 s ÷ concurrency (what perfect packing of the sleeps would take).
(b) Optuna suggestion time: the sweep's TPE sampler (`orchestrator.space.make_sampler`) and
    Optuna's own `TPESampler` with the same arguments, ask/tell in-process (no Ray), asked in
    turn, while the number of finished trials grows 0 → 400 (--quick: 0 → 100).
(c) MLflow write rate: `log_batch` of one epoch's metrics (15 values) per call, calls/s
    sustained by a SQLite store and by a PostgreSQL store (a throw-away local server), against
    what a sweep needs (1,000 trials reporting an epoch every 30 s = 33 calls/s).

The headline is the headroom of the slowest of the driver and the best tracking store at that
load: measured capacity ÷ needed rate, target ≥ 1. `bench/SCALE.md` discusses the numbers.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, Result, md_table, plot_setup, save_figure, verdict

FULL_YAML = REPO / "search_spaces" / "full.yaml"
SLEEP_S = 0.05
REPORTS = 3
NODES, CPUS_PER_NODE = 3, 2
# What a large sweep asks of the driver and the tracking store: 1,000 trials at a time, each
# finishing an epoch (one Tune result, one MLflow log_batch) every 30 s.
SWEEP_TRIALS, EPOCH_S = 1000, 30.0
NEEDED_RATE = SWEEP_TRIALS / EPOCH_S
METRICS_PER_EPOCH = 15
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Trials per driver-overhead run, comma-separated (default 10,100,1000; --quick 10,30).
SIZES_ENV = "MTSWEEP_BENCH_SCALE_TRIALS"
# Set to 1: run the largest size a second time, first, with Optuna's own TPE sampler.
BASELINE_ENV = "MTSWEEP_BENCH_SCALE_BASELINE"


_STARTED = [time.perf_counter()]


def _say(msg: str) -> None:
    print(f"  scale [{time.perf_counter() - _STARTED[0]:.0f} s]: {msg}", file=sys.stderr,
          flush=True)


# ---- (a) driver overhead -------------------------------------------------------------------------


def _sleeper(config: dict[str, Any]) -> None:
    """A trial that only sleeps and reports: what is left is the driver's own cost."""
    from ray import tune

    # A deterministic "quality" per sampled point, improving with the epoch, so ASHA stops some.
    base = random.Random(repr(sorted(config.items()))).random()
    for epoch in range(1, REPORTS + 1):
        time.sleep(SLEEP_S)
        tune.report({"overall": base * (1 - 0.5**epoch), "epoch": epoch, "pid": os.getpid()})


def _result_counter(limiter):
    from ray import tune

    class Count(tune.Callback):
        def __init__(self) -> None:
            self.results = 0
            self.pids: set[int] = set()  # trial processes: a reused one keeps its pid
            self.most_live = 0  # the most trials queued or running at once

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self.results += 1
            self.pids.add(result["pid"])
            self.most_live = max(self.most_live, len(limiter.live_trials))

    return Count()


SAMPLERS = ("Optuna", "mtsweep")


def _sampler(spec, which: str):
    """One of the two TPE samplers compared, as `make_sampler` builds it for the sweep (same
    arguments, seed 0): mtsweep's, or Optuna's own class (as with an Optuna it does not
    support)."""
    from unittest import mock

    from orchestrator import tpe
    from orchestrator.space import make_sampler

    if which == "mtsweep":
        return make_sampler(spec, seed=0)
    with mock.patch.object(tpe, "supported", lambda *a: False):
        return make_sampler(spec, seed=0)


def driver_overhead(runs: list[tuple[int, str]], storage: Path) -> list[dict[str, float]]:
    """One Tuner.fit per (trials, sampler) on the multi-node local cluster; a row per run."""
    import ray
    from ray import tune
    from ray.cluster_utils import Cluster
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from orchestrator.searcher import OptunaSearch
    from orchestrator.space import load_sweep

    spec = load_sweep(FULL_YAML)
    # The driver as `mtsweep launch` configures it: mtsweep's searcher, and of Tune's own
    # per-result files only result.json.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    t0 = time.perf_counter()
    temp = tempfile.mkdtemp(prefix="mtsw-bench-", dir="/tmp")
    # Ray's test cluster writes its address into Ray's default temp folder (/tmp/ray) whatever
    # temp_dir it is given, and fails on a machine where no Ray has created that folder yet.
    from ray._common.utils import get_default_ray_temp_dir

    os.makedirs(get_default_ray_temp_dir(), exist_ok=True)
    cluster = None
    rows = []
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "include_dashboard": False, "temp_dir": temp,
        })
        for _ in range(NODES):
            cluster.add_node(num_cpus=CPUS_PER_NODE)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        _say(f"cluster up in {time.perf_counter() - t0:.1f} s "
             f"({NODES} nodes × {CPUS_PER_NODE} CPUs)")
        concurrency = NODES * CPUS_PER_NODE
        for n, sampler in runs:
            searcher = OptunaSearch(space=spec.define_by_run, metric="overall", mode="max",
                                    sampler=_sampler(spec, sampler))
            # As `mtsweep launch` wraps it. The limiter also tells Tune how many trials to
            # queue: without it Tune queues one for a searcher of its own, hands each
            # finished trial's process to that one, and the trials run one at a time.
            searcher = ConcurrencyLimiter(searcher, max_concurrent=concurrency)
            count = _result_counter(searcher)
            tuner = tune.Tuner(
                tune.with_resources(_sleeper, {"cpu": 1}),
                tune_config=tune.TuneConfig(
                    search_alg=searcher, num_samples=n, metric="overall", mode="max",
                    scheduler=ASHAScheduler(time_attr="epoch", max_t=REPORTS,
                                            **spec.scheduler.args),
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(name=f"driver-{n}-{sampler}", storage_path=str(storage),
                                          verbose=0, callbacks=[count, JsonLoggerCallback()]),
            )
            t1, c1 = time.perf_counter(), time.process_time()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
                    io.StringIO()):
                grid = tuner.fit()
            wall, cpu = time.perf_counter() - t1, time.process_time() - c1
            errors = sum(1 for r in grid if r.error)
            ideal = count.results * SLEEP_S / concurrency
            row = {
                "trials": n, "results": count.results, "wall": wall, "ideal": ideal,
                "per_trial": (wall - ideal) / n, "per_result": (wall - ideal) / count.results,
                "cpu": cpu, "cpu_per_result": cpu / count.results, "errors": errors,
                "concurrency": concurrency, "marginal": None, "sampler": sampler,
                "processes": len(count.pids), "most_live": count.most_live,
            }
            prev = next((r for r in reversed(rows) if r["sampler"] == sampler), None)
            if prev is not None:  # the cost of the extra trials over the previous size
                row["marginal"] = ((wall - ideal) - (prev["wall"] - prev["ideal"])) / (
                    n - prev["trials"])
            rows.append(row)
            _say(f"{n} trials ({sampler}'s TPE), {count.results} results: {wall:.1f} s wall, "
                 f"driver CPU {cpu:.1f} s, {1000 * (wall - ideal) / n:.0f} ms overhead per trial")
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    return rows


# ---- (b) Optuna suggestion time ----------------------------------------------------------------


def optuna_suggest(n_max: int) -> dict[str, Any]:
    """Seconds of each ask (sampling every active parameter) with 0 … n_max-1 trials finished,
    for Optuna's TPE sampler and mtsweep's, each with its own study, fed the same values and
    asked in turn (the order flipped at every ask). Also whether their proposals agree."""
    import warnings

    import optuna

    from orchestrator.space import load_sweep

    spec = load_sweep(FULL_YAML)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(0)
    times: dict[str, list[float]] = {}
    studies = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in SAMPLERS:
            studies[name] = optuna.create_study(sampler=_sampler(spec, name), direction="maximize")
            times[name] = []
        dbr = spec.define_by_run
        same = 0
        for i in range(n_max):
            value = rng.random()
            proposals = {}
            for name in (list(studies) if i % 2 == 0 else list(reversed(studies))):
                t0 = time.perf_counter()
                trial = studies[name].ask()
                dbr(trial)
                times[name].append(time.perf_counter() - t0)
                proposals[name] = trial.params
                studies[name].tell(trial, value)
            same += len({repr(sorted(p.items())) for p in proposals.values()}) == 1
    return {"times": times, "same": same}


# ---- (c) MLflow write rate ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_scheme() -> str | None:
    """The SQLAlchemy scheme of the PostgreSQL driver installed (psycopg 3, else psycopg2)."""
    import importlib.util

    if importlib.util.find_spec("psycopg"):
        return "postgresql+psycopg"
    if importlib.util.find_spec("psycopg2"):
        return "postgresql"
    return None


@contextlib.contextmanager
def postgres(workdir: Path):
    """A throw-away PostgreSQL 15 on 127.0.0.1 (run as the `postgres` user: initdb refuses
    root); yields its SQLAlchemy URI with a database `mlflow`, or None with the reason."""
    why = None
    scheme = _pg_scheme()
    if not (PG_BIN / "initdb").is_file():
        why = f"no PostgreSQL binaries at {PG_BIN}"
    elif scheme is None:
        why = "no PostgreSQL driver for Python (pip install 'psycopg[binary]')"
    if why is None and os.geteuid() == 0 and shutil.which("runuser") is None:
        why = "running as root without runuser"
    if why:
        yield None, why
        return
    root = Path(tempfile.mkdtemp(prefix="mtsw-pg-", dir="/tmp"))
    data, port = root / "data", _free_port()
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(root, "postgres")
    started = False
    try:
        def pg(*cmd: str) -> None:
            subprocess.run([*as_pg, *cmd], check=True, capture_output=True, text=True,
                           timeout=120)

        pg(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
           "--no-sync", "-E", "UTF8")
        pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
           f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
        started = True
        pg(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
           "mlflow")
        yield f"{scheme}://postgres@127.0.0.1:{port}/mlflow", None
    except subprocess.CalledProcessError as e:
        yield None, f"could not start PostgreSQL: {(e.stderr or e.stdout or '').strip()[:200]}"
    finally:
        if started:
            with contextlib.suppress(Exception):
                subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast",
                                "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def mlflow_rate(uri: str, seconds: float, artifacts: Path, runs: int = 20) -> dict[str, Any]:
    """Sequential log_batch calls (one epoch's 15 metrics, to `runs` runs in turn) for about
    `seconds`; calls/s over the whole window and per second of it."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("bench-scale", artifact_location=str(artifacts))
    run_ids = [client.create_run(exp).info.run_id for _ in range(runs)]
    names = [f"metric_{i}" for i in range(METRICS_PER_EPOCH)]
    ts = int(time.time() * 1000)
    for rid in run_ids[:2]:  # warm-up (connection pool, first statements)
        client.log_batch(rid, [Metric(n, 0.5, ts, 0) for n in names])
    calls, t0 = 0, time.perf_counter()
    marks: list[float] = []
    while (now := time.perf_counter()) - t0 < seconds:
        step = 1 + calls // runs
        client.log_batch(run_ids[calls % runs],
                         [Metric(n, random.random(), ts, step) for n in names])
        calls += 1
        marks.append(now - t0)
    wall = time.perf_counter() - t0
    per_s = [sum(1 for m in marks if int(m) == s) for s in range(int(seconds))]
    return {"calls": calls, "seconds": wall, "rate": calls / wall,
            "ms_per_call": 1000 * wall / calls, "per_second": per_s}


def _writer(uri: str, run_ids: list[str], seconds: float, ready, start, out) -> None:
    """One writer process of the concurrent measurement: log_batch calls for `seconds` after
    `start` is set; puts (calls, errors, first error) on `out`."""
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    names = [f"metric_{i}" for i in range(METRICS_PER_EPOCH)]
    ts = int(time.time() * 1000)
    client.log_batch(run_ids[0], [Metric(n, 0.5, ts, 0) for n in names])  # connect
    ready.put(1)
    start.wait()
    calls = errors = 0
    first = ""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        try:
            client.log_batch(run_ids[calls % len(run_ids)],
                             [Metric(n, random.random(), ts, 1 + calls) for n in names])
            calls += 1
        except Exception as e:  # noqa: BLE001 - counted: "database is locked" is a finding
            errors += 1
            first = first or f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    out.put((calls, errors, first))


def mlflow_concurrent(uri: str, seconds: float, writers: int, artifacts: Path
                      ) -> dict[str, Any]:
    """`writers` processes (as trials are) writing at once; aggregate calls/s and errors."""
    import multiprocessing as mp

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(f"bench-scale-{writers}w", artifact_location=str(artifacts))
    runs = [[client.create_run(exp).info.run_id for _ in range(5)] for _ in range(writers)]
    ctx = mp.get_context("spawn")  # no fork of a process that may hold torch or Ray threads
    ready, out, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_writer, args=(uri, r, seconds, ready, start, out), daemon=True)
             for r in runs]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=120)
        start.set()
        got = [out.get(timeout=seconds + 120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    calls = sum(c for c, _, _ in got)
    return {"writers": writers, "calls": calls, "rate": calls / seconds,
            "errors": sum(e for _, e, _ in got), "error": next((f for *_, f in got if f), "")}


def mlflow_rates(seconds: float, writers: int, workdir: Path
                 ) -> tuple[dict[str, dict[str, Any]], str | None]:
    out: dict[str, dict[str, Any]] = {}

    def measure(name: str, uri: str) -> None:
        with contextlib.redirect_stderr(io.StringIO()):
            out[name] = mlflow_rate(uri, seconds, workdir / "artifacts")
            out[name]["concurrent"] = (
                mlflow_concurrent(uri, seconds, writers, workdir / "artifacts") if writers
                else {"writers": 0, "calls": 0, "rate": 0.0, "errors": 0, "error": ""})
        c = out[name]["concurrent"]
        _say(f"MLflow {name}: {out[name]['rate']:.0f} calls/s (1 writer)"
             + (f", {c['rate']:.0f} calls/s ({writers} writers, {c['errors']} errors)"
                if writers else ""))

    measure("SQLite", f"sqlite:///{workdir / 'mlflow.db'}")
    with postgres(workdir) as (uri, why):
        if uri:
            measure("PostgreSQL", uri)
        else:
            _say(f"PostgreSQL skipped: {why}")
    return out, why


# ---- plots and the report ---------------------------------------------------------------------


def _plot_driver(rows: list[dict[str, float]], path: Path) -> None:
    plt = plot_setup()
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [r["trials"] for r in rows]
    ax.plot(x, [1000 * r["per_trial"] for r in rows], "o-", label="per trial")
    ax.plot(x, [1000 * r["per_result"] for r in rows], "s-", label="per reported result")
    ax.plot(x, [1000 * r["cpu_per_result"] for r in rows], "^--",
            label="driver CPU per reported result")
    ax.set_xscale("log")
    ax.set_xlabel("trials in the sweep")
    ax.set_ylabel("ms (wall-clock overhead, or driver CPU)")
    ax.set_title("Ray Tune + OptunaSearch (TPE) + ASHA, sleeping trials")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def _window_medians(times: list[float], width: int = 10) -> list[tuple[int, float]]:
    return [(i, statistics.median(times[i:i + width]))
            for i in range(0, len(times) - width + 1, width)]


def _plot_optuna(times: dict[str, list[float]], path: Path) -> None:
    plt = plot_setup()
    fig, ax = plt.subplots(figsize=(6, 4))
    for (name, ts), color in zip(times.items(), ("#c44e52", "#4c72b0")):
        ax.plot(range(len(ts)), [1000 * t for t in ts], ".", alpha=0.25, color=color)
        med = _window_medians(ts)
        ax.plot([i + 5 for i, _ in med], [1000 * m for _, m in med], "-", lw=2, color=color,
                label=f"{name}'s TPESampler (median of 10 asks)")
    ax.set_xlabel("finished trials")
    ax.set_ylabel("suggestion time (ms)")
    ax.set_title("TPE (multivariate, grouped) on the space of full.yaml")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def _plot_mlflow(rates: dict[str, dict[str, Any]], path: Path) -> None:
    plt = plot_setup()
    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(rates)
    xs = range(len(names))
    writers = next(iter(rates.values()))["concurrent"]["writers"]
    ax.bar([x - 0.2 for x in xs], [rates[n]["rate"] for n in names], width=0.4,
           color="#4c72b0", label="1 writer")
    if writers:
        ax.bar([x + 0.2 for x in xs], [rates[n]["concurrent"]["rate"] for n in names],
               width=0.4, color="#55a868", label=f"{writers} writer processes")
    ax.set_xticks(list(xs), names)
    ax.axhline(NEEDED_RATE, color="#c44e52", ls="--",
               label=f"needed: {SWEEP_TRIALS} trials × 1 epoch / {EPOCH_S:g} s")
    ax.set_ylabel("log_batch calls/s (15 metrics each)")
    ax.set_title("MLflow store write rate")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    save_figure(fig, path)


def _rates_text(r: dict[str, Any]) -> str:
    c = r["concurrent"]
    return (f"{r['rate']:.0f}/{c['rate']:.0f} calls/s (1/{c['writers']} writers)" if c["writers"]
            else f"{r['rate']:.0f} calls/s")


def run(quick: bool, workdir: Path) -> Result:
    _STARTED[0] = time.perf_counter()
    sizes = [10, 30] if quick else [10, 100, 1000]
    if os.environ.get(SIZES_ENV):
        sizes = [int(x) for x in os.environ[SIZES_ENV].split(",")]
    baseline = os.environ.get(BASELINE_ENV) == "1"
    n_optuna = 100 if quick else 400
    mlflow_s = 1.0 if quick else 2.0
    writers = 0 if quick else 4  # processes writing at once (the spawns take ~10 s: not quick)
    files = []

    _say(f"Optuna TPE ask/tell, 0 → {n_optuna} finished trials, Optuna's sampler and mtsweep's")
    opt = optuna_suggest(n_optuna)
    times, stock_times = opt["times"]["mtsweep"], opt["times"]["Optuna"]
    _say(f"MLflow log_batch, {mlflow_s:g} s per store and writer count")
    rates, pg_why = mlflow_rates(mlflow_s, writers, workdir)
    # mtsweep's sampler at every size; with the baseline, Optuna's at the largest, just before.
    runs = [(n, "mtsweep") for n in sizes]
    if baseline:
        runs.insert(len(sizes) - 1, (sizes[-1], "Optuna"))
    _say(f"driver overhead, {' → '.join(map(str, sizes))} trials")
    all_drv = driver_overhead(runs, workdir / "ray")
    drv = [r for r in all_drv if r["sampler"] == "mtsweep"]
    drv_stock = next((r for r in all_drv if r["sampler"] == "Optuna"), None)

    for name, plot, arg in (("scale_driver.png", _plot_driver, drv),
                            ("scale_optuna.png", _plot_optuna, opt["times"]),
                            ("scale_mlflow.png", _plot_mlflow, rates)):
        plot(arg, workdir / name)
        files.append(workdir / name)

    # Headroom at a sweep of SWEEP_TRIALS trials reporting an epoch every EPOCH_S seconds.
    big = drv[-1]
    # The driver's own CPU time per result (its trials' share included): what one dedicated
    # core for the driver sustains. Wall-clock overhead here also pays for the simulated nodes
    # and trial processes sharing the same 2 cores, so it is shown but not used.
    driver_capacity = 1 / big["cpu_per_result"] if big["cpu_per_result"] > 0 else float("inf")
    wall_capacity = 1 / big["per_result"] if big["per_result"] > 0 else float("inf")
    def best_rate(k: str) -> float:
        return max(rates[k]["rate"], rates[k]["concurrent"]["rate"])

    store = max(rates, key=best_rate)
    headroom = {"driver": driver_capacity / NEEDED_RATE,
                f"MLflow ({store})": best_rate(store) / NEEDED_RATE}
    bottleneck = min(headroom, key=headroom.get)
    ratio = headroom[bottleneck]
    met = ratio >= 1

    drv_rows = [[r["trials"], r["sampler"], r["results"], f"{r['wall']:.1f}", f"{r['ideal']:.1f}",
                 f"{1000 * r['per_trial']:.0f}",
                 "–" if r["marginal"] is None else f"{1000 * r['marginal']:.0f}",
                 f"{1000 * r['per_result']:.0f}", f"{r['results'] / r['wall']:.1f}",
                 f"{r['cpu']:.1f}", f"{1000 * r['cpu_per_result']:.1f}",
                 r["most_live"], r["processes"], r["errors"]]
                for r in all_drv]
    win = _window_medians(times)
    win_stock = dict(_window_medians(stock_times))
    opt_marks = sorted({0, 10, 50, 100, 200, 300, 400, len(times) - 10} & {i for i, _ in win})
    opt_rows = [[f"{i}–{i + 9}", f"{1000 * win_stock[i]:.1f}", f"{1000 * dict(win)[i]:.1f}",
                 f"{win_stock[i] / dict(win)[i]:.2f}×"] for i in opt_marks]
    last = len(times) - 10
    ask_speedup = win_stock[last] / dict(win)[last]
    ml_rows = [[k, v["calls"], f"{v['rate']:.0f}", f"{v['ms_per_call']:.1f}",
                f"{min(v['per_second'] or [0])}–{max(v['per_second'] or [0])}",
                f"{v['concurrent']['rate']:.0f}" if writers else "–",
                v["concurrent"]["errors"] if writers else "–",
                f"{max(v['rate'], v['concurrent']['rate']) / NEEDED_RATE:.1f}×"]
               for k, v in rates.items()]
    errors = [f"{k}: {v['concurrent']['error']}" for k, v in rates.items()
              if v["concurrent"]["errors"]]
    total_opt = sum(times)
    details = "\n".join([
        f"How the parts of a sweep scale, measured on this machine (everything below shares "
        f"its 2 cores, so these are pessimistic). The load a large sweep puts on them: "
        f"{SWEEP_TRIALS:,} trials at a time, each reporting an epoch every {EPOCH_S:g} s = "
        f"**{NEEDED_RATE:.0f} results/s** to the driver and {NEEDED_RATE:.0f} `log_batch` "
        "calls/s to MLflow. `bench/SCALE.md` says what a 1,000-GPU sweep would need.",
        "",
        "### (a) Driver overhead: Ray Tune + OptunaSearch (TPE) + ASHA",
        "",
        f"A local multi-node Ray (`ray.cluster_utils.Cluster`: head with 0 CPUs + {NODES} "
        f"nodes × {CPUS_PER_NODE} logical CPUs = {NODES * CPUS_PER_NODE} trials at a time); "
        f"each trial sleeps {SLEEP_S} s and reports, {REPORTS} times (ASHA as "
        f"`{FULL_YAML.name}` sets it, grace 1, reduction 3: stops most after 1); the "
        "searcher is `OptunaSearch` over the "
        f"space of `{FULL_YAML.relative_to(REPO)}` with mtsweep's TPE sampler "
        "(`make_sampler`), behind a `ConcurrencyLimiter` of the trials at a time, with "
        "`reuse_actors=True`, as `mtsweep launch` sets up one-worker trials: a finished "
        "trial's process runs the next trial, so process start-up (paid on the worker nodes "
        "in a real cluster) stays out. *Most trials queued or running*: the limiter's count "
        "of live trials, at its highest (the trials at a time when Tune keeps every slot "
        "asked for). *Trial processes*: how many processes the trials ran in; since these "
        "trials end within 0.15 s, about as fast as Ray starts a process, a finished "
        "trial's process often takes the next queued trial before that trial's own process "
        "has started, so fewer processes than slots are used and how many depends on the "
        "machine's load. Ideal = results × sleep ÷ concurrency.",
        "",
        md_table(["trials", "TPE sampler", "results", "wall s", "ideal s",
                  "overhead ms / trial", "marginal ms / trial", "overhead ms / result",
                  "results/s", "driver CPU s", "driver CPU ms / result",
                  "most trials queued or running", "trial processes", "errors"], drv_rows,
                 "rlrrrrrrrrrrrr"),
        "",
        "Overhead = wall − ideal; marginal = the extra overhead of the extra trials over the "
        "previous size (Tune's start-up and the first actors left out). Driver CPU = the "
        "CPU time of the driver process (Tune's event loop, the searcher, the scheduler, "
        "result handling; all its threads) during `Tuner.fit`. *TPE sampler*: mtsweep's "
        "(`orchestrator/tpe.py`, what sweeps use)"
        + (f" or Optuna's own `TPESampler` with the same arguments, run once at "
           f"{big['trials']} trials just before mtsweep's for comparison." if drv_stock else
           f"; `{BASELINE_ENV}=1` adds a run with Optuna's own `TPESampler` at the largest "
           "size (`RESULTS-scale-1000.md`)."),
        "",
        f"At {big['trials']} trials the whole system handled "
        f"{big['results'] / big['wall']:.1f} results/s on these 2 shared cores (wall-clock "
        f"overhead {1000 * big['per_result']:.0f} ms per result → {wall_capacity:.0f} "
        f"results/s). The driver itself spent {1000 * big['cpu_per_result']:.1f} ms of CPU per "
        f"result (its trials' share included): one core of its own sustains "
        f"{driver_capacity:.0f} results/s = **{headroom['driver']:.2f}×** what "
        f"{SWEEP_TRIALS:,} trials need."
        + (f" With Optuna's own TPE sampler: {1000 * drv_stock['cpu_per_result']:.1f} ms per "
           f"result, {1 / drv_stock['cpu_per_result'] / NEEDED_RATE:.2f}×." if drv_stock
           else ""),
        "",
        "### (b) Optuna suggestion time as the study grows",
        "",
        f"`study.ask()` + the sweep's define-by-run function (the space of "
        f"`{FULL_YAML.name}`: conditional branches, ~30 parameters), multivariate grouped TPE "
        f"as `make_sampler` builds it, random objective values told back; no Ray. Two "
        f"studies fed the same values, one with Optuna's `TPESampler`, one with mtsweep's "
        f"(same arguments and seed), asked in turn, the order flipped at every ask. Median of "
        f"each window of 10 asks; {len(times)} asks took {sum(stock_times):.1f} s with "
        f"Optuna's sampler, {total_opt:.1f} s with mtsweep's. The two proposed the same "
        f"parameters at {opt['same']} of {len(times)} asks.",
        "",
        md_table(["finished trials", "Optuna's TPE, ms per suggestion",
                  "mtsweep's TPE, ms", "Optuna ÷ mtsweep"], opt_rows, "rrrr"),
        "",
        "### (c) MLflow write rate",
        "",
        f"One client, sequential `MlflowClient.log_batch` calls, each one epoch's "
        f"{METRICS_PER_EPOCH} metrics, spread over 20 runs, for {mlflow_s:g} s per store; then "
        + (f"{writers} writer processes at once (as trials are), {mlflow_s:g} s. " if writers
           else "concurrent writers are measured in full mode only. ") +
        "SQLite: a file in the temp folder (MLflow's defaults). PostgreSQL 15: a local server "
        "on 127.0.0.1 started for the benchmark (defaults: fsync and synchronous commit "
        "on). No tracking server in between (it would add an HTTP hop per call).",
        "",
        md_table(["store", "calls (1 writer)", "calls/s", "ms per call",
                  "calls in each second", f"calls/s, {writers or 'several'} writers",
                  "failed calls",
                  f"best ÷ needed ({NEEDED_RATE:.0f}/s)"], ml_rows, "lrrrrrrr"),
        "",
        *([f"First error with {writers} writers — " + "; ".join(errors) + ".", ""]
          if errors else []),
        *([f"PostgreSQL not measured: {pg_why}.", ""] if pg_why else []),
        f"**Headroom of the bottleneck ({bottleneck}) at {SWEEP_TRIALS:,} trials × 1 epoch / "
        f"{EPOCH_S:g} s: {ratio:.2f}×** (target ≥ 1: {verdict(met)}).",
    ])
    pg = rates.get("PostgreSQL", {}).get("rate")
    summary = (
        f"driver overhead {1000 * big['per_trial']:.0f} ms/trial (wall), "
        f"{1000 * big['cpu_per_result']:.0f} ms CPU/result at {big['trials']} trials"
        + (f" (Optuna's TPE: {1000 * drv_stock['cpu_per_result']:.0f})" if drv_stock else "")
        + "; TPE ask "
        f"{1000 * win[-1][1]:.0f} ms at {len(times)} trials ({ask_speedup:.1f}× faster than "
        f"Optuna's); MLflow {_rates_text(rates['SQLite'])} SQLite"
        + (f", {_rates_text(rates['PostgreSQL'])} PostgreSQL" if pg else
           " (PostgreSQL skipped)")
        + f"; bottleneck {bottleneck}"
    )
    return Result(
        key="scale", title="6. Scale: driver, Optuna and MLflow as the sweep grows",
        ratio=ratio, target=f"≥ 1 (headroom at {SWEEP_TRIALS:,} trials)", met=met,
        summary=summary, details_md=details, files=files,
    )
