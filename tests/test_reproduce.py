"""`mtsweep reproduce`: a trial of a real (small) sweep is trained again in-process and matches its
recorded metrics exactly on the CPU; a tampered config does not; an unknown run id is one line."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import tiny_dict
from .test_sweep import _mtsweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, demo_dir, cache_dir) -> dict:
    """A two-trial grid sweep (optim.lr 1e-3 / 2e-3), one one-CPU worker per trial."""
    folder = tmp_path_factory.mktemp("reproduce-sweep")
    base = tiny_dict(demo_dir, epochs=2)
    base["data"]["train_limit"] = {"sst": 64, "para": 64, "sts": 64}
    base["data"]["dev_limit"] = {"sst": 32, "para": 32, "sts": 32}
    spec = {
        "name": "repro",
        "base": base,
        "space": {"optim.lr": [1e-3, 2e-3]},
        "search": {"algorithm": "grid", "num_samples": 2, "max_concurrent": 1},
        "scheduler": {"name": "fifo"},
        "resources": {"workers": 1, "cpus_per_worker": 1},
    }
    path = folder / "repro.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    r = _mtsweep(["launch", str(path), "--json"], cwd=folder, MTSWEEP_CACHE=str(cache_dir))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert [t["status"] for t in out["trials"]] == ["FINISHED", "FINISHED"]
    return {"dir": folder, "uri": f"sqlite:///{folder / 'mlflow.db'}", "summary": out,
            "cache": str(cache_dir)}


def _client(sweep: dict):
    from mlflow.tracking import MlflowClient

    return MlflowClient(sweep["uri"])


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_reproduction_matches_exactly_and_is_recorded(sweep):
    trial = sweep["summary"]["trials"][0]
    r = _mtsweep(["reproduce", trial["run_id"], "--tracking-uri", sweep["uri"], "--json"],
                 cwd=sweep["dir"], MTSWEEP_CACHE=sweep["cache"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = _last_json(r.stdout)
    assert out["match"] is True and out["run_id"] == trial["run_id"]
    assert out["compared_epoch"] == 2
    metrics = out["metrics"]
    assert {"sst_acc", "para_acc", "sts_corr", "overall", "train_loss_sst"} <= set(metrics)
    assert not {"train_seconds", "epoch_seconds", "examples_per_second"} & set(metrics)
    for name, m in metrics.items():
        assert m["recorded"] == m["reproduced"] and m["diff"] == 0, name
    assert "| metric" in r.stdout and "reproduced: all" in r.stdout
    assert "(recorded) vs" not in r.stderr, r.stderr  # same code, same packages
    assert "Traceback" not in r.stderr

    c = _client(sweep)
    new = c.get_run(out["reproduction_run_id"])
    assert new.info.status == "FINISHED"
    assert new.info.run_name == f"reproduce-{trial['run_id'][:8]}"
    assert new.data.tags["mtsweep.reproduces"] == trial["run_id"]
    assert new.data.tags["mtsweep.kind"] == "reproduction"
    assert new.data.tags["mtsweep.threads"] == "1" and new.data.tags["mtsweep.device"] == "cpu"
    assert new.data.params["optim.lr"] == c.get_run(trial["run_id"]).data.params["optim.lr"]
    assert [h.step for h in c.get_metric_history(new.info.run_id, "overall")] == [1, 2]
    assert "config/trial_config.yaml" in {a.path for a in c.list_artifacts(new.info.run_id,
                                                                           "config")}


def test_the_recorded_reproduce_command_runs_as_written(sweep):
    trial = sweep["summary"]["trials"][1]
    command = _client(sweep).get_run(trial["run_id"]).data.tags["mtsweep.reproduce_command"]
    argv = shlex.split(command)
    assert argv[:3] == ["mtsweep", "reproduce", trial["run_id"]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MTSWEEP_CACHE": sweep["cache"],
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    r = subprocess.run(argv, cwd=sweep["dir"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "reproduced: all" in r.stdout


def test_a_tampered_config_does_not_reproduce(sweep):
    """The recorded config's learning rate is changed behind the run's back: exit 1, with the
    differing metrics shown."""
    from mlflow.artifacts import download_artifacts

    trial = sweep["summary"]["trials"][0]
    run_id = trial["run_id"]
    c = _client(sweep)
    local = download_artifacts(run_id=run_id, artifact_path="config/trial_config.yaml",
                               dst_path=str(sweep["dir"] / "tamper"), tracking_uri=sweep["uri"])
    original = Path(local).read_text()
    config = yaml.safe_load(original)
    config["optim"]["lr"] = 5 * float(config["optim"]["lr"])
    c.log_text(run_id, yaml.safe_dump(config, sort_keys=False), "config/trial_config.yaml")
    try:
        r = _mtsweep(["reproduce", run_id, "--tracking-uri", sweep["uri"], "--json"],
                     cwd=sweep["dir"], MTSWEEP_CACHE=sweep["cache"])
    finally:
        c.log_text(run_id, original, "config/trial_config.yaml")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    out = _last_json(r.stdout)
    assert out["match"] is False
    differ = [k for k, m in out["metrics"].items() if m["diff"]]
    assert "train_loss_sst" in differ and "lr" in differ
    assert "NOT reproduced" in r.stdout and "train_loss_sst" in r.stdout.split("differ:")[-1]
    assert any(line.startswith("| train_loss_sst") and "| NO" in line
               for line in r.stdout.splitlines())


def test_unknown_run_id_is_one_line(sweep):
    r = _mtsweep(["reproduce", "0123456789abcdef0123456789abcdef", "--tracking-uri",
                  sweep["uri"]], cwd=sweep["dir"], timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not found" in lines[0] and "Traceback" not in r.stderr
    assert "0123456789abcdef0123456789abcdef" in lines[0] and "mlflow.db" in lines[0]


def test_a_trial_stopped_early_is_compared_at_its_last_epoch(sweep):
    """A copy of a trial that only reached epoch 1 (as ASHA leaves it): compared at epoch 1."""
    from mlflow.entities import Metric

    trial = sweep["summary"]["trials"][1]
    c = _client(sweep)
    run = c.get_run(trial["run_id"])
    stopped = c.create_run(run.info.experiment_id, run_name="stopped",
                           tags={"mtsweep.kind": "trial", "mtsweep.stopped_early": "true",
                                 "mlflow.parentRunId": sweep["summary"]["parent_run_id"]})
    sid = stopped.info.run_id
    config = c.download_artifacts(run.info.run_id, "config/trial_config.yaml",
                                  str(sweep["dir"] / "stopped"))
    c.log_artifact(sid, config, "config")
    first = [Metric(name, h.value, h.timestamp, h.step) for name in run.data.metrics
             for h in c.get_metric_history(run.info.run_id, name) if h.step == 1]
    c.log_batch(sid, metrics=first)
    c.set_terminated(sid, "KILLED")
    r = _mtsweep(["reproduce", sid, "--tracking-uri", sweep["uri"], "--json"],
                 cwd=sweep["dir"], MTSWEEP_CACHE=sweep["cache"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = _last_json(r.stdout)
    assert out["match"] is True and out["compared_epoch"] == 1
    assert "reached epoch 1 of 2 (stopped early by the scheduler)" in r.stdout
    assert out["metrics"]["overall"]["recorded"] == c.get_metric_history(
        run.info.run_id, "overall")[0].value


def test_reproduction_as_a_one_trial_ray_run(sweep):
    """`--ray`: the recorded trial's resources, Ray Train workers, the same numbers."""
    trial = sweep["summary"]["trials"][0]
    ray_temps = set(Path("/tmp").glob("mtsw-ray-*"))
    r = _mtsweep(["reproduce", trial["run_id"], "--tracking-uri", sweep["uri"], "--ray",
                  "--json"], cwd=sweep["dir"], MTSWEEP_CACHE=sweep["cache"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = _last_json(r.stdout)
    assert out["match"] is True and "on Ray: 1 worker(s)" in r.stdout
    assert all(m["diff"] == 0 for m in out["metrics"].values())
    # The local Ray's temp folder is removed after a reproduction that ran well.
    assert set(Path("/tmp").glob("mtsw-ray-*")) <= ray_temps


@pytest.mark.parametrize("resources,said,tag,param", [
    ({"compile": True}, "encoder compiled", ("mtsweep.compile", "true"),
     ("resources.compile", "True")),
    ({"attention": "packed"}, "packed attention", ("mtsweep.attention", "packed"),
     ("resources.attention", "packed")),
], ids=["compiled", "packed"])
def test_a_trial_is_reproduced_as_it_ran(tmp_path, demo_dir, cache_dir, resources, said, tag,
                                         param):
    """`resources.compile: true` / `resources.attention: packed`: the trial trains that way,
    the sweep run records it, and `reproduce` does the same (training the other way draws
    its dropout masks differently, so only a reproduction that does matches exactly)."""
    base = tiny_dict(demo_dir, epochs=1)
    base["encoder"]["attention_dropout"] = 0.0  # packed attention has none
    base["data"]["train_limit"] = {"sst": 48, "para": 48, "sts": 48}
    base["data"]["dev_limit"] = {"sst": 24, "para": 24, "sts": 24}
    spec = {"name": "asran", "base": base, "space": {"optim.lr": [1e-3]},
            "search": {"algorithm": "grid", "num_samples": 1},
            "scheduler": {"name": "fifo"},
            "resources": {"workers": 1, "cpus_per_worker": 1, **resources}}
    path = tmp_path / "asran.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    r = _mtsweep(["launch", str(path), "--json"], cwd=tmp_path, MTSWEEP_CACHE=str(cache_dir))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    trial = _last_json(r.stdout)["trials"][0]
    assert trial["status"] == "FINISHED"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = _mtsweep(["reproduce", trial["run_id"], "--tracking-uri", uri, "--json"],
                 cwd=tmp_path, MTSWEEP_CACHE=str(cache_dir))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = _last_json(r.stdout)
    assert out["match"] is True, out["metrics"]
    assert said in r.stdout
    c = _client({"uri": uri})
    assert c.get_run(out["reproduction_run_id"]).data.tags[tag[0]] == tag[1]
    parent = c.get_run(trial["run_id"]).data.tags["mlflow.parentRunId"]
    assert c.get_run(parent).data.params[param[0]] == param[1]


def test_a_sweep_run_is_not_reproduced(sweep):
    parent = sweep["summary"]["parent_run_id"]
    r = _mtsweep(["reproduce", parent, "--tracking-uri", sweep["uri"]], cwd=sweep["dir"])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"error: run {parent} is a sweep run; reproduce one of its "
                                f"trial runs (mtsweep report {parent} lists them, best first)")
