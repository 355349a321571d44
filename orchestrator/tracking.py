"""MLflow records of a sweep: one parent run per sweep, one nested run per trial.

Direct `MlflowClient` calls (no autologging): params are the trial config's key paths, metrics
are logged per epoch with `step=epoch` in one batch call, artifacts are the resolved config,
confusion matrices (PNG + JSON) and dev predictions (Parquet).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from trainables.errors import MtsweepError

log = logging.getLogger("mtsweep.tracking")

# Tag names.
RAY_TRIAL_ID = "mtsweep.ray_trial_id"
OPTUNA_TRIAL = "mtsweep.optuna_trial_number"
PARENT = "mlflow.parentRunId"
KIND = "mtsweep.kind"  # "sweep" | "trial" | "reproduction"
REPRODUCE = "mtsweep.reproduce_command"
STOPPED_EARLY = "mtsweep.stopped_early"
ERROR = "mtsweep.error"
INACTIVE = "n/a"
EXPERIMENT_KIND = "mlflow.experimentKind"  # param value of a conditional parameter that is not active in this trial


class TrackingError(MtsweepError):
    """The tracking server cannot be reached or refused a request."""


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    return f"sqlite:///{Path(cwd or os.getcwd()).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(cli_value: str | None, file_value: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the sweep file's, else ./mlflow.db.
    Relative sqlite/file paths are made absolute (Ray runs trials in other folders)."""
    uri = cli_value or os.environ.get("MLFLOW_TRACKING_URI") or file_value
    if not uri:
        return default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    if "://" not in uri:  # a plain folder: MLflow's file store
        return Path(uri).resolve().as_uri()
    return uri


def redact(uri: str) -> str:
    """The URI without a password (user:secret@host → user:***@host), for logs and tags."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def default_artifact_root(tracking_uri: str) -> str | None:
    """For a local SQLite store: an absolute artifacts folder beside the database."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


def client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def check_reachable(tracking_uri: str, timeout_s: float = 10.0) -> None:
    """One cheap request; a TrackingError naming the (redacted) URI when it fails."""
    if tracking_uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout_s)))
    quiet = [logging.getLogger(n) for n in ("mlflow", "urllib3")]
    levels = [q.level for q in quiet]
    for q in quiet:  # their retry warnings would print the URI, password included
        q.setLevel(logging.CRITICAL)
    try:
        client(tracking_uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - any failure here means "cannot use this store"
        reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        secret = urlsplit(tracking_uri).password if "://" in tracking_uri else None
        if secret:
            reason = reason.replace(secret, "***")
        raise TrackingError(
            f"cannot reach the MLflow tracking store {redact(tracking_uri)}: {reason}"
        ) from None
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def get_or_create_experiment(tracking_uri: str, name: str) -> str:
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        # The kind makes the MLflow 3 UI open the experiment on its runs, not on GenAI traces.
        return c.create_experiment(name, artifact_location=default_artifact_root(tracking_uri),
                                   tags={EXPERIMENT_KIND: "custom_model_development"})
    except Exception:  # noqa: BLE001 - created meanwhile by another process
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_commit(repo: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo or Path(__file__).resolve().parents[1],
            capture_output=True, text=True, timeout=5,
        )
        commit = out.stdout.strip()
        if commit:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=repo or Path(__file__).resolve().parents[1], capture_output=True, text=True,
                timeout=5,
            ).stdout.strip()
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mtsweep", "torch", "transformers", "accelerate", "ray", "optuna", "mlflow",
                "pyarrow", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def _param_value(v: Any) -> str:
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v)[:6000]
    return str(v)[:6000]


def with_retries(fn, *args, what: str, attempts: int = 4, **kwargs):
    """Call an MLflow function, retrying with back-off; after the last failure warn and go on
    (a tracking hiccup must not kill training)."""
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            if i == attempts - 1:
                warnings.warn(f"MLflow: {what} failed after {attempts} tries: {e}", stacklevel=2)
                return None
            time.sleep(0.5 * 2**i)


class SweepTracker:
    """Writes a sweep's records. Picklable (holds only strings); each process makes its own
    client."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str | None = None):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id

    @property
    def client(self):
        return client(self.tracking_uri)

    # ---- the parent run ------------------------------------------------------------------
    def start_parent(self, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any],
                     sweep_file: Path) -> str:
        from mlflow.entities import Param, RunTag

        c = self.client
        run = c.create_run(self.experiment_id, run_name=run_name,
                           tags={KIND: "sweep", **{k: str(v) for k, v in tags.items()}})
        self.parent_run_id = run.info.run_id
        c.log_batch(self.parent_run_id, params=[Param(k, _param_value(v)) for k, v in params.items()],
                    tags=[RunTag("mlflow.note.content", tags.get("description", ""))])
        c.log_artifact(self.parent_run_id, str(sweep_file), artifact_path="sweep")
        return self.parent_run_id

    def end_parent(self, status: str = "FINISHED") -> None:
        if self.parent_run_id:
            with_retries(self.client.set_terminated, self.parent_run_id, status=status,
                         what="closing the sweep run")

    # ---- trial runs ----------------------------------------------------------------------
    def find_trial_run(self, ray_trial_id: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{RAY_TRIAL_ID}` = '{ray_trial_id}' and "
                          f"tags.`{PARENT}` = '{self.parent_run_id}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def get_or_create_trial_run(self, ray_trial_id: str, run_name: str) -> tuple[str, bool]:
        """The trial's run (the same one when the trial is retried) and whether it is new."""
        existing = self.find_trial_run(ray_trial_id)
        if existing:
            self.client.update_run(existing, status="RUNNING")
            return existing, False
        run = self.client.create_run(
            self.experiment_id, run_name=run_name,
            tags={PARENT: self.parent_run_id, RAY_TRIAL_ID: ray_trial_id, KIND: "trial"},
        )
        return run.info.run_id, True

    def trial_runs(self) -> list:
        return self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT}` = '{self.parent_run_id}'",
            max_results=10000,
        )

    def log_trial_start(self, run_id: str, params: Mapping[str, Any], tags: Mapping[str, Any],
                        config_yaml: str) -> None:
        from mlflow.entities import Param, RunTag

        c = self.client
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            c.log_batch(run_id, params=items[i : i + 100])
        c.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])
        c.log_text(run_id, config_yaml, "config/trial_config.yaml")

    def log_epoch(self, run_id: str, metrics: Mapping[str, Any], epoch: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, epoch) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        with_retries(self.client.log_batch, run_id, metrics=batch, what=f"logging epoch {epoch}")

    def log_epoch_artifacts(self, run_id: str, out_dir: Path) -> None:
        """Confusion matrices (JSON + PNG) and dev predictions (Parquet) of the latest epoch."""
        c = self.client
        confusion = out_dir / "confusion.json"
        if confusion.exists():
            with_retries(c.log_artifact, run_id, str(confusion), "confusion", what="confusion")
            for task, matrix in json.loads(confusion.read_text()).items():
                png = out_dir / f"confusion-{task}.png"
                plot_confusion(matrix, task, png)
                with_retries(c.log_artifact, run_id, str(png), "confusion", what="confusion png")
        preds = out_dir / "predictions"
        if preds.is_dir():
            with_retries(c.log_artifacts, run_id, str(preds), "predictions", what="predictions")

    def finish_trial(self, run_id: str, status: str, tags: Mapping[str, str] | None = None,
                     error: str | None = None) -> None:
        c = self.client
        for k, v in (tags or {}).items():
            with_retries(c.set_tag, run_id, k, v, what="tagging")
        if error:
            with_retries(c.set_tag, run_id, ERROR, error[-5000:], what="tagging")
            with_retries(c.log_text, run_id, error, "error.txt", what="error text")
        with_retries(c.set_terminated, run_id, status=status, what="closing a trial run")


TASK_LABELS = {
    "sst": ["neg", "some neg", "neutral", "some pos", "pos"],
    "para": ["not dup", "dup"],
}


def plot_confusion(matrix: list[list[int]], task: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(matrix)
    labels = TASK_LABELS.get(task, [str(i) for i in range(len(m))])
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(m), 1.0 + 0.8 * len(m)), dpi=100)
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(m)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(m)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"{task} dev")
    for i in range(len(m)):
        for j in range(len(m)):
            ax.text(j, i, int(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
