"""An interrupted sweep (Ctrl-C, SIGTERM or SIGKILL of the driver) continues with `mtsweep
resume`: completed trials are kept, unfinished ones go on from their checkpoints, the sweep
reaches the number of trials asked for, MLflow runs are not duplicated."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, tiny_dict
from .test_sweep import _mtsweep

pytestmark = pytest.mark.slow


def _env(cache_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MTSWEEP_CACHE": str(cache_dir)}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _interrupt(args, cwd, env, until, sig, log: Path, timeout=400):
    """Run `mtsweep ARGS`, wait until `until()` is true, send `sig`; return (exit status,
    stderr)."""
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd,
                                env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
    deadline = time.time() + timeout
    try:
        while not until():
            if proc.poll() is not None:
                pytest.fail(f"mtsweep {args[0]} ended before the interruption:\n"
                            f"{log.read_text()[-4000:]}")
            if time.time() > deadline:
                pytest.fail(f"timed out before the interruption:\n{log.read_text()[-4000:]}")
            time.sleep(0.1)
        proc.send_signal(sig)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, log.read_text()


def _checkpointed_trials(storage: Path, since: float = 0.0) -> int:
    """Trials with a complete epoch checkpoint (a one-worker trial saves its own, marked
    complete by `done.json`) saved after `since`."""
    return sum(1 for d in (storage / "train").glob("train-*")
               if any(f.stat().st_mtime > since for f in d.glob("epoch-*/done.json")))


def _state_saved_running(folder: Path, t: float) -> bool:
    """The sweep's state was saved after `t` with a trial running."""
    for f in folder.glob("experiment_state*.json"):
        if f.stat().st_mtime <= t:
            continue
        try:
            trials = json.loads(f.read_text())["trial_data"]
        except (OSError, ValueError, KeyError):
            continue  # being written
        if any(json.loads(state)["status"] == "RUNNING" for state, _ in trials):
            return True
    return False


def test_interrupted_sweep_resumes_to_completion(tmp_path, demo_dir, cache_dir):
    """Ctrl-C after trial 1, SIGTERM in the middle of trial 2 (after its first checkpoint),
    SIGKILL in the middle of trial 3 (likewise): each time `mtsweep resume` goes on, and the sweep ends
    with the 3 trials asked for, each one MLflow run, the interrupted ones continued from their
    checkpoints."""
    from mlflow.tracking import MlflowClient

    base = tiny_dict(demo_dir, epochs=3)
    base["data"]["train_limit"] = {"sst": 800, "para": 800, "sts": 800}
    base["data"]["dev_limit"] = {"sst": 32, "para": 32, "sts": 32}
    sweep = {"name": "resumable", "base": base,
             "space": {"optim.lr": {"float": [5e-4, 3e-3], "log": True}},
             "search": {"algorithm": "tpe", "num_samples": 3, "max_concurrent": 1, "seed": 2},
             "resources": {"workers": 1, "cpus_per_worker": 1}}
    path = tmp_path / "resumable.yaml"
    path.write_text(yaml.safe_dump(sweep))
    # Ray Tune saves the sweep's state at most every 10 s by default; a trial here lasts a few
    # seconds, so step 3 could only catch one running with the state saved every second.
    env = {**_env(cache_dir), "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    storage = tmp_path / "runs"

    # 1. Ctrl-C once the first trial has finished.
    status, err = _interrupt(["launch", str(path)], tmp_path, env,
                             lambda: " 1 done" in (tmp_path / "launch.log").read_text(),
                             signal.SIGINT, tmp_path / "launch.log")
    assert status == 130, err[-3000:]
    assert "mtsweep resume " in err
    folder = Path(err.split("mtsweep resume ", 1)[1].split()[0])
    meta = json.loads((folder / "mtsweep-sweep.json").read_text())
    parent_id = meta["parent_run_id"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(parent_id).info.status == "KILLED"

    def children():
        return client.search_runs(["1"], f"tags.`mlflow.parentRunId` = '{parent_id}'",
                                  order_by=["attributes.start_time ASC"])

    first = [r.info.run_id for r in children() if r.info.status == "FINISHED"]
    assert len(first) == 1, "the first trial finished before the interruption"

    # 2. SIGTERM (e.g. a batch scheduler) once the resumed sweep has saved a checkpoint.
    resumed = time.time()
    status, err = _interrupt(["resume", str(storage)], REPO, env,
                             lambda: _checkpointed_trials(storage, since=resumed) >= 1,
                             signal.SIGTERM, tmp_path / "resume1.log")
    assert status == 128 + signal.SIGTERM, err[-3000:]
    assert f"mtsweep resume {folder}" in err

    # 3. SIGKILL in trial 3, once the sweep's state has been saved with it running.
    since = {}

    def trial3_saved():
        if _checkpointed_trials(storage) >= 3:
            since.setdefault("t", time.time())
            return _state_saved_running(folder, since["t"])
        return False

    status, err = _interrupt(["resume", str(storage)], REPO, env, trial3_saved,
                             signal.SIGKILL, tmp_path / "resume2.log")
    assert status == -signal.SIGKILL
    time.sleep(3)  # the killed driver's local Ray goes down with it

    # 4. To the end.
    r = _mtsweep(["resume", str(storage), "--json"], cwd=REPO, MTSWEEP_CACHE=str(cache_dir))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert str(folder) in r.stdout
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["parent_run_id"] == parent_id
    runs = children()
    assert len(runs) == len(out["trials"]) == 3, "as many trials as asked for, no duplicates"
    assert [c.info.status for c in runs] == ["FINISHED"] * 3
    # Trial 1 was not re-run; trials 2 and 3 went on from their epoch-1 checkpoints.
    assert runs[0].info.run_id == first[0]
    assert "mtsweep.resumed_from" not in runs[0].data.tags
    for run in runs:
        steps = [h.step for h in client.get_metric_history(run.info.run_id, "overall")]
        assert set(steps) == {1, 2, 3} and steps.count(1) == 1, (run.info.run_name, steps)
    for run in runs[1:]:  # (epoch-3 when the stop came as the trial was finishing)
        assert run.data.tags.get("mtsweep.resumed_from", "").startswith("epoch-"), \
            run.info.run_name
    lrs = {c.data.params["optim.lr"] for c in runs}
    assert len(lrs) == 3, "the search went on proposing new points"
    assert client.get_run(parent_id).info.status == "FINISHED"


def test_ctrl_c_in_the_last_trial_is_an_interruption(tmp_path, demo_dir, cache_dir):
    """Ctrl-C while the sweep's last trial runs (every trial asked for exists, and Ray Tune
    marks the one it stops as terminated): the sweep still ends as interrupted — exit 130, the
    sweep run and the trial's run KILLED, the resume command printed — and `mtsweep
    resume` trains that trial to its end, in the same run."""
    from mlflow.tracking import MlflowClient

    base = tiny_dict(demo_dir, epochs=3)
    base["data"]["train_limit"] = {"sst": 800, "para": 800, "sts": 800}
    base["data"]["dev_limit"] = {"sst": 32, "para": 32, "sts": 32}
    sweep = {"name": "last", "base": base, "space": {"optim.lr": [1e-3]},
             "search": {"algorithm": "grid", "max_concurrent": 1},
             "resources": {"workers": 1, "cpus_per_worker": 1}}
    path = tmp_path / "last.yaml"
    path.write_text(yaml.safe_dump(sweep))
    storage = tmp_path / "runs"
    status, err = _interrupt(["launch", str(path)], tmp_path, _env(cache_dir),
                             lambda: _checkpointed_trials(storage) >= 1,
                             signal.SIGINT, tmp_path / "launch.log")
    assert status == 130, err[-3000:]
    assert "interrupted: the sweep run is marked KILLED" in err and "mtsweep resume " in err
    folder = Path(err.split("mtsweep resume ", 1)[1].split()[0])
    meta = json.loads((folder / "mtsweep-sweep.json").read_text())
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(meta["parent_run_id"]).info.status == "KILLED"
    trial, = client.search_runs(["1"], f"tags.`mlflow.parentRunId` = '{meta['parent_run_id']}'")
    # Its run is closed as KILLED until the resume continues it.
    assert trial.info.status == "KILLED" and trial.data.metrics["epoch"] < 3

    # A resume that cannot work is one line and changes nothing: the sweep file edited since
    # the launch, another tracking store, Ray Tune's state missing.
    original = path.read_text()
    path.write_text(original.replace("epochs: 3", "epochs: 1"))
    r = _mtsweep(["resume", str(folder)], cwd=REPO, MTSWEEP_CACHE=str(cache_dir))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"error: {path}: changed since the sweep was launched" in r.stderr
    path.write_text(original)
    other = tmp_path / "other.db"
    r = _mtsweep(["resume", str(folder), "--tracking-uri", f"sqlite:///{other}"], cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"run {meta['parent_run_id']} not found" in r.stderr and not other.exists()
    copy = tmp_path / "copy" / folder.name
    shutil.copytree(folder, copy)
    (copy / "tuner.pkl").unlink()
    r = _mtsweep(["resume", str(copy)], cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "saved state of the sweep is missing" in r.stderr
    assert client.get_run(meta["parent_run_id"]).info.status == "KILLED"

    r = _mtsweep(["resume", str(folder), "--json"], cwd=REPO, MTSWEEP_CACHE=str(cache_dir))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert [t["run_id"] for t in out["trials"]] == [trial.info.run_id]
    done = client.get_run(trial.info.run_id)
    assert done.info.status == "FINISHED" and done.data.metrics["epoch"] == 3
    assert client.get_run(meta["parent_run_id"]).info.status == "FINISHED"


@pytest.mark.parametrize("scheme", ["local", "uri"])
def test_sweep_metadata_on_local_and_uri_storage(tmp_path, scheme):
    """`mtsweep resume` finds the newest sweep inside the launch's --storage, a local folder or
    a storage URI (read and written through pyarrow's filesystems, as Ray's storage is)."""
    from orchestrator.launch import _write_meta, join_storage
    from orchestrator.resume import _META_KEYS, ResumeError, find_sweep_folder, read_meta

    storage = str(tmp_path) if scheme == "local" else tmp_path.as_uri()
    record = dict.fromkeys(_META_KEYS, "")
    for name in ("old-sweep", "new-sweep"):
        _write_meta(join_storage(storage, name), {**record, "run_name": name})
        time.sleep(0.05)
    folder = find_sweep_folder(storage)
    assert folder == join_storage(storage, "new-sweep")
    assert read_meta(folder) == {**record, "run_name": "new-sweep"}
    assert find_sweep_folder(join_storage(storage, "old-sweep")) == join_storage(
        storage, "old-sweep")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ResumeError, match="no sweep to resume"):
        find_sweep_folder(str(empty) if scheme == "local" else empty.as_uri())
    broken = join_storage(storage, "broken")
    _write_meta(broken, {"run_name": "x"})
    with pytest.raises(ResumeError, match="not a sweep record written by mtsweep launch "
                                          r"\(missing: sweep_file, overrides"):
        read_meta(broken)
    if scheme == "local":
        (tmp_path / "broken" / "mtsweep-sweep.json").write_text('{"sweep_file": ')
        with pytest.raises(ResumeError, match="mtsweep-sweep.json: not valid JSON"):
            read_meta(broken)
