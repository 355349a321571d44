"""`mtsweep ui`: the MLflow UI for the project's tracking store, on 127.0.0.1 by default."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from orchestrator.tracking import TrackingError, client, redact, resolve_tracking_uri


def experiment_url(base: str, tracking_uri: str, experiment: str | None) -> str:
    """The UI address of `experiment` (default: the one with the newest sweep run)."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(experiment) if experiment else None
    if experiment and exp is None:
        raise TrackingError(f"no experiment {experiment!r} in {redact(tracking_uri)}")
    if exp is None:
        runs = c.search_runs(
            [e.experiment_id for e in c.search_experiments()],
            filter_string="tags.`mtsweep.kind` = 'sweep'", order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            return f"{base}/"
        return f"{base}/#/experiments/{runs[0].info.experiment_id}/runs"
    return f"{base}/#/experiments/{exp.experiment_id}/runs"


def server_command(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The `mlflow server` command line: it listens on `host` only (127.0.0.1 unless asked)."""
    mlflow = Path(sys.executable).with_name("mlflow")
    return [str(mlflow) if mlflow.exists() else "mlflow", "server",
            "--backend-store-uri", tracking_uri, "--host", host, "--port", str(port),
            "--workers", "1"]


def start_server(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000,
                 timeout_s: float = 90.0) -> subprocess.Popen:
    """Start `mlflow server` for a local store and wait until it answers /health."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.exists():
            raise TrackingError(f"no tracking store at {db} (run a sweep first, or pass "
                                f"--tracking-uri)")
    # The server's log goes to a file: a pipe nobody reads would fill up and block it.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(server_command(tracking_uri, host, port), stdout=subprocess.DEVNULL,
                            stderr=log, start_new_session=True)
    deadline = time.time() + timeout_s
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                log.seek(0)
                err = log.read().decode(errors="replace").strip().splitlines()
                raise TrackingError(f"the MLflow UI did not start: "
                                    f"{err[-1] if err else 'exited'}")
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        return proc
            except OSError:
                time.sleep(0.5)
    except BaseException:
        # Ctrl-C while it starts: the server runs in its own session, so stop it here.
        stop_server(proc)
        raise
    stop_server(proc)
    raise TrackingError(f"the MLflow UI did not answer on {host}:{port} within {timeout_s:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (gunicorn/uvicorn workers included)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def run_ui(args) -> int:
    tracking_uri = resolve_tracking_uri(args.tracking_uri, None)
    if tracking_uri.startswith(("http://", "https://")):
        # Already a tracking server: it serves its own UI.
        print(experiment_url(tracking_uri.rstrip("/"), tracking_uri, args.experiment))
        return 0
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: the UI will listen on {args.host}, reachable from other machines",
              file=sys.stderr)
    # SIGTERM unwinds like Ctrl-C, so the server (in a session of its own) is stopped too.
    # Started in the background by a shell script, the UI inherits SIGINT ignored: Ctrl-C
    # (`kill -INT`) stops it all the same.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    proc = start_server(tracking_uri, args.host, args.port)
    try:
        url = experiment_url(f"http://{args.host}:{args.port}", tracking_uri, args.experiment)
        print(f"MLflow UI for {redact(tracking_uri)}: {url}  (Ctrl-C stops it)", flush=True)
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_server(proc)
    return 0


def add_ui_arguments(p) -> None:
    p.add_argument("--tracking-uri", help="default $MLFLOW_TRACKING_URI, else ./mlflow.db")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--experiment", help="the experiment whose URL is printed "
                                        "(default: the newest sweep's)")
