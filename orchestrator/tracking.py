"""MLflow records of a sweep: one parent run per sweep, one nested run per trial.

Direct `MlflowClient` calls (no autologging): params are the trial config's key paths, metrics
are logged per epoch with `step=epoch` in one batch call, artifacts are the resolved config,
confusion matrices (PNG + JSON) and dev predictions (Parquet).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from urllib.request import url2pathname

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
ABANDONED = "mtsweep.abandoned"  # a trial the driver lost when it was killed
RESUMED_FROM = "mtsweep.resumed_from"  # the checkpoint a restarted trial went on from
INACTIVE = "n/a"
EXPERIMENT_KIND = "mlflow.experimentKind"  # param value of a conditional parameter that is not active in this trial


class TrackingError(MtsweepError):
    """The tracking server cannot be reached or refused a request."""


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    return f"sqlite:///{Path(cwd or os.getcwd()).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(cli_value: str | None, file_value: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the sweep file's, else ./mlflow.db.
    Relative sqlite/file paths are made absolute (Ray runs trials in other folders); a plain
    path ending in .db is that SQLite database."""
    uri = cli_value or os.environ.get("MLFLOW_TRACKING_URI") or file_value
    if not uri:
        return default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    if "://" not in uri:  # a plain path: a database file (.db), else MLflow's file store
        path = Path(uri).resolve()
        return f"sqlite:///{path}" if path.suffix == ".db" else path.as_uri()
    return uri


_SECRET_QUERY_KEYS = re.compile(r"token|password|passwd|secret|key|sig|signature|credential",
                                re.IGNORECASE)


def redact(uri: str) -> str:
    """The URI with its secrets masked, for logs and tags: user:secret@host → user:***@host,
    a bare token@host → ***@host, and token-like query values (?token=…) → ***."""
    try:
        parts = urlsplit(uri)
    except ValueError:  # not a URL (e.g. an unclosed "[" of an IPv6 host): mask user:secret@
        return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", uri)
    original = parts
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        user, sep, _ = userinfo.partition(":")
        masked = f"{user}:***" if sep else "***"
        parts = parts._replace(netloc=f"{masked}@{host}")
    if parts.query:
        query = "&".join(
            f"{k}={'***' if _SECRET_QUERY_KEYS.search(k) else v}" if eq else k
            for k, eq, v in (item.partition("=") for item in parts.query.split("&")))
        parts = parts._replace(query=query)
    return uri if parts == original else urlunsplit(parts)


def redact_uris(text: str) -> str:
    return re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+", lambda m: redact(m.group(0)), text)


def without_credentials(uri: str) -> str:
    """The URI without user and password: what is safe to record in a run (MLflow takes the
    credentials from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD instead)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.username or parts.password:
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=host))
    return uri


def reproduce_command(run_id: str, tracking_uri: str) -> str:
    """The shell command that reproduces a trial, quoted for a POSIX shell."""
    return shlex.join(["mtsweep", "reproduce", run_id, "--tracking-uri",
                       without_credentials(tracking_uri)])


def _sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` store, else None."""
    return Path(tracking_uri[len("sqlite:///"):]) if tracking_uri.startswith("sqlite:///") else None


def _file_store_folder(tracking_uri: str) -> Path | None:
    """The folder of a `file:` store (MLflow's file store), else None."""
    return (Path(url2pathname(urlsplit(tracking_uri).path)) if tracking_uri.startswith("file:")
            else None)


def default_artifact_root(tracking_uri: str) -> str | None:
    """For a local SQLite store: an absolute artifacts folder beside the database."""
    db = _sqlite_file(tracking_uri)
    return (db.parent / "mlartifacts").as_uri() if db is not None else None


# MLflow's HTTP client retries a refused connection for minutes by default; a tracking outage
# must cost a training step seconds, not minutes (writes that fail are kept and sent later).
# A user's own settings win.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith(("http://", "https://")):
        for k, v in _HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
        # MLflow prints a "View run at <URI>" line when a run ends: noise in the progress view,
        # and it would show a password given in the URI.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"

    return MlflowClient(tracking_uri=tracking_uri)


def missing_local_store(tracking_uri: str) -> str | None:
    """Why a local tracking store cannot hold any run ("no such database" / "no such folder"),
    or None. For commands that read runs: checked before MLflow opens the store, which would
    create it."""
    if (db := _sqlite_file(tracking_uri)) is not None:
        return None if db.exists() else "no such database"
    if (folder := _file_store_folder(tracking_uri)) is not None:
        return None if folder.exists() else "no such folder"
    return None


def _check_local_store(tracking_uri: str) -> None:
    """A local store's mistakes, said at once (MLflow would retry a database it cannot create
    for minutes, and its file-store refusal is a long text)."""
    folder = _file_store_folder(tracking_uri)
    if folder is not None and \
            os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
        hint = folder.with_suffix(".db") if folder.suffix != ".db" else folder
        raise TrackingError(
            f"{tracking_uri}: a folder (MLflow's file store) is off by default in MLflow 3; "
            f"use a database, e.g. --tracking-uri sqlite:///{hint}, or set "
            f"MLFLOW_ALLOW_FILE_STORE=true")
    db = _sqlite_file(tracking_uri)
    if db is not None:
        if db.exists():
            return
        if not db.parent.is_dir():
            raise TrackingError(f"{tracking_uri}: cannot create the database: folder "
                                f"{db.parent} does not exist")
        try:
            db.touch()  # SQLite takes an empty file as a new database
        except OSError as e:
            raise TrackingError(f"{tracking_uri}: cannot create the database: "
                                f"{e.strerror or e}") from None


@contextlib.contextmanager
def _setting_up(tracking_uri: str):
    """Hold an exclusive lock on a SQLite store's folder. MLflow creates a new database's tables
    (and migrates an old one) the first time a process opens it; two commands doing that at
    once (sweeps started together on a new store) break each other's migration, and both
    fail. With the lock the second one finds the tables made. Other stores: no lock."""
    db = _sqlite_file(tracking_uri)
    if db is None:
        yield
        return
    try:
        fd = os.open(db.parent, os.O_RDONLY)
    except OSError:
        yield  # MLflow will say what is wrong with the folder
        return
    try:
        with contextlib.suppress(OSError):  # a file system without locks: go on without
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


def check_reachable(tracking_uri: str, timeout_s: float = 10.0) -> None:
    """One cheap request; a TrackingError naming the (redacted) URI when it fails. Over HTTP
    it gives up sooner than later requests do (1 retry, `timeout_s`), unless the user's
    environment says otherwise."""
    _check_local_store(tracking_uri)
    probe = {}
    if tracking_uri.startswith(("http://", "https://")):
        probe = {k: v for k, v in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"),
                                   ("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout_s))))
                 if k not in os.environ}
        os.environ.update(probe)
    quiet = [logging.getLogger(n) for n in ("mlflow", "urllib3")]
    levels = [q.level for q in quiet]
    for q in quiet:  # their retry warnings would print the URI, password included
        q.setLevel(logging.CRITICAL)
    try:
        with _setting_up(tracking_uri):
            client(tracking_uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - any failure here means "cannot use this store"
        reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        try:
            secret = urlsplit(tracking_uri).password if "://" in tracking_uri else None
        except ValueError:
            secret = None  # redact() masks it
        if secret:
            reason = reason.replace(secret, "***")
        raise TrackingError(
            f"cannot reach the MLflow tracking store {redact(tracking_uri)}: {reason}"
        ) from None
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
        for k in probe:  # later requests: _HTTP_DEFAULTS
            del os.environ[k]


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


def _epoch_batch(metrics: Mapping[str, Any], epoch: int) -> list:
    """The numeric entries of an epoch's metrics as MLflow metrics at step `epoch`."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, epoch) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


class SweepTracker:
    """Writes a sweep's records. Picklable (holds only strings); each process makes its own
    client.

    Writes go through `attempt`: when the tracking server does not answer, the write is kept
    in this process and tried again before the next one (and by `flush` at the end of a trial
    and of the sweep), a warning says so once per outage, and training goes on.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str | None = None):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self._backlog: list[tuple[str, Any]] = []
        self._outage_since: float | None = None
        self._last_failure = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "experiment_id": self.experiment_id,
                "parent_run_id": self.parent_run_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    @property
    def client(self):
        return client(self.tracking_uri)

    @property
    def backlog(self) -> int:
        """Writes waiting for the tracking server."""
        return len(self._backlog)

    def attempt(self, what: str, write) -> bool:
        """Send the backlog, then `write()` (a no-argument callable). Whatever fails is kept,
        in order, for the next call. Returns whether everything was written."""
        self._backlog.append((what, write))
        return self._drain()

    def retry_backlog(self) -> bool:
        """Try the kept writes once; whether none is left."""
        return self._drain(force=True)

    # During an outage a write is only queued, and the server tried again at most this often,
    # so that training does not wait on a dead server at every write.
    RETRY_EVERY_S = 10.0

    def _drain(self, force: bool = False) -> bool:
        if (self._outage_since is not None and not force
                and time.time() - self._last_failure < self.RETRY_EVERY_S):
            return False
        while self._backlog:
            what, fn = self._backlog[0]
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - any failure: keep it, warn, go on
                self._last_failure = time.time()
                if self._outage_since is None:
                    self._outage_since = time.time()
                    self._warn(f"MLflow at {redact(self.tracking_uri)} did not answer "
                               f"({what}: {_short(e)}); the records are kept and sent "
                               f"again later, training goes on")
                return False
            self._backlog.pop(0)
        if self._outage_since is not None:
            self._warn(f"MLflow at {redact(self.tracking_uri)} answers again after "
                       f"{time.time() - self._outage_since:.0f} s; the kept records are sent")
            self._outage_since = None
        return True

    def flush(self, patience_s: float = 120.0) -> bool:
        """Send the backlog, retrying with back-off for up to `patience_s`; warn about what
        could not be sent."""
        deadline = time.time() + patience_s
        delay = 1.0
        while not self._drain(force=True):
            if time.time() + delay > deadline:
                kinds = ", ".join(sorted({w for w, _ in self._backlog}))
                self._warn(f"MLflow at {redact(self.tracking_uri)}: {len(self._backlog)} "
                           f"records could not be written ({kinds})")
                return False
            time.sleep(delay)
            delay = min(delay * 2, 15.0)
        return True

    @staticmethod
    def _warn(message: str) -> None:
        print(f"WARNING: {message}", file=sys.stderr, flush=True)
        log.warning(message)

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
        text = Path(sweep_file).read_text()
        redacted = redact_uris(text)
        if redacted == text:
            c.log_artifact(self.parent_run_id, str(sweep_file), artifact_path="sweep")
        else:  # a tracking URI with a password in the file: upload it masked
            c.log_text(self.parent_run_id, redacted, f"sweep/{Path(sweep_file).name}")
        return self.parent_run_id

    def end_parent(self, status: str = "FINISHED") -> None:
        if self.parent_run_id:
            self.attempt("closing the sweep run", lambda: self.client.set_terminated(
                self.parent_run_id, status=status))
            self.flush()

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
        batch = _epoch_batch(metrics, epoch)
        self.attempt(f"epoch {epoch} metrics",
                     lambda: self.client.log_batch(run_id, metrics=batch))

    def log_epoch_once(self, run_id: str, metrics: Mapping[str, Any], epoch: int) -> None:
        """`log_epoch`, unless the run has this epoch already: a trial killed after saving an
        epoch's checkpoint but before logging the epoch goes on after it, and logs it then."""
        batch = _epoch_batch(metrics, epoch)
        if not batch:
            return

        def write() -> None:
            history = self.client.get_metric_history(run_id, batch[0].key)
            if all(m.step != epoch for m in history):
                self.client.log_batch(run_id, metrics=batch)

        self.attempt(f"epoch {epoch} metrics", write)

    def log_epoch_artifacts(self, run_id: str, out_dir: Path) -> None:
        """Confusion matrices (JSON + PNG) and dev predictions (Parquet) of the latest epoch."""
        confusion = out_dir / "confusion.json"
        if confusion.exists():
            self.attempt("confusion matrices", lambda: self.client.log_artifact(
                run_id, str(confusion), "confusion"))
            for task, matrix in json.loads(confusion.read_text()).items():
                png = out_dir / f"confusion-{task}.png"
                plot_confusion(matrix, task, png)
                self.attempt("confusion plots", lambda png=png: self.client.log_artifact(
                    run_id, str(png), "confusion"))
        preds = out_dir / "predictions"
        if preds.is_dir():
            self.attempt("predictions", lambda: self.client.log_artifacts(
                run_id, str(preds), "predictions"))

    def finish_trial(self, run_id: str, status: str, tags: Mapping[str, str] | None = None,
                     error: str | None = None) -> None:
        tags = _with_error(tags, error)
        self.attempt("closing a trial run",
                     lambda: _close_run(self.client, run_id, status, tags, error))

    def close_abandoned(self, known_trial_ids: set[str]) -> None:
        """Runs still open whose Ray trial is not part of the sweep's saved state: trials the
        driver started just before it was killed (the search ran others instead). Closed as
        KILLED and tagged, so that they are not counted as the sweep's trials."""
        from mlflow.entities import RunTag

        for run in self.trial_runs():
            if run.info.status == "RUNNING" and \
                    run.data.tags.get(RAY_TRIAL_ID) not in known_trial_ids:
                self.attempt("closing an abandoned trial", lambda run=run: (
                    self.client.log_batch(run.info.run_id, tags=[
                        RunTag(ABANDONED, "true"),
                        RunTag(ERROR, "the driver was killed before this trial was saved in "
                                      "the sweep's state; the sweep ran another trial instead")]),
                    self.client.set_terminated(run.info.run_id, status="KILLED")))

    def close_open(self, known_trial_ids: set[str], tags: Mapping[str, str]) -> None:
        """Close as KILLED, with `tags`, the runs of the sweep's trials still open when Ray
        Tune stopped them without reporting them as completed: on an interruption (a resume
        sets them running again) or when the sweep ran out of time."""
        for run in self.trial_runs():
            if run.info.status == "RUNNING" and run.data.tags.get(RAY_TRIAL_ID) in known_trial_ids:
                self.attempt("closing a trial stopped with the sweep", lambda run=run: _close_run(
                    self.client, run.info.run_id, "KILLED", tags, None))

    def close_trial(self, ray_trial_id: str, status: str, tags: Mapping[str, str],
                    error: str | None = None) -> None:
        """From the driver: find the trial's run by its Ray trial id and close it (kept and
        retried as one write when the server does not answer)."""
        tags = _with_error(tags, error)

        def write() -> None:
            run_id = self.find_trial_run(ray_trial_id)
            if run_id is not None:  # None: the trial never got as far as opening its run
                _close_run(self.client, run_id, status, tags, error)

        self.attempt(f"closing trial {ray_trial_id}", write)


def _with_error(tags: Mapping[str, str] | None, error: str | None) -> dict[str, str]:
    tags = dict(tags or {})
    if error:
        tags[ERROR] = error[-5000:]
    return tags


def _close_run(c, run_id: str, status: str, tags: Mapping[str, str], error: str | None) -> None:
    """A trial run's last writes: the error text, its tags, its status (each idempotent, so
    the whole can be sent again after a tracking outage)."""
    from mlflow.entities import RunTag

    if error:
        c.log_text(run_id, error, "error.txt")
    if tags:
        c.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    c.set_terminated(run_id, status=status)


TASK_LABELS = {
    "sst": ["neg", "some neg", "neutral", "some pos", "pos"],
    "para": ["not dup", "dup"],
}


def plot_confusion(matrix: list[list[int]], task: str, path: Path) -> None:
    """A confusion matrix as a PNG heat map (rows gold, columns predicted), drawn with Pillow:
    a few milliseconds, where matplotlib took ~0.1 s — it is drawn after every epoch."""
    from PIL import Image, ImageDraw, ImageFont

    m = [[int(v) for v in row] for row in matrix]
    n = len(m)
    labels = TASK_LABELS.get(task, [str(i) for i in range(n)])
    font, small = ImageFont.load_default(size=13), ImageFont.load_default(size=11)
    cell = 56
    left = 16 + max(int(small.getlength(lab)) for lab in labels) + 8
    top, bottom = 48, 28
    legend = "rows: gold, columns: predicted"
    width = max(left + n * cell + 16, int(small.getlength(legend)) + 24)
    img = Image.new("RGB", (width, top + n * cell + bottom), "white")
    draw = ImageDraw.Draw(img)
    draw.text((8, 6), f"{task} dev", fill="black", font=font)
    draw.text((8, 24), legend, fill="dimgray", font=small)
    peak = max(max(row) for row in m) or 1
    light, dark = (247, 251, 255), (8, 48, 107)  # matplotlib's "Blues" ends
    for i in range(n):
        y = top + i * cell
        draw.text((left - 8, y + cell / 2), labels[i], fill="black", font=small, anchor="rm")
        for j in range(n):
            x = left + j * cell
            f = m[i][j] / peak
            color = tuple(round(a + (b - a) * f) for a, b in zip(light, dark))
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=color)
            draw.text((x + cell / 2, y + cell / 2), str(m[i][j]), font=font, anchor="mm",
                      fill="white" if f > 0.5 else "black")
    for j in range(n):
        draw.text((left + j * cell + cell / 2, top + n * cell + 4), labels[j], fill="black",
                  font=small, anchor="ma")
    img.save(path)
