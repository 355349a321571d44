"""`mtsweep reproduce RUN_ID`: train a recorded trial again from its resolved config and compare.

The recorded run's `config/trial_config.yaml` artifact is trained in this process (no Ray) into a
new run of the same experiment (`mtsweep.kind=reproduction`, `mtsweep.reproduces=RUN_ID`); its
final dev metrics and training losses are compared with the recorded ones. A trial that an
early-stopping scheduler cut short is compared at the epoch it reached. On the CPU training is
bit-exact for the same package versions, so the default tolerance there is 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from orchestrator.tracking import (
    KIND,
    PARENT,
    STOPPED_EARLY,
    SweepTracker,
    TrackingError,
    check_reachable,
    client,
    git_commit,
    missing_local_store,
    package_versions,
    redact,
    resolve_tracking_uri,
)
from trainables.errors import ConfigError, MtsweepError

CONFIG_ARTIFACT = "config/trial_config.yaml"
REPRODUCES = "mtsweep.reproduces"
THREADS = "mtsweep.threads"  # torch threads of a reproduction ("default" when not set)
DEVICE = "mtsweep.device"  # "cpu" | "cuda", of a reproduction
COMPILED = "mtsweep.compile"  # "true" | "false": the encoder ran under torch.compile
ATTENTION = "mtsweep.attention"  # Runtime.attention of a reproduction ("packed", …)
TASK_METRICS = ("sst_acc", "para_acc", "sts_corr", "overall", "overall_mean")
# Wall-clock measurements differ on every run; never compared.
TIMING_METRICS = frozenset({"train_seconds", "epoch_seconds", "eval_seconds",
                            "examples_per_second"})
GPU_TOLERANCE = 1e-3


class ReproduceError(MtsweepError):
    """The run to reproduce cannot be found or has no usable trial config."""


@dataclass
class Comparison:
    """Recorded vs reproduced metrics at one epoch."""

    epoch: int
    tolerance: float
    rows: dict[str, tuple[float, float]] = field(default_factory=dict)

    @staticmethod
    def diff(recorded: float, reproduced: float) -> float:
        if math.isnan(recorded) and math.isnan(reproduced):
            return 0.0
        return reproduced - recorded

    def ok(self, name: str) -> bool:
        d = self.diff(*self.rows[name])
        return not math.isnan(d) and abs(d) <= self.tolerance

    @property
    def mismatched(self) -> list[str]:
        return [k for k in self.rows if not self.ok(k)]

    @property
    def match(self) -> bool:
        return bool(self.rows) and not self.mismatched


def compared_metric(name: str) -> bool:
    """Metrics that a reproduction must match: task metrics, overall scores, training losses and
    the learning rate (never timings or bookkeeping such as `epoch`)."""
    if name in TIMING_METRICS:
        return False
    return name in TASK_METRICS or name.startswith("train_loss_") or name == "lr"


def compare(recorded: dict[str, float], reproduced: dict[str, Any], epoch: int,
            tolerance: float) -> Comparison:
    """Compare the metrics present in both (numbers only)."""
    out = Comparison(epoch, tolerance)
    for name in sorted(recorded, key=_metric_order):
        value = reproduced.get(name)
        if compared_metric(name) and isinstance(value, (int, float)) \
                and not isinstance(value, bool):
            out.rows[name] = (float(recorded[name]), float(value))
    return out


def _metric_order(name: str) -> tuple[int, str]:
    if name in TASK_METRICS:
        return TASK_METRICS.index(name), name
    return len(TASK_METRICS) + (name == "lr"), name


def format_comparison(cmp: Comparison) -> str:
    """A Markdown table: metric | recorded | reproduced | diff | ok."""
    cols = ["metric", "recorded", "reproduced", "diff", "ok"]
    rows = []
    for name, (rec, rep) in cmp.rows.items():
        d = cmp.diff(rec, rep)
        rows.append([name, f"{rec:.10g}", f"{rep:.10g}", f"{d:+.3g}" if d else "0",
                     "yes" if cmp.ok(name) else "NO"])
    widths = [max(len(c), *(len(r[j]) for r in rows)) if rows else len(c)
              for j, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def check_run_store(tracking_uri: str, run_id: str) -> None:
    """The store exists and answers; errors name the run looked for."""
    why = missing_local_store(tracking_uri)
    if why:
        raise ReproduceError(f"run {run_id} not found in {redact(tracking_uri)} ({why})")
    try:
        check_reachable(tracking_uri)
    except TrackingError as e:
        raise TrackingError(f"run {run_id}: {e}") from None


def get_run(tracking_uri: str, run_id: str):
    """The recorded run; a ReproduceError when the store has no such run."""
    from mlflow.exceptions import MlflowException

    try:
        return client(tracking_uri).get_run(run_id)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ReproduceError(f"run {run_id} not found in {redact(tracking_uri)}") from None
        reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise TrackingError(f"cannot read run {run_id} from {redact(tracking_uri)}: "
                            f"{reason}") from None


def load_run_config(tracking_uri: str, run_id: str, folder: Path):
    """Download the run's resolved trial config and validate it."""
    from mlflow.artifacts import download_artifacts

    from trainables.config import TrialConfig

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        local = download_artifacts(run_id=run_id, artifact_path=CONFIG_ARTIFACT,
                                   dst_path=str(folder), tracking_uri=tracking_uri)
    except Exception as e:  # noqa: BLE001 - missing artifact, unreachable artifact store, …
        reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise ReproduceError(f"run {run_id}: cannot download its {CONFIG_ARTIFACT} (is it a "
                             f"trial run?): {reason}") from None
    try:
        return TrialConfig.load(local)
    except ConfigError as e:
        msg = str(e).replace(str(local), CONFIG_ARTIFACT)
        raise ReproduceError(f"run {run_id}: {msg}") from None


def environment_differences(tags: dict[str, str]) -> list[str]:
    """What differs between this environment and the one that recorded the run."""
    diffs = []
    prefix = "mtsweep.version."
    for pkg, now in package_versions().items():
        then = tags.get(prefix + pkg)
        if then is not None and then != now:
            diffs.append(f"{pkg} {then} (recorded) vs {now} (here)")
    then_commit, now_commit = tags.get("mtsweep.git_commit"), git_commit()
    if then_commit is not None and then_commit != now_commit:
        diffs.append(f"git commit {then_commit} (recorded) vs {now_commit} (here)")
    return diffs


class Recorded(NamedTuple):
    """How the recorded run trained: torch threads and whether on a GPU (None: unknown),
    whether compiled, and the encoder's attention (`Runtime.attention`)."""

    threads: int | None
    gpu: bool | None
    compiled: bool
    attention: str = "auto"


def recorded_resources(tracking_uri: str, run) -> Recorded:
    """How the recorded run trained: a reproduction's own tags, else a trial's sweep-run
    params (resources.cpus_per_worker / gpus_per_worker / compile / attention); not compiled
    and the default attention when not recorded."""
    tags = run.data.tags
    if THREADS in tags or DEVICE in tags:
        threads = int(tags[THREADS]) if tags.get(THREADS, "").isdigit() else None
        return Recorded(threads, (tags[DEVICE] == "cuda") if DEVICE in tags else None,
                        tags.get(COMPILED) == "true", tags.get(ATTENTION, "auto"))
    parent = tags.get(PARENT)
    if not parent:
        return Recorded(None, None, False)
    try:
        params = client(tracking_uri).get_run(parent).data.params
    except Exception:  # noqa: BLE001 - the sweep run is only a hint
        return Recorded(None, None, False)
    compiled = params.get("resources.compile") == "True"
    attention = params.get("resources.attention", "auto")
    threads = gpu = None
    try:
        threads = max(1, int(float(params["resources.cpus_per_worker"])))
    except (KeyError, ValueError):
        pass
    try:
        gpu = float(params["resources.gpus_per_worker"]) > 0
    except (KeyError, ValueError):
        pass
    return Recorded(threads, gpu, compiled, attention)


def reproduce(run_id: str, tracking_uri: str | None = None, tolerance: float | None = None,
              quiet: bool = False, use_ray: bool = False) -> tuple[dict[str, Any], Comparison]:
    """Train the recorded run's config again into a new run — in this process, or with
    `use_ray` as a one-trial Ray Train run with the recorded workers — and return the result
    (as `--json` prints it) and the comparison."""
    import torch

    from trainables.runtime import Runtime
    from trainables.training import EpochReport, train

    uri = resolve_tracking_uri(tracking_uri, None)
    check_run_store(uri, run_id)
    run = get_run(uri, run_id)
    tags = run.data.tags
    if tags.get(KIND) == "sweep":
        raise ReproduceError(f"run {run_id} is a sweep run; reproduce one of its trial runs "
                             f"(mtsweep report {run_id} lists them, best first)")
    with tempfile.TemporaryDirectory(prefix="mtsweep-reproduce-") as tmp:
        config = load_run_config(uri, run_id, Path(tmp) / "recorded")
        for line in environment_differences(tags):
            _warn(f"{line}; the numbers may differ")

        threads, recorded_gpu, compiled, attention = recorded_resources(uri, run)
        cuda = torch.cuda.is_available()
        if recorded_gpu and not cuda:
            _warn("the recorded trial trained on a GPU, this machine has none; training on the "
                  "CPU (the numbers may differ)")
        cpu = not cuda or recorded_gpu is False
        if cpu and threads is None:
            _warn(f"the recorded run does not say how many torch threads it trained with; using "
                  f"the default ({torch.get_num_threads()}): on the CPU a different count can "
                  f"change the numbers slightly")
        if tolerance is None:
            tolerance = 0.0 if cpu else GPU_TOLERANCE

        versions = package_versions()
        commit = git_commit()
        tracker = SweepTracker(uri, run.info.experiment_id, parent_run_id=None)
        c = tracker.client
        new = c.create_run(
            run.info.experiment_id, run_name=f"reproduce-{run_id[:8]}",
            tags={KIND: "reproduction", REPRODUCES: run_id, "mtsweep.git_commit": commit,
                  "mtsweep.seed": str(config.seed),
                  "mtsweep.config_fingerprint": config.fingerprint(),
                  THREADS: str(threads or "default"), DEVICE: "cpu" if cpu else "cuda",
                  COMPILED: str(compiled).lower(), ATTENTION: attention,
                  **{f"mtsweep.version.{k}": v for k, v in versions.items()}},
        )
        new_id = new.info.run_id
        print(f"reproducing run {run_id} ({run.info.run_name}) as run {new_id} in "
              f"{redact(uri)} on the {'CPU' if cpu else 'GPU'}"
              f"{f' with {threads} thread(s)' if threads else ''}"
              f"{', encoder compiled' if compiled else ''}"
              f"{f', {attention} attention' if attention != 'auto' else ''}", flush=True)
        tracker.log_trial_start(new_id, {k: str(v) for k, v in config.flat().items()}, {},
                                config.to_yaml())

        out_dir = Path(tmp) / "out"
        history: dict[int, dict[str, Any]] = {}

        def on_epoch(rep: EpochReport) -> None:
            history[rep.epoch] = dict(rep.metrics)
            if rep.is_main:
                tracker.log_epoch(new_id, rep.metrics, rep.epoch)
                tracker.log_epoch_artifacts(new_id, out_dir)

        runtime = Runtime(cpu=True if cpu else None, num_threads=threads, out_dir=str(out_dir),
                          compile=compiled, attention=attention,
                          progress_lines=0 if quiet else 4)
        try:
            if use_ray:
                history.update(_train_on_ray(config, tracker, new_id, uri, run, Path(tmp),
                                             compiled, attention))
            else:
                train(config, runtime, callbacks=[on_epoch])
        except BaseException as e:
            interrupted = isinstance(e, KeyboardInterrupt)
            tracker.finish_trial(new_id, "KILLED" if interrupted else "FAILED",
                                 error=None if interrupted else traceback.format_exc())
            raise
        tracker.finish_trial(new_id, "FINISHED")

    recorded = dict(run.data.metrics)
    epoch = int(recorded.get("epoch", config.epochs))
    note = None
    if epoch < config.epochs:
        why = ("stopped early by the scheduler" if tags.get(STOPPED_EARLY) == "true"
               else f"status {run.info.status}")
        note = (f"the recorded run reached epoch {epoch} of {config.epochs} ({why}): comparing "
                f"with the reproduction's metrics at epoch {epoch}")
    if epoch not in history:
        raise ReproduceError(f"run {run_id}: recorded epoch {epoch} is not an epoch of its "
                             f"config (1..{config.epochs})")
    cmp = compare(recorded, history[epoch], epoch, tolerance)
    result = {
        "run_id": run_id,
        "reproduction_run_id": new_id,
        "match": cmp.match,
        "metrics": {k: {"recorded": _json_float(a), "reproduced": _json_float(b),
                        "diff": _json_float(cmp.diff(a, b))} for k, (a, b) in cmp.rows.items()},
        "compared_epoch": epoch,
        "epochs": config.epochs,
        "tolerance": tolerance,
        "note": note,
    }
    return result, cmp


def _train_on_ray(config, tracker: SweepTracker, new_id: str, uri: str, run, tmp: Path,
                  compiled: bool, attention: str) -> dict[int, dict[str, Any]]:
    """A one-trial Ray Train run (local Ray) with the recorded trial's workers, CPUs and GPUs
    per worker; the workers log each epoch to the reproduction run, read back here."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from orchestrator.launch import local_ray_temp, shutdown_ray
    from orchestrator.trial import train_worker

    workers, cpus, gpus = 1, 1.0, 0.0
    parent = run.data.tags.get(PARENT)
    if parent:
        params = client(uri).get_run(parent).data.params
        workers = int(float(params.get("resources.workers", workers)))
        cpus = float(params.get("resources.cpus_per_worker", cpus))
        gpus = float(params.get("resources.gpus_per_worker", gpus))
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    print(f"on Ray: {workers} worker(s) × {resources}", flush=True)
    ray.init(num_cpus=max(os.cpu_count() or 1, int(workers * cpus)), include_dashboard=False,
             _temp_dir=local_ray_temp(), log_to_driver=False, logging_level="ERROR")
    fitted = False
    try:
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={
                "config": config.to_dict(), "run_id": new_id, "tracker": tracker,
                "cache_dir": os.environ.get("MTSWEEP_CACHE")
                or str(Path.home() / ".cache" / "mtsweep"),
                "threads": max(1, int(cpus)), "cpu": not gpus, "trial_id": f"repro-{new_id[:8]}",
                "compile": compiled, "attention": attention,
                "log_model": False, "trial_started": time.time(),
            },
            scaling_config=ray.train.ScalingConfig(
                num_workers=workers, use_gpu=bool(gpus), resources_per_worker=resources),
            run_config=ray.train.RunConfig(name=f"reproduce-{new_id[:8]}",
                                           storage_path=str(tmp / "ray")),
        )
        trainer.fit()
        fitted = True
    finally:
        shutdown_ray(keep_logs=not fitted)
    history: dict[int, dict[str, Any]] = {}
    c = tracker.client
    for key in c.get_run(new_id).data.metrics:
        for m in c.get_metric_history(new_id, key):
            history.setdefault(m.step, {})[key] = m.value
    return history


def _json_float(v: float) -> float | None:
    return v if math.isfinite(v) else None


def run_reproduce(args: argparse.Namespace) -> int:
    from trainables.training import TrainingDiverged

    if args.tolerance is not None and not args.tolerance >= 0:
        raise ReproduceError(f"--tolerance must be ≥ 0, got {args.tolerance}")
    try:
        result, cmp = reproduce(args.run_id, args.tracking_uri, args.tolerance, quiet=args.json,
                                use_ray=args.ray)
    except TrainingDiverged as e:
        print(f"error: the reproduction diverged: {e}", file=sys.stderr)
        return 1
    print()
    if result["note"]:
        print(result["note"])
    print(f"run {result['run_id']} vs reproduction {result['reproduction_run_id']} at epoch "
          f"{cmp.epoch} (tolerance {cmp.tolerance:g}):")
    print(format_comparison(cmp))
    if not cmp.rows:
        print("NOT reproduced: the recorded run has no metrics to compare with")
    elif cmp.match:
        print(f"reproduced: all {len(cmp.rows)} metrics match")
    else:
        print(f"NOT reproduced: {len(cmp.mismatched)} of {len(cmp.rows)} metrics differ: "
              + ", ".join(cmp.mismatched))
    if args.json:
        print(json.dumps(result))
    return 0 if cmp.match else 1


def add_reproduce_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN_ID", help="MLflow run id of a trial")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, "
                                          "else sqlite:///./mlflow.db)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
    p.add_argument("--ray", action="store_true",
                   help="re-run as a one-trial Ray Train run with the recorded workers "
                        "(default: in this process)")
    p.add_argument("--tolerance", type=float,
                   help=f"largest absolute difference that still matches (default 0 on the CPU, "
                        f"{GPU_TOLERANCE:g} on a GPU)")
