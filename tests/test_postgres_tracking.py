"""A real sweep recorded on a real MLflow tracking server backed by PostgreSQL: the set-up of
infra/tracking (MLflow server, PostgreSQL backend store, artifacts served by the server) without
the containers. PostgreSQL runs from the Debian binaries in a temporary folder, listening on
127.0.0.1 only; the server reads the database password from PGPASSWORD, never from a URI."""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .conftest import tiny_dict
from .test_sweep import _mtsweep

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin (Debian), else initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Postgres:
    bindir: Path
    port: int
    user: str
    database: str
    password: str

    def psql(self, sql: str) -> str:
        r = subprocess.run(
            [str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
             "-d", self.database, "-tAc", sql],
            env={**os.environ, "PGPASSWORD": self.password}, capture_output=True, text=True,
            timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()


@pytest.fixture(scope="module")
def postgres():
    bindir = _postgres_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; install the Debian "
                    "package postgresql (.ci/run does)")
    as_postgres: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` system user to run "
                        "PostgreSQL as (initdb refuses root)")
        if not shutil.which("runuser"):
            pytest.skip("running as root without `runuser` to start PostgreSQL as `postgres`")
        as_postgres = [shutil.which("runuser"), "-u", "postgres", "--"]

    # Under /tmp with a short name: the folder holds the Unix socket too, and the postgres
    # user must be able to reach it (pytest's tmp_path is private to this user).
    root = Path(tempfile.mkdtemp(prefix="mtsw-pg-", dir="/tmp"))
    password = secrets.token_hex(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if owner:
        os.chown(root, owner.pw_uid, owner.pw_gid)
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    data = root / "data"
    port = _free_port()
    pg = Postgres(bindir, port, "mlflow", "mtsweep", password)

    def run(cmd, **kw):
        r = subprocess.run([*as_postgres, *map(str, cmd)], cwd=root, capture_output=True,
                           text=True, timeout=120, **kw)
        assert r.returncode == 0, f"{cmd[0]}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
        return r

    started = False
    try:
        run([bindir / "initdb", "-D", data, "-U", pg.user, "--pwfile", pwfile,
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale"])
        pwfile.unlink()
        run([bindir / "pg_ctl", "-D", data, "-l", root / "postgres.log", "-w", "-t", "60",
             "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root}", "start"])
        started = True
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                        pg.user, pg.database], env={**os.environ, "PGPASSWORD": password},
                       check=True, capture_output=True, timeout=60)
        yield pg
    finally:
        if started:
            subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast",
                            "-w", "-t", "60", "stop"], cwd=root, capture_output=True, timeout=90)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Server:
    uri: str
    artifacts: Path
    log: Path


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    artifacts = folder / "artifacts"
    log = folder / "server.log"
    port = _free_port()
    env = {**os.environ, "PGPASSWORD": postgres.password}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "mlflow", "server",
           # psycopg 3, named in the URI; no password here: libpq takes it from PGPASSWORD.
           "--backend-store-uri",
           f"postgresql+psycopg://{postgres.user}@127.0.0.1:{postgres.port}/{postgres.database}",
           "--artifacts-destination", str(artifacts),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"mlflow server did not answer in 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield Server(f"http://127.0.0.1:{port}", artifacts, log)
    finally:
        if proc.poll() is None:  # SIGTERM to the group stops the server and its workers
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def test_server_on_postgres_keeps_runs_and_serves_artifacts(tmp_path, postgres, mlflow_server):
    """Without Ray: a run, a metric and an artifact through the server's REST API."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    experiment = client.create_experiment("plain-client")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "overall", 0.5, step=1)
    (tmp_path / "note.txt").write_text("hello")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"), "notes")
    client.set_terminated(run.info.run_id)
    got = client.get_run(run.info.run_id)
    assert got.info.status == "FINISHED" and got.data.metrics["overall"] == 0.5
    assert got.info.artifact_uri.startswith("mlflow-artifacts:")
    assert postgres.psql(f"select status from runs where run_uuid = '{run.info.run_id}'") == (
        "FINISHED")
    assert postgres.psql(f"select count(*) from metrics where key = 'overall' "
                         f"and run_uuid in ('{run.info.run_id}')") == "1"
    assert [p.read_text() for p in mlflow_server.artifacts.rglob("note.txt")] == ["hello"]


def test_sweep_is_recorded_on_a_postgres_backed_tracking_server(
        tmp_path, demo_dir, cache_dir, postgres, mlflow_server):
    from mlflow.tracking import MlflowClient

    base = tiny_dict(demo_dir, epochs=1)
    base["data"]["train_limit"] = {"sst": 48, "para": 48, "sts": 48}
    base["data"]["dev_limit"] = {"sst": 32, "para": 32, "sts": 32}
    sweep = {"name": "on-postgres", "base": base,
             "space": {"optim.lr": {"float": [5e-4, 3e-3], "log": True}},
             "search": {"algorithm": "tpe", "num_samples": 2, "max_concurrent": 2, "seed": 4},
             "resources": {"workers": 1, "cpus_per_worker": 1}}
    path = tmp_path / "on-postgres.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    uri = mlflow_server.uri
    r = _mtsweep(["launch", str(path), "--tracking-uri", uri, "--json"], cwd=tmp_path,
                 MTSWEEP_CACHE=str(cache_dir))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert f"MLflow: {uri} · experiment on-postgres" in r.stdout
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert not (tmp_path / "mlflow.db").exists(), "nothing went to the local default store"

    client = MlflowClient(uri)
    parent = client.get_run(out["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["mtsweep.kind"] == "sweep"
    # Artifacts go through the server (mlflow-artifacts:/...), not to a path the client writes.
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "sweep")] == [
        "sweep/on-postgres.yaml"]
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2 and len(out["trials"]) == 2
    for run in children:
        assert run.info.status == "FINISHED", run.info
        history = client.get_metric_history(run.info.run_id, "overall")
        assert [h.step for h in history] == [1], "one value per epoch, step = epoch"
        for key in ("sst_acc", "para_acc", "sts_corr", "overall_mean", "train_loss_sst"):
            assert key in run.data.metrics
        assert 5e-4 <= float(run.data.params["optim.lr"]) <= 3e-3
        assert "config/trial_config.yaml" in {
            a.path for a in client.list_artifacts(run.info.run_id, "config")}
        local = client.download_artifacts(run.info.run_id, "config/trial_config.yaml",
                                          str(tmp_path))
        config = yaml.safe_load(Path(local).read_text())
        assert config["epochs"] == 1 and config["data"]["dir"] == str(demo_dir)

    # The records are in PostgreSQL; the artifacts in the server's artifacts folder.
    run_ids = {parent.info.run_id, *(c.info.run_id for c in children)}
    in_db = set(postgres.psql("select run_uuid from runs").split())
    assert run_ids <= in_db
    listed = ", ".join(f"'{i}'" for i in sorted(run_ids))
    assert postgres.psql(f"select count(*) from metrics where key = 'overall' "
                         f"and run_uuid in ({listed})") == "2", "one epoch of each trial"
    assert len(list(mlflow_server.artifacts.rglob("trial_config.yaml"))) == 2

    # The database password appears in no output or log.
    for text in (r.stdout, r.stderr, mlflow_server.log.read_text()):
        assert postgres.password not in text
