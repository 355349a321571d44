"""An interrupted sweep (Ctrl-C in the driver) continues with `mtsweep resume`: completed trials
are kept, the sweep reaches the number of trials asked for, MLflow runs are not duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from .conftest import REPO, tiny_dict
from .test_sweep import _mtsweep

pytestmark = pytest.mark.slow


def test_interrupted_sweep_resumes_to_completion(tmp_path, demo_dir, cache_dir):
    from mlflow.tracking import MlflowClient

    base = tiny_dict(demo_dir, epochs=2)
    base["data"]["train_limit"] = {"sst": 48, "para": 48, "sts": 48}
    base["data"]["dev_limit"] = {"sst": 32, "para": 32, "sts": 32}
    sweep = {"name": "resumable", "base": base,
             "space": {"optim.lr": {"float": [5e-4, 3e-3], "log": True}},
             "search": {"algorithm": "tpe", "num_samples": 3, "max_concurrent": 1, "seed": 2},
             "resources": {"workers": 1, "cpus_per_worker": 1}}
    path = tmp_path / "resumable.yaml"
    path.write_text(yaml.safe_dump(sweep))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MTSWEEP_CACHE": str(cache_dir)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "launch", str(path)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    lines = []
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if " 1 done" in line:
            proc.send_signal(signal.SIGINT)  # Ctrl-C after the first trial finished
            break
    rest_out, rest_err = proc.communicate(timeout=300)
    err = "".join(lines) + rest_err
    assert proc.returncode == 130, err[-3000:]
    assert "mtsweep resume " in err
    folder = err.split("mtsweep resume ", 1)[1].split()[0]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent_id = json.loads(next((tmp_path / "runs").glob("*/mtsweep-sweep.json")).read_text())[
        "parent_run_id"]
    assert client.get_run(parent_id).info.status == "KILLED"
    before = {r.info.run_id: r for r in client.search_runs(
        ["1"], f"tags.`mlflow.parentRunId` = '{parent_id}'")}
    done_before = {k for k, r in before.items() if r.info.status == "FINISHED"}
    assert done_before, "the first trial finished before the interruption"

    r = _mtsweep(["resume", str(tmp_path / "runs"), "--json"], cwd=REPO,
                 MTSWEEP_CACHE=str(cache_dir))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert folder in r.stdout
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["parent_run_id"] == parent_id
    children = client.search_runs(["1"], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert len(children) == len(out["trials"]) == 3, "as many trials as asked for, no duplicates"
    assert all(c.info.status == "FINISHED" for c in children)
    for run_id in done_before:  # completed trials were not re-run
        history = client.get_metric_history(run_id, "overall")
        assert [h.step for h in history] == [1, 2]
    lrs = {c.data.params["optim.lr"] for c in children}
    assert len(lrs) == 3, "the search went on proposing new points"
    assert client.get_run(parent_id).info.status == "FINISHED"
