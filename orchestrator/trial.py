"""What runs inside Ray: the Tune function trainable of one trial, and the Ray Train worker loop.

Tune calls `run_trial(params, ctx)` once per trial (again when the trial is retried). It turns
the sampled point into a TrialConfig, opens (or finds again) the trial's MLflow run and runs
`trainables.train` — the same function `mtsweep train` calls — either in a Ray Train
`TorchTrainer` of N DDP workers or, for a one-worker trial, right in the trial's process (no
worker group to start; Tune reuses the process for the next trial). Rank 0 reports each
epoch's metrics and checkpoint; every rank calls `report`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.checkpoints import TrialCheckpoints
from orchestrator.space import SweepSpec, point_key_paths, point_to_config, space_key_paths
from orchestrator.tracking import (
    INACTIVE,
    OPTUNA_TRIAL,
    REPRODUCE,
    RESUMED_FROM,
    SweepTracker,
    package_versions,
    reproduce_command,
)


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its sampled point (pickled to the trial process)."""

    spec: SweepSpec
    tracker: SweepTracker
    storage: str  # absolute folder (or URI) for Ray Tune / Train results and checkpoints
    cache_dir: str  # tokenized-data cache shared by the trials
    git_commit: str


def join_storage(storage: str, *parts: str) -> str:
    """`storage/part/...` for a local folder or a URI (s3://, gs://, file://)."""
    if "://" in storage:
        return "/".join([storage.rstrip("/"), *parts])
    return str(Path(storage, *parts))


TRAIN_FOLDER = "train"  # STORAGE/train/train-<trial id>/epoch-K: every trial's checkpoints


def train_run_name(trial_id: str) -> str:
    return f"train-{trial_id}"


def trial_params(spec: SweepSpec, params: dict[str, Any], config) -> dict[str, Any]:
    """Every run gets the same param columns: the trial config's key paths, the sweep's tag
    parameters, and a placeholder for each search-space key that is inactive here."""
    out: dict[str, Any] = dict(config.flat())
    sampled = point_key_paths(params)
    out.update({k: v for k, v in sampled.items() if k.startswith("tag.")})
    for key in space_key_paths(spec):
        out.setdefault(key, sampled.get(key, INACTIVE))
    return out


def run_trial(params: dict[str, Any], ctx: TrialContext) -> None:
    """Tune function trainable: one trial = one Ray Train run of N workers, or (one worker,
    `resources.ray_train: auto`) the training loop right here in the trial's process."""
    import ray.tune

    started = time.time()
    trial_id = ray.tune.get_context().get_trial_id()
    trial_name = ray.tune.get_context().get_trial_name()
    tracker = ctx.tracker
    run_id, new = tracker.get_or_create_trial_run(trial_id, trial_name)
    try:
        config = point_to_config(ctx.spec, params)
    except Exception as e:
        tracker.finish_trial(run_id, "FAILED", error=f"invalid trial config: {e}")
        raise
    if new:
        seed = config.seed
        tags = {
            "mtsweep.seed": seed, "mtsweep.git_commit": ctx.git_commit,
            "mtsweep.config_fingerprint": config.fingerprint(),
            "mtsweep.sweep": ctx.spec.name,
            REPRODUCE: reproduce_command(run_id, tracker.tracking_uri),
            **{f"mtsweep.version.{k}": v for k, v in package_versions().items()},
        }
        tracker.log_trial_start(run_id, trial_params(ctx.spec, params, config), tags,
                                config.to_yaml())

    r = ctx.spec.resources
    loop = {
        "config": config.to_dict(), "run_id": run_id, "tracker": tracker,
        "cache_dir": ctx.cache_dir, "threads": max(1, int(r.cpus_per_worker)),
        "cpu": not r.gpus_per_worker, "compile": r.compile, "attention": r.attention,
        "trial_id": trial_id,
        "log_model": ctx.spec.tracking.log_model, "trial_started": started,
    }
    ckpt = ctx.spec.checkpoints
    if not r.uses_ray_train:
        train_loop(loop, TuneSession(TrialCheckpoints(
            join_storage(ctx.storage, TRAIN_FOLDER, train_run_name(trial_id)),
            keep=ckpt.keep, metric=ckpt.metric, mode=ckpt.mode)))
        return

    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    worker_resources = {"CPU": r.cpus_per_worker}
    if r.gpus_per_worker:
        worker_resources["GPU"] = r.gpus_per_worker
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=loop,
        scaling_config=ray.train.ScalingConfig(
            num_workers=r.workers, use_gpu=bool(r.gpus_per_worker),
            resources_per_worker=worker_resources,
        ),
        run_config=ray.train.RunConfig(
            # A fixed name and storage path: a retried trial finds its own checkpoints.
            name=train_run_name(trial_id),
            storage_path=join_storage(ctx.storage, TRAIN_FOLDER),
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(
                max_failures=ctx.spec.failures.worker_restarts),
            # The k best epochs by the sweep's checkpoint metric; Ray Train always keeps the
            # latest too (a restart resumes from it).
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=ckpt.keep, checkpoint_score_attribute=ckpt.metric,
                checkpoint_score_order=ckpt.mode,
            ),
        ),
    )
    trainer.fit()


class TrainSession:
    """Reporting from a Ray Train worker: every rank reports (a barrier), rank 0 attaches the
    epoch's checkpoint, which Ray Train stores as `epoch-K` and registers itself."""

    def __init__(self) -> None:
        import ray.train

        self.rank = ray.train.get_context().get_world_rank()

    def restore(self, local: Path) -> str | None:
        """Copy the checkpoint to resume from into `local`; its name, None if there is none."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        checkpoint.to_directory(str(local))
        return Path(checkpoint.path).name

    def report(self, metrics: dict[str, Any], checkpoint: Path | None = None,
               epoch: int | None = None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None
        ray.train.report(metrics, checkpoint=ckpt,
                         checkpoint_dir_name=f"epoch-{epoch}" if epoch else None)

    def save(self, checkpoint: Path, epoch: int, metrics: dict[str, Any]) -> None:
        """Nothing to do before `report`, which hands the checkpoint to Ray Train."""

    def restored_metrics(self) -> tuple[int, dict[str, Any]] | None:
        """None: Ray Train registers a checkpoint with its report, after the epoch was logged."""
        return None


class TuneSession:
    """Reporting from a one-worker trial that trains in its Ray Tune trial process. Its
    checkpoints go where Ray Train would put them, saved by the trial itself (see
    `orchestrator.checkpoints`); Tune gets the metrics."""

    rank = 0

    def __init__(self, checkpoints: TrialCheckpoints) -> None:
        self.checkpoints = checkpoints
        self._restored: tuple[int, dict[str, Any]] | None = None

    def restore(self, local: Path) -> str | None:
        self._restored = self.checkpoints.latest_saved()
        if self._restored is None:
            return None
        epoch = self._restored[0]
        self.checkpoints.download(epoch, local)
        return f"epoch-{epoch}"

    def restored_metrics(self) -> tuple[int, dict[str, Any]] | None:
        """The restored epoch and the metrics saved with it: the trial may have been killed
        between saving the checkpoint and logging the epoch."""
        return self._restored

    def save(self, checkpoint: Path, epoch: int, metrics: dict[str, Any]) -> None:
        """Saved before the epoch is logged anywhere: a trial killed after logging an epoch
        goes on after it, never logs it twice."""
        self.checkpoints.save(checkpoint, epoch, metrics)

    def report(self, metrics: dict[str, Any], checkpoint: Path | None = None,
               epoch: int | None = None) -> None:
        import ray.tune

        ray.tune.report(metrics)


def train_worker(loop: dict[str, Any]) -> None:
    """Ray Train worker: the training loop, reporting through Ray Train."""
    train_loop(loop, TrainSession())


def train_loop(loop: dict[str, Any], session: TrainSession | TuneSession) -> None:
    """`trainables.train` with a callback that reports to Ray and MLflow."""
    from trainables.config import TrialConfig
    from trainables.runtime import Runtime
    from trainables.training import EpochReport, train

    worker_started = time.time()
    config = TrialConfig.from_dict(loop["config"])
    rank = session.rank
    tracker: SweepTracker = loop["tracker"]
    run_id = loop["run_id"]
    # One staging folder per trial and node: every rank saves its part of the epoch state
    # there (rank 0 the weights and optimizer, each rank its RNG state).
    staging = Path(tempfile.gettempdir()) / "mtsweep-trials" / loop["trial_id"]
    staging.mkdir(parents=True, exist_ok=True)
    out_dir = staging / f"out-rank{rank}"

    local = staging / f"resume-rank{rank}"
    shutil.rmtree(local, ignore_errors=True)
    name = session.restore(local)
    resume_from = str(local) if name else None
    if name and rank == 0:  # a restarted worker group or a retried trial: say so on the run
        tracker.attempt("resume tag", lambda: tracker.client.set_tag(run_id, RESUMED_FROM, name))
        restored = session.restored_metrics()
        if restored is not None:
            epoch, saved = restored
            tracker.log_epoch_once(run_id, saved, epoch)

    # Start-up cost of the trial (not of a restart): Ray Train's worker group, imports, data,
    # model — recorded with the first epoch.
    first = [name is None]
    reported = [False]
    finished = [False]

    def finish() -> None:
        """Rank 0, before the last epoch's report (a scheduler may end the trial within it):
        the final model, and the records held back while MLflow was unreachable."""
        finished[0] = True
        if loop.get("log_model"):
            model_dir = str(out_dir / "model")
            tracker.attempt("model", lambda: tracker.client.log_artifacts(
                run_id, model_dir, "model"))
        tracker.flush()

    def report(rep: EpochReport) -> None:
        reported[0] = True
        metrics = {k: v for k, v in rep.metrics.items() if isinstance(v, (int, float))}
        if first[0]:
            first[0] = False
            trial_started = loop.get("trial_started", worker_started)
            metrics["startup_seconds"] = (time.time() - trial_started
                                          - rep.metrics["epoch_seconds"]
                                          - rep.metrics["eval_seconds"])
            metrics["worker_start_seconds"] = worker_started - trial_started
        if rep.is_main and rep.checkpoint is not None:
            session.save(rep.checkpoint, rep.epoch, metrics)
        if rep.is_main:
            tracker.log_epoch(run_id, metrics, rep.epoch)
            tracker.log_epoch_artifacts(run_id, out_dir)
            if rep.epoch == config.epochs:
                finish()
        # Not an MLflow metric: tells the driver when this trial cannot reach MLflow.
        metrics["tracking_backlog"] = tracker.backlog
        session.report(metrics, rep.checkpoint if rep.is_main else None, rep.epoch)

    runtime = Runtime(
        cpu=loop["cpu"], num_threads=loop["threads"], cache_dir=loop["cache_dir"],
        compile=loop.get("compile", False), attention=loop.get("attention", "auto"),
        out_dir=str(out_dir), checkpoint_dir=str(staging / "checkpoints"),
        resume_from=resume_from, keep_checkpoints=1, progress_lines=0,
    )
    try:
        summary = train(config, runtime, callbacks=[report])
        if not reported[0]:
            # Resumed from the last epoch's checkpoint (the trial had finished training when
            # it was stopped): nothing was trained, so tell Tune the final result again.
            session.report({k: v for k, v in summary.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
        if rank == 0 and not finished[0]:
            finish()
    finally:
        # Also when the trial fails or a scheduler stops it (which, in the trial's own
        # process, ends `train` from within the report): Ray holds the checkpoints, and the
        # local copies would fill the disk over a long sweep.
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.rmtree(staging / f"resume-rank{rank}", ignore_errors=True)
        if rank == 0:
            shutil.rmtree(staging / "checkpoints", ignore_errors=True)
        with contextlib.suppress(OSError):
            staging.rmdir()  # the last rank out on this node removes the folder


def optuna_trial_number(searcher: Any, trial_id: str) -> int | None:
    """The Optuna trial number behind a Ray trial (OptunaSearch keeps the mapping)."""
    inner = getattr(searcher, "searcher", searcher)  # unwrap ConcurrencyLimiter
    ot = getattr(inner, "_ot_trials", {}).get(trial_id)
    return ot.number if ot is not None else None


__all__ = ["OPTUNA_TRIAL", "TrialContext", "optuna_trial_number", "run_trial",
           "train_loop", "train_worker"]
