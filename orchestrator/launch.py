"""`mtsweep launch`: a sweep file → Optuna (define-by-run) + Ray Tune + Ray Train + MLflow."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.report import format_param
from orchestrator.schedulers import build_scheduler
from orchestrator.space import SweepSpec, describe, make_sampler, sample_points
from orchestrator.tracking import (
    ABANDONED,
    ERROR,
    OPTUNA_TRIAL,
    RAY_TRIAL_ID,
    REPRODUCE,
    STOPPED_EARLY,
    SweepTracker,
    check_reachable,
    get_or_create_experiment,
    git_commit,
    redact,
    resolve_tracking_uri,
    without_credentials,
)
from orchestrator.trial import TrialContext, join_storage, optuna_trial_number, run_trial
from trainables.cli import _at_least_one, make_folder, remove_empty
from trainables.errors import ConfigError, MtsweepError

TASK_METRICS = ("sst_acc", "para_acc", "sts_corr", "overall", "overall_mean")


@dataclass
class LaunchOptions:
    num_samples: int | None = None
    address: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    num_cpus: int | None = None
    verbose: bool = False
    json: bool = False


def absolute_data_dir(spec: SweepSpec, cwd: str | None = None) -> SweepSpec:
    """Trials run in other folders: a relative `data.dir` is taken relative to where the
    sweep is launched (`cwd`, default the current folder)."""
    import dataclasses

    data = dict(spec.base.get("data", {}))
    d = data.get("dir")
    if d and not d.startswith("hf:") and not Path(d).is_absolute():
        data["dir"] = str((Path(cwd or os.getcwd()) / d).resolve())
        return dataclasses.replace(spec, base={**spec.base, "data": data})
    return spec


def dry_run(spec: SweepSpec, n: int = 3) -> dict[str, Any]:
    """Print the space and a few sampled trial configs; start nothing."""
    from orchestrator.space import grid_size, point_key_paths, point_to_config

    print(describe(spec))
    grid = spec.search.algorithm == "grid"
    points = sample_points(spec, grid_size(spec) if grid else n, spec.search.seed,
                           preview=not grid)
    print(f"\n{'grid points' if grid else 'sampled configs (preview)'}:")
    shown = []
    for i, point in enumerate(points):
        cfg = point_to_config(spec, point)
        flat = point_key_paths(point)
        print(f"  [{i}] " + ", ".join(f"{k}={v}" for k, v in flat.items()))
        shown.append({"params": flat, "config_fingerprint": cfg.fingerprint()})
    return {"dry_run": True, "sweep": spec.name, "num_samples": spec.search.num_samples,
            "points": shown}


@dataclass
class Progress:
    """The live view: trials running / done / stopped early / failed, best so far, ETA."""

    total: int
    metric: str
    mode: str
    started: float = field(default_factory=time.time)
    running: set = field(default_factory=set)
    done: int = 0
    stopped: int = 0
    failed: int = 0
    best: tuple[float, str, dict] | None = None
    last_print: float = 0.0

    latest: dict = field(default_factory=dict)
    tracking_warned: set = field(default_factory=set)

    def record(self, trial_id: str, result: dict) -> None:
        """Keep each trial's latest result; the best is taken over those."""
        value = result.get(self.metric)
        if not isinstance(value, (int, float)) or math.isnan(value):
            return
        self.latest[trial_id] = (value, trial_id, dict(result))
        pick = max if self.mode == "max" else min
        self.best = pick(self.latest.values(), key=lambda entry: entry[0])

    def line(self) -> str:
        elapsed = time.time() - self.started
        finished = self.done + self.stopped + self.failed
        eta = ""
        if finished and finished < self.total:
            eta = f" · ETA ~{_hms(elapsed / finished * (self.total - finished))}"
        best = ""
        if self.best:
            v, tid, m = self.best
            parts = " ".join(f"{k.split('_')[0]} {m[k]:.3f}" for k in TASK_METRICS[:3] if k in m)
            best = f" · best {self.metric} {v:.4f} ({tid}: {parts})"
        return (f"[{_hms(elapsed)}] trials {len(self.running)} running · {self.done} done · "
                f"{self.stopped} stopped early · {self.failed} failed · of {self.total}{best}{eta}")

    def show(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self.last_print > 2.0:
            print(self.line(), file=sys.stderr, flush=True)
            self.last_print = now


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _make_callback(spec: SweepSpec, tracker: SweepTracker, progress: Progress, searcher: Any):
    from ray.tune import Callback

    from orchestrator.space import point_to_config

    class SweepCallback(Callback):
        """Closes trial runs from the driver (a stopped trial's processes are killed, so its own
        code cannot), records the Optuna trial number, and drives the progress view."""

        def on_trial_start(self, iteration, trials, trial, **info):
            progress.running.add(trial.trial_id)
            progress.show()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            progress.record(trial.trial_id, result)
            if tracker.backlog:
                tracker.retry_backlog()
            waiting = result.get("tracking_backlog") or 0
            if waiting and trial.trial_id not in progress.tracking_warned:
                progress.tracking_warned.add(trial.trial_id)
                print(f"WARNING: trial {trial.trial_id} cannot reach MLflow; {waiting} records "
                      f"kept in the trial and sent when the server answers (training goes on)",
                      file=sys.stderr, flush=True)
            progress.show()

        def on_trial_complete(self, iteration, trials, trial, **info):
            progress.running.discard(trial.trial_id)
            epochs = point_to_config(spec, trial.config).epochs
            last = (trial.last_result or {}).get("epoch", 0)
            early = last < epochs
            if early:
                progress.stopped += 1
            else:
                progress.done += 1
            tags = {STOPPED_EARLY: str(early).lower()}
            number = optuna_trial_number(searcher, trial.trial_id)
            if number is not None:
                tags[OPTUNA_TRIAL] = str(number)
            tracker.close_trial(trial.trial_id, "KILLED" if early else "FINISHED", tags)
            progress.show(force=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            progress.running.discard(trial.trial_id)
            progress.failed += 1
            error = _trial_error(trial)
            number = optuna_trial_number(searcher, trial.trial_id)
            tags = {OPTUNA_TRIAL: str(number)} if number is not None else {}
            tracker.close_trial(trial.trial_id, "FAILED", tags, error=error)
            print(f"trial {trial.trial_id} failed: "
                  f"{(error.strip().splitlines() or ['unknown error'])[-1]}",
                  file=sys.stderr)
            progress.show(force=True)

    return SweepCallback()


def _trial_error(trial) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        if path and Path(path).exists():
            return Path(path).read_text()
    except OSError:
        pass
    return str(getattr(trial, "error_msg", "") or "unknown error")


# The local Rays this process started, newest last: each one's temp folder and the environment
# variables to put back when it stops.
_LOCAL_RAYS: list[tuple[str, dict[str, str | None]]] = []

# Where Ray's state API (the dashboard's HTTP server) is; Ray's processes read it from here.
API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"


def local_ray_temp() -> str:
    """A new temp folder for a local Ray (short: Ray's socket paths live in it; its own: other
    Ray instances may run on the machine), removed by `shutdown_ray`."""
    temp = tempfile.mkdtemp(prefix="mtsw-ray-", dir="/tmp")
    _LOCAL_RAYS.append((temp, {}))
    return temp


def _set_local_ray_env(key: str, value: str) -> None:
    """Set an environment variable until the newest local Ray stops (`shutdown_ray`)."""
    saved = _LOCAL_RAYS[-1][1]
    saved.setdefault(key, os.environ.get(key))
    os.environ[key] = value


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_ray(opts: LaunchOptions, spec: SweepSpec) -> str:
    import ray

    # MLflow records every result; of Ray Tune's own per-result files only result.json is
    # kept (its JsonLoggerCallback is in the RunConfig; the CSV and TensorBoard writers cost
    # the driver ~3 ms per result).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    address = opts.address or os.environ.get("RAY_ADDRESS")
    if address:  # checked by the caller (check_ray_address) before anything started
        ray.init(address=address, log_to_driver=opts.verbose)
        TerminationSignal.reinstall()
        return f"Ray cluster at {address}"
    r = spec.resources
    cpus = opts.num_cpus or os.cpu_count() or 1
    # Inherited by every Ray process: on a loaded machine starting N workers can take longer
    # than Ray Train's default minute.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    # Ray Train's clean-up actor asks the state API whether a trial's controller is still
    # alive, and, told nothing else, looks for "the" Ray on this machine. With a second one
    # running (another sweep, a reproduction) it fails, the finished trial's workers keep their
    # CPUs and the next trial waits for them forever. So every process of this Ray is told
    # where its own dashboard is.
    port = _free_port()
    dashboard = f"http://127.0.0.1:{port}"
    temp = local_ray_temp()
    _set_local_ray_env(API_SERVER_ENV, dashboard)  # before ray.init: its processes inherit it
    try:
        ray.init(
            num_cpus=cpus, num_gpus=None, include_dashboard=True, dashboard_host="127.0.0.1",
            dashboard_port=port, _temp_dir=temp, log_to_driver=opts.verbose,
            configure_logging=True, logging_level="ERROR", _node_ip_address="127.0.0.1",
        )
    except BaseException:
        shutdown_ray(keep_logs=False)
        raise
    _set_local_ray_env("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    TerminationSignal.reinstall()
    return (f"local Ray ({cpus} CPUs, {r.workers} worker(s) × {r.cpus_per_worker} CPU per trial; "
            f"dashboard {dashboard}; its logs: {temp}/session_latest/logs)")


def check_ray_address(address: str, timeout_s: float = 10.0) -> None:
    """A Ray cluster's `host:port` (or `ray://host:port`) must accept a connection; Ray itself
    would retry an unreachable address for many minutes."""
    import socket
    from urllib.parse import urlsplit

    if address in ("auto", "local"):
        return
    try:
        parts = urlsplit(address if "://" in address else f"//{address}")
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise ConfigError(f"--address {address}: not a host:port ({e})") from None
    if not host or port is None:
        raise ConfigError(f"--address {address}: expected host:port (e.g. 10.0.0.5:6379) or "
                          "ray://host:10001")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: "
                          f"{e.strerror or e}") from None


def check_local_data(spec: SweepSpec) -> None:
    """On this machine's Ray, the base trial config's data files must exist: a mistake there
    would fail every trial. (On a cluster the data may live only on the workers' nodes.)"""
    from trainables.config import TrialConfig
    from trainables.data.loading import split_source
    from trainables.errors import DataError

    try:
        config = TrialConfig.from_dict(spec.base, source=str(spec.path))
    except ConfigError:
        return  # the space sets what the base leaves open: each trial checks its own
    if config.data.dir.startswith("hf:") or config.data.format == "hf":
        return
    try:
        for task in config.tasks:
            for split in ("train", "dev"):
                split_source(config, task, split)
    except DataError as e:
        raise ConfigError(f"{spec.path}: {e}") from None


def check_storage(storage: str) -> list[Path]:
    """A local `--storage` folder must be creatable before anything starts; returns the
    folders it created (parents first), for removal if the sweep does not start."""
    if "://" in storage:
        return []
    return make_folder(storage, "--storage")


def _autoscaling() -> bool:
    """Whether the cluster runs Ray's autoscaler (it publishes its status in the GCS)."""
    try:
        from ray.experimental.internal_kv import _internal_kv_get

        return _internal_kv_get("__autoscaling_status") is not None
    except Exception:  # noqa: BLE001 - an older or restricted cluster: assume a fixed one
        return False


def check_resources(spec: SweepSpec, existing_cluster: bool = False) -> None:
    """Refuse a sweep whose one trial can never be placed (it would wait forever)."""
    import ray

    have = ray.cluster_resources()
    r = spec.resources
    if existing_cluster and _autoscaling():
        return  # nodes are added on demand: what is up now says nothing
    need_cpu = r.workers * r.cpus_per_worker
    need_gpu = r.workers * r.gpus_per_worker
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    max_node_gpu = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
    if r.gpus_per_worker > max_node_gpu:
        raise ConfigError(
            f"{spec.path}: resources.gpus_per_worker: {r.gpus_per_worker} GPU(s) per worker, but "
            f"no node of the cluster has that many (largest: {max_node_gpu:g}, cluster total "
            f"{have.get('GPU', 0):g})"
        )
    if need_cpu > have.get("CPU", 0) or need_gpu > have.get("GPU", 0):
        raise ConfigError(
            f"{spec.path}: resources: one trial needs {need_cpu:g} CPU and {need_gpu:g} GPU "
            f"({r.workers} workers), the cluster has {have.get('CPU', 0):g} CPU and "
            f"{have.get('GPU', 0):g} GPU"
        )


def launch(spec: SweepSpec, opts: LaunchOptions) -> dict[str, Any]:
    """Run the sweep; return the summary (also printed as a table)."""

    num_samples = opts.num_samples or spec.search.num_samples
    tracking_uri = resolve_tracking_uri(opts.tracking_uri, spec.tracking.tracking_uri)
    experiment = opts.experiment or spec.tracking.experiment or spec.name
    storage = opts.storage or str(Path("runs").resolve())
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    cache_dir = os.environ.get("MTSWEEP_CACHE") or str(Path.home() / ".cache" / "mtsweep")
    spec = absolute_data_dir(spec)
    existing = bool(opts.address or os.environ.get("RAY_ADDRESS"))
    if existing:  # these before anything starts
        check_ray_address(opts.address or os.environ["RAY_ADDRESS"])
    else:
        check_local_data(spec)
    check_reachable(tracking_uri)
    created = check_storage(storage)
    try:
        where = _init_ray(opts, spec)
    except BaseException:
        remove_empty(created)
        raise
    with stopping_ray(created):
        check_resources(spec, existing_cluster=existing)
        experiment_id = get_or_create_experiment(tracking_uri, experiment)
        tracker = SweepTracker(tracking_uri, experiment_id)
        run_name = new_run_name(storage, f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        commit = git_commit()
        tracker.start_parent(
            run_name,
            tags={"mtsweep.sweep_file": str(spec.path), "mtsweep.sweep_sha256": spec.sha256,
                  "mtsweep.git_commit": commit, "description": spec.description,
                  "mtsweep.storage": without_credentials(storage)},
            params={"search.algorithm": spec.search.algorithm,
                    "search.metric": ",".join(spec.search.metrics),
                    "search.mode": ",".join(spec.search.modes), "search.num_samples": num_samples,
                    "search.max_concurrent": spec.search.max_concurrent,
                    "search.seed": spec.search.seed, "scheduler.name": spec.scheduler.name,
                    "resources.workers": spec.resources.workers,
                    "resources.cpus_per_worker": spec.resources.cpus_per_worker,
                    "resources.gpus_per_worker": spec.resources.gpus_per_worker,
                    "resources.compile": spec.resources.compile,
                    "resources.attention": spec.resources.attention},
            sweep_file=spec.path,
        )
        print(f"sweep {spec.name}: {num_samples} trials, {spec.search.algorithm} search, "
              f"{spec.scheduler.name} scheduler, on {where}", flush=True)
        print(f"MLflow: {redact(tracking_uri)} · experiment {experiment} ({experiment_id}) · "
              f"sweep run {tracker.parent_run_id}", flush=True)
        print(f"Ray Tune results and checkpoints: {storage}/{run_name}", flush=True)

        summary = closing_sweep_run(tracker, lambda: _run_tuner(
            spec, opts, tracker, storage, cache_dir, commit, num_samples, run_name))
        return summary


@contextlib.contextmanager
def stopping_ray(created: list[Path] = ()):
    """Stop Ray when the block ends. A local Ray's logs are kept only after an unexpected
    error; a sweep refused (the user's mistake) or interrupted removes the still empty
    folders in `created`."""
    failed = False
    try:
        yield
    except (MtsweepError, KeyboardInterrupt):
        remove_empty(list(created))
        raise
    except BaseException:
        failed = True
        raise
    finally:
        shutdown_ray(keep_logs=failed)


def shutdown_ray(keep_logs: bool) -> None:
    """Stop Ray; the temp folder of a local Ray (its logs) is removed, unless `keep_logs`
    (after an unexpected error: its path is printed), and the environment it set is put back."""
    import ray

    ray.shutdown()
    if not _LOCAL_RAYS:
        return
    temp, saved = _LOCAL_RAYS.pop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if keep_logs:
        print(f"the local Ray's logs are kept: {temp}/session_latest/logs", file=sys.stderr,
              flush=True)
    else:
        shutil.rmtree(temp, ignore_errors=True)


def closing_sweep_run(tracker: SweepTracker, run):
    """Call `run()` and close the sweep run: FINISHED, KILLED on an interruption, FAILED on an
    error or when every trial failed."""
    status = "FAILED"
    try:
        summary = run()
        trials = summary.get("trials") or []
        if not trials or any(t["status"] != "FAILED" for t in trials):
            status = "FINISHED"
        return summary
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end_parent(status)


def _run_tuner(
    spec: SweepSpec, opts: LaunchOptions, tracker: SweepTracker, storage: str, cache_dir: str,
    commit: str, num_samples: int, run_name: str,
) -> dict[str, Any]:
    """Build the searcher, scheduler and Tuner; run the trials; summarise them."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.search import ConcurrencyLimiter

    from orchestrator.searcher import OptunaSearch

    _write_meta(join_storage(storage, run_name), {
        "sweep_file": str(Path(spec.path).resolve()), "overrides": list(spec.overrides),
        "cwd": os.getcwd(), "tracking_uri": tracker.tracking_uri,
        "experiment_id": tracker.experiment_id, "parent_run_id": tracker.parent_run_id,
        "experiment": opts.experiment or spec.tracking.experiment or spec.name,
        "num_samples": num_samples, "num_cpus": opts.num_cpus,
        "cache_dir": cache_dir, "storage": storage,
        "run_name": run_name, "git_commit": commit, "sweep_fingerprint": sweep_fingerprint(spec),
    })
    s = spec.search
    metric = list(s.metrics) if s.multi_objective else s.metrics[0]
    mode = list(s.modes) if s.multi_objective else s.modes[0]
    searcher = OptunaSearch(space=spec.define_by_run, metric=metric, mode=mode,
                            sampler=make_sampler(spec))
    limited = ConcurrencyLimiter(searcher, max_concurrent=s.max_concurrent)
    progress = Progress(num_samples, spec.scheduler.metric, spec.scheduler.mode)
    ctx = TrialContext(spec=spec, tracker=tracker, storage=storage, cache_dir=cache_dir,
                       git_commit=commit)
    trainable = make_trainable(ctx)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=limited,
            scheduler=build_scheduler(spec.scheduler, spec.max_epochs()),
            metric=spec.scheduler.metric, mode=spec.scheduler.mode,
            num_samples=num_samples, time_budget_s=s.time_budget_s,
            # A trial that trains in its own process leaves it warm for the next one.
            reuse_actors=not spec.resources.uses_ray_train,
        ),
        run_config=tune.RunConfig(
            name=run_name, storage_path=storage, verbose=0,
            callbacks=[_make_callback(spec, tracker, progress, limited), JsonLoggerCallback()],
            failure_config=trial_failures(spec),
        ),
    )
    with TerminationSignal.tuning():
        results = tuner.fit()
    progress.show(force=True)
    if searcher.repeats_skipped:
        print(f"search: {searcher.repeats_skipped} proposal(s) repeated a configuration already "
              "trained; its result was reused, no trial run", flush=True)
        tracker.attempt("search repeats", lambda: tracker.client.log_metric(
            tracker.parent_run_id, "search_repeats_skipped", searcher.repeats_skipped))
    return finish(results, spec, tracker, opts.experiment or spec.tracking.experiment or spec.name,
                  num_samples, join_storage(storage, run_name))


class SweepInterrupted(KeyboardInterrupt):
    """The driver was interrupted; Ray Tune saved the sweep's state."""

    def __init__(self, folder: Path) -> None:
        super().__init__(str(folder))
        self.folder = folder


def finish(results, spec: SweepSpec, tracker: SweepTracker, experiment: str, num_samples: int,
           folder: Path) -> dict[str, Any]:
    """After `Tuner.fit()`: raise SweepInterrupted when the driver was asked to stop or trials
    are left, else print and return the summary."""
    trials = results._experiment_analysis.trials
    known = {t.trial_id for t in trials}
    if TerminationSignal.received() or any(
            t.status not in ("TERMINATED", "ERROR") for t in trials) or (
            len(trials) < num_samples and spec.search.time_budget_s is None):
        tracker.close_open(known, {})
        raise SweepInterrupted(folder)
    tracker.close_abandoned(known)
    if spec.search.time_budget_s is not None:
        tracker.close_open(known, {STOPPED_EARLY: "true", ERROR: (
            f"stopped when the sweep's time budget (search.time_budget_s: "
            f"{spec.search.time_budget_s:g} s) ran out")})
    summary = summarize(spec, tracker, experiment, num_samples)
    print_table(summary, spec)
    return summary


META_FILE = "mtsweep-sweep.json"


def sweep_fingerprint(spec: SweepSpec) -> str:
    """The sweep as it runs: its file, overrides and resolved base trial config (so a change
    to a `base:` trial file counts too)."""
    blob = json.dumps({"text": spec.text, "overrides": list(spec.overrides), "base": spec.base},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def new_run_name(storage: str, name: str) -> str:
    """`name`, or `name-2`, `name-3`, …: the first whose folder in a local `storage` (made by
    `check_storage`) this call creates. Sweeps of one file started in the same second (a shell
    loop over `--set` values) would otherwise share one Ray Tune folder. (On a URI: `name` as
    it is.)"""
    if "://" in storage:
        return name
    for k in range(1, 1000):
        candidate = name if k == 1 else f"{name}-{k}"
        try:
            Path(storage, candidate).mkdir()
            return candidate
        except FileExistsError:
            continue
    raise MtsweepError(f"{storage}: {name}: 999 sweep folders of this name already exist")


def _write_meta(folder: str | Path, meta: dict[str, Any]) -> None:
    """What `mtsweep resume` needs to continue this sweep, next to Ray Tune's own state (a
    local folder, or any URI pyarrow can write: the `--storage` of a cluster)."""
    folder = str(folder)
    if "://" not in folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / META_FILE).write_text(json.dumps(meta, indent=1))
        return
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(folder)
    filesystem.create_dir(path, recursive=True)
    with filesystem.open_output_stream(f"{path}/{META_FILE}") as out:
        out.write(json.dumps(meta, indent=1).encode())


def make_trainable(ctx: TrialContext):
    from ray import tune

    r = ctx.spec.resources
    trainable = tune.with_parameters(run_trial, ctx=ctx)
    if not r.uses_ray_train:  # the trial's process trains: it holds the worker's CPUs/GPUs
        return tune.with_resources(trainable, {"cpu": r.cpus_per_worker,
                                               "gpu": r.gpus_per_worker})
    # The trial function only drives its Ray Train workers (which hold the real CPUs/GPUs).
    # It takes no CPU (a fraction would leave N-1.99 CPUs, too few for N one-CPU workers);
    # a token amount of memory gives its placement group a non-empty bundle.
    return tune.with_resources(trainable, {"cpu": 0, "memory": 2**20})


def trial_failures(spec: SweepSpec):
    """Ray Tune's retries. A trial that trains in its own process has no Ray Train worker
    group to restart: a dead process is a failed trial, which Tune re-runs (from the trial's
    last checkpoint) up to `worker_restarts + trial_retries` times."""
    from ray import tune

    f = spec.failures
    retries = f.trial_retries if spec.resources.uses_ray_train else (
        f.worker_restarts + f.trial_retries)
    return tune.FailureConfig(max_failures=retries)


def summarize(spec: SweepSpec, tracker: SweepTracker, experiment: str, num_samples: int
              ) -> dict[str, Any]:
    """Every trial of the sweep with its status, final metrics and params, best first."""
    from orchestrator.space import space_key_paths

    keys = set(space_key_paths(spec))
    trials = []
    for run in tracker.trial_runs():
        if run.data.tags.get(ABANDONED) == "true":
            continue
        trials.append({
            "run_id": run.info.run_id,
            "ray_trial_id": run.data.tags.get(RAY_TRIAL_ID),
            "status": run.info.status,
            "stopped_early": run.data.tags.get(STOPPED_EARLY) == "true",
            "metrics": dict(run.data.metrics),
            "params": {k: v for k, v in run.data.params.items() if k in keys},
            "reproduce": run.data.tags.get(REPRODUCE),
        })
    metric, mode = spec.scheduler.metric, spec.scheduler.mode
    sign = -1 if mode == "max" else 1

    def key(t):
        v = t["metrics"].get(metric)
        return (v is None or (isinstance(v, float) and math.isnan(v)), sign * (v or 0))

    trials.sort(key=key)
    best = next((t for t in trials if metric in t["metrics"]), None)
    return {
        "experiment": experiment,
        "experiment_id": tracker.experiment_id,
        "parent_run_id": tracker.parent_run_id,
        "tracking_uri": redact(tracker.tracking_uri),
        "num_samples": num_samples,
        "metric": metric,
        "trials": trials,
        "best_run_id": best["run_id"] if best else None,
        "best_reproduce": best["reproduce"] if best else None,
    }


def _short(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 else key


def format_table(summary: dict[str, Any], param_keys: list[str]) -> str:
    """A Markdown table like the study's Table 3: key params, task metrics, overall."""
    cols = ["#", "status", *[_short(k) for k in param_keys], "epochs", "SST acc", "QQP acc",
            "STS r", "overall", "overall_mean"]
    rows = []
    for i, t in enumerate(summary["trials"], 1):
        m = t["metrics"]
        status = {"FINISHED": "done", "KILLED": "stopped", "FAILED": "FAILED"}.get(
            t["status"], t["status"].lower())
        rows.append([str(i), status, *[format_param(t["params"].get(k, "")) for k in param_keys],
                     str(int(m["epoch"])) if "epoch" in m else "-",
                     *[f"{m[k]:.3f}" if k in m else "-" for k in TASK_METRICS]])
    widths = [max(len(c), *(len(r[j]) for r in rows)) if rows else len(c)
              for j, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def print_table(summary: dict[str, Any], spec: SweepSpec) -> None:
    from orchestrator.space import space_key_paths

    keys = [k for k in space_key_paths(spec)
            if any(t["params"].get(k) not in (None, "n/a") for t in summary["trials"])]
    print()
    print(format_table(summary, keys))
    print(f"\nexperiment {summary['experiment']} ({summary['experiment_id']}) · sweep run "
          f"{summary['parent_run_id']} · {summary['tracking_uri']}")
    if summary["best_run_id"]:
        print(f"best trial: run {summary['best_run_id']} — reproduce it with:\n  "
              f"{summary['best_reproduce']}")


class TerminationSignal:
    """Ctrl-C (SIGINT) and SIGTERM (a scheduler or `kill` stopping the driver) end a sweep the
    same way: Ray Tune saves the sweep's state one last time and the sweep can be resumed.

    Remembers the first signal: for the exit status (128 + its number), and because it is the
    only sign of an interruption once `Tuner.fit()` has returned (Ray Tune marks the trials it
    stops then as terminated, like finished ones). While `tuning()`, the first signal is handed
    to Ray Tune's own stop (its SIGUSR1 handler); otherwise, and for a second signal, it raises
    KeyboardInterrupt."""

    active: TerminationSignal | None = None
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._tuning = False

    def __enter__(self) -> TerminationSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.getsignal(s) for s in self.SIGNALS}
            self._install()
            TerminationSignal.active = self
        return self

    def _install(self) -> None:
        for s in self.SIGNALS:
            signal.signal(s, self._on_signal)

    @classmethod
    def reinstall(cls) -> None:
        """`ray.init` installs its own SIGTERM handler (which aborts the driver): put ours
        back after it."""
        if cls.active is not None and threading.current_thread() is threading.main_thread():
            cls.active._install()

    def _on_signal(self, signum, frame) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if first and self._tuning:
            os.kill(os.getpid(), signal.SIGUSR1)  # Ray Tune stops the sweep, saving its state
            return
        raise KeyboardInterrupt

    @classmethod
    @contextlib.contextmanager
    def tuning(cls):
        """Around `Tuner.fit()`: a first signal stops the sweep through Ray Tune (Tune's own
        SIGINT handler, which would hide the interruption, is left out)."""
        term = cls.active
        if term is None:
            yield
            return
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        # Until Ray Tune installs its SIGUSR1 handler, a signal interrupts as outside it.
        previous = signal.signal(signal.SIGUSR1, _raise_interrupt)
        term._tuning = True
        try:
            yield
        finally:
            term._tuning = False
            signal.signal(signal.SIGUSR1, previous)

    @classmethod
    def received(cls) -> bool:
        """Whether the driver was asked to stop (Ctrl-C or SIGTERM)."""
        return cls.active is not None and cls.active.signum is not None

    def __exit__(self, *exc) -> None:
        if hasattr(self, "_previous"):
            for s, handler in self._previous.items():
                signal.signal(s, handler)
            TerminationSignal.active = None

    @property
    def exit_status(self) -> int:
        return 128 + int(self.signum or signal.SIGINT)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_launch(args) -> int:
    from orchestrator.space import load_sweep

    overrides = list(args.overrides)
    if args.num_samples is not None:  # validated like the file's, and shown by --dry-run
        overrides.append(f"search.num_samples={args.num_samples}")
    spec = load_sweep(args.space, overrides)
    if args.dry_run:
        result = dry_run(spec)
        if args.json:
            print(json.dumps(result))
        return 0
    opts = LaunchOptions(
        num_samples=args.num_samples, address=args.address, storage=args.storage,
        tracking_uri=args.tracking_uri, experiment=args.experiment, num_cpus=args.num_cpus,
        verbose=args.verbose, json=args.json,
    )
    with TerminationSignal() as term:
        try:
            summary = launch(spec, opts)
        except SweepInterrupted as e:
            print(f"interrupted: the sweep run is marked KILLED in MLflow; continue it with\n"
                  f"  {shlex.join(['mtsweep', 'resume', str(e.folder)])}", file=sys.stderr)
            return term.exit_status
        except KeyboardInterrupt:
            print("interrupted: the sweep run is marked KILLED in MLflow", file=sys.stderr)
            return term.exit_status
    if args.json:
        print(json.dumps(summary, default=str))
    failed = sum(t["status"] == "FAILED" for t in summary["trials"])
    return 1 if failed and failed == len(summary["trials"]) else 0


def add_launch_arguments(p) -> None:
    p.add_argument("space", help="sweep file (e.g. search_spaces/quickstart.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sweep-file key, e.g. --set search.num_samples=4 or "
                        "--set fixed.epochs=1 (repeatable)")
    p.add_argument("--num-samples", type=_at_least_one, metavar="N",
                   help="trials to run (default: the file's)")
    p.add_argument("--address", help="an existing Ray cluster (default: $RAY_ADDRESS, else a "
                                     "local Ray started for the sweep)")
    p.add_argument("--storage", help="folder or URI for Ray Tune results and checkpoints "
                                     "(default ./runs; shared storage on a cluster)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, "
                                          "else sqlite:///./mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment (default: the sweep's name)")
    p.add_argument("--num-cpus", type=_at_least_one, metavar="N", help="logical CPUs of the local Ray")
    p.add_argument("--dry-run", action="store_true",
                   help="validate, print the space and a few sampled configs; start nothing")
    p.add_argument("--verbose", action="store_true", help="show the trials' own output")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
