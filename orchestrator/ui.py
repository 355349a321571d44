"""`mtsweep ui`: the MLflow UI for the project's tracking store, on 127.0.0.1 by default."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from orchestrator.tracking import (
    KIND,
    TrackingError,
    check_reachable,
    client,
    missing_local_store,
    redact,
    redact_uris,
    resolve_tracking_uri,
)


def experiment_url(base: str, tracking_uri: str, experiment: str | None) -> str:
    """The UI address of `experiment` (default: the one with the newest sweep run)."""
    c = client(tracking_uri)
    try:
        exp = c.get_experiment_by_name(experiment) if experiment else None
        if experiment and exp is None:
            raise TrackingError(f"no experiment {experiment!r} in {redact(tracking_uri)}")
        if exp is not None:
            return f"{base}/#/experiments/{exp.experiment_id}/runs"
        runs = c.search_runs(
            [e.experiment_id for e in c.search_experiments()],
            filter_string=f"tags.`{KIND}` = 'sweep'", order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001 - MLflow's message holds the URI, password included
        reason = redact_uris(str(e).splitlines()[0][:300]) if str(e) else type(e).__name__
        raise TrackingError(f"cannot read {redact(tracking_uri)}: {reason}") from None
    if not runs:
        return f"{base}/"
    return f"{base}/#/experiments/{runs[0].info.experiment_id}/runs"


def check_local_store(tracking_uri: str) -> None:
    """A local store must exist: MLflow would create an empty one."""
    why = missing_local_store(tracking_uri)
    if why:
        raise TrackingError(f"no tracking store at {redact(tracking_uri)} ({why}; run a sweep "
                            f"first, or pass --tracking-uri)")


def check_bindable(host: str, port: int) -> None:
    """Bind (host, port) as the server (uvicorn) will, so that a port in use or an address of
    another machine is one prompt error, not a server that exits after seconds."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As uvicorn does: a port a stopped server left in TIME_WAIT counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except socket.gaierror as e:
            why = f"cannot resolve the host {host!r} ({e.strerror or e})"
        except OSError as e:
            why = {errno.EADDRINUSE: f"port {port} is already in use (pick another with --port)",
                   errno.EADDRNOTAVAIL: f"{host} is not an address of this machine",
                   errno.EACCES: f"port {port} needs privileges (pick one ≥ 1024 with --port)",
                   }.get(e.errno, e.strerror or str(e))
        else:
            return
    raise TrackingError(f"cannot listen on {host}:{port}: {why}")


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 0 < n < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}")
    return n


def _server_error(log: bytes) -> str:
    """The line of the server's log that says why it stopped (its last error line; else the
    last line), without the time stamp and level."""
    lines = [ln.strip() for ln in log.decode(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln or "Error" in ln]
    line = (errors or lines or ["it exited"])[-1]
    return redact_uris(line.split("ERROR:", 1)[-1].strip() if "ERROR:" in line else line)


def server_command(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The `mlflow server` command line: it listens on `host` only (127.0.0.1 unless asked)."""
    mlflow = Path(sys.executable).with_name("mlflow")
    return [str(mlflow) if mlflow.exists() else "mlflow", "server",
            "--backend-store-uri", tracking_uri, "--host", host, "--port", str(port),
            "--workers", "1"]


def start_server(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000,
                 timeout_s: float = 90.0) -> subprocess.Popen:
    """Start `mlflow server` for a local store and wait until it answers /health."""
    check_local_store(tracking_uri)
    check_bindable(host, port)
    # The server's log goes to a file: a pipe nobody reads would fill up and block it.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(server_command(tracking_uri, host, port), stdout=subprocess.DEVNULL,
                            stderr=log, start_new_session=True)
    deadline = time.time() + timeout_s
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                log.seek(0)
                raise TrackingError(f"the MLflow UI did not start on {host}:{port}: "
                                    f"{_server_error(log.read())}")
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
        check_reachable(tracking_uri)
        print(experiment_url(tracking_uri.rstrip("/"), tracking_uri, args.experiment))
        return 0
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: the UI will listen on {args.host}, reachable from other machines",
              file=sys.stderr)
    # Checked before the server starts: a missing store or an unknown --experiment fails at
    # once (start_server checks the port before it starts the server).
    check_local_store(tracking_uri)
    check_reachable(tracking_uri)
    url = experiment_url(f"http://{args.host}:{args.port}", tracking_uri, args.experiment)
    # SIGTERM unwinds like Ctrl-C, so the server (in a session of its own) is stopped too.
    # Started in the background by a shell script, the UI inherits SIGINT ignored: Ctrl-C
    # (`kill -INT`) stops it all the same.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    proc = start_server(tracking_uri, args.host, args.port)
    try:
        print(f"MLflow UI for {redact(tracking_uri)}: {url}  (Ctrl-C stops it)", flush=True)
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_server(proc)
    return 0


def add_ui_arguments(p) -> None:
    p.add_argument("--tracking-uri", help="default $MLFLOW_TRACKING_URI, else ./mlflow.db")
    p.add_argument("--port", type=_port, default=5000)
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--experiment", help="the experiment whose URL is printed "
                                        "(default: the newest sweep's)")
