"""The MLflow tracking server goes down in the middle of a sweep and comes back: training is not
killed, a warning is printed, and every epoch's metrics still arrive. The tracking URI carries a
password and the environment a token: neither may end up in a param, tag or output."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from .conftest import tiny_dict

pytestmark = pytest.mark.slow

PASSWORD = "s3cret-pw-4711"
TOKEN = "hf_fake_token_0815"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(tmp: Path, port: int) -> subprocess.Popen:
    log = (tmp / f"server-{time.time():.0f}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
         "--artifacts-destination", str(tmp / "artifacts")],
        cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.5)
    pytest.fail("mlflow server did not answer in 120 s")


def _stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_sweep_survives_a_tracking_outage_and_logs_no_secrets(tmp_path, demo_dir, cache_dir):
    from mlflow.tracking import MlflowClient

    port = _free_port()
    server = _start_server(tmp_path, port)
    uri = f"http://alice:{PASSWORD}@127.0.0.1:{port}"
    base = tiny_dict(demo_dir, epochs=3)
    base["data"]["train_limit"] = {"sst": 800, "para": 800, "sts": 800}
    base["data"]["dev_limit"] = {"sst": 32, "para": 32, "sts": 32}
    sweep = {"name": "outage", "base": base,
             "space": {"optim.lr": [1e-3, 2e-3]},
             "search": {"algorithm": "grid", "max_concurrent": 1},
             "resources": {"workers": 1, "cpus_per_worker": 1}}
    path = tmp_path / "outage.yaml"
    path.write_text(yaml.safe_dump(sweep))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MTSWEEP_CACHE": str(cache_dir),
           "HF_TOKEN": TOKEN}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    client = MlflowClient(f"http://127.0.0.1:{port}")
    log = tmp_path / "launch.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "launch", str(path), "--json",
             "--tracking-uri", uri], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
            stderr=err, text=True)
    try:
        # Take the server down once the first trial has logged its first epoch.
        deadline = time.time() + 400
        while True:
            runs = client.search_runs(["1"], "tags.`mtsweep.kind` = 'trial'")
            if any("overall" in r.data.metrics for r in runs):
                break
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.time() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        _stop_server(server)
        down_at = time.time()
        time.sleep(10)
        assert proc.poll() is None, "the sweep must not die with the tracking server"
        server = _start_server(tmp_path, port)
        outage = time.time() - down_at
        stdout, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        _stop_server(server)
    err = log.read_text()
    assert proc.returncode == 0, err[-5000:]
    assert outage > 10
    assert "WARNING" in err and "MLflow" in err, err[-3000:]
    out = json.loads(stdout.strip().splitlines()[-1])

    server = _start_server(tmp_path, port)
    try:
        parent = client.get_run(out["parent_run_id"])
        trials = client.search_runs(["1"], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert len(trials) == 2 and all(t.info.status == "FINISHED" for t in trials)
        for t in trials:  # every epoch arrived, each once
            steps = sorted(h.step for h in client.get_metric_history(t.info.run_id, "overall"))
            assert steps == [1, 2, 3], steps
        # No secret anywhere a person (or a screenshot of the UI) would see it.
        for run in [parent, *trials]:
            recorded = json.dumps([run.data.params, run.data.tags])
            assert PASSWORD not in recorded and TOKEN not in recorded
        for t in trials:
            assert t.data.tags["mtsweep.reproduce_command"].endswith(
                f"--tracking-uri http://127.0.0.1:{port}")
    finally:
        _stop_server(server)
    assert PASSWORD not in err + stdout and TOKEN not in err + stdout


def test_http_retry_settings_probe_then_requests(monkeypatch):
    """The reachability probe gives up after 1 retry; it leaves no setting behind, so the
    requests after it get the capped defaults (2 retries, 30 s); the user's own settings win."""
    from orchestrator.tracking import TrackingError, check_reachable, client

    names = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
             "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(TrackingError, match="cannot reach the MLflow tracking store"):
        check_reachable(uri)
    assert time.monotonic() - t0 < 20
    client(uri)
    assert [os.environ[n] for n in names] == ["2", "30", "1"]

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(TrackingError):
        check_reachable(f"http://127.0.0.1:{_free_port()}")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"


def test_a_plain_db_path_is_a_sqlite_store(tmp_path, monkeypatch):
    from orchestrator.tracking import resolve_tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri("runs.db", None) == f"sqlite:///{tmp_path / 'runs.db'}"
    assert resolve_tracking_uri("mlruns", None) == (tmp_path / "mlruns").as_uri()
