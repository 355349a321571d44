"""Faults a sweep survives, made to happen for real on a Ray cluster of three nodes simulated on
this machine (`ray.cluster_utils.Cluster`: a head without CPUs, two 2-CPU nodes).

One sweep runs three trials of the same config, one after the other, each on 2 DDP workers:
  1. undisturbed (the reference),
  2. one of its training workers is killed (SIGKILL) after its first epoch checkpoint,
  3. the node running its training workers is removed after its first epoch checkpoint.
Trials 2 and 3 must go on from their checkpoint (on the other node for 3), continue their MLflow
run, and end with exactly the reference's metrics; trial 1 must not be re-run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import tiny_dict

pytestmark = pytest.mark.slow

METRICS = ("sst_acc", "para_acc", "sts_corr", "overall")
EPOCHS = 3


def _train_dirs(storage: Path) -> list[Path]:
    """The Ray Train folders of the sweep's trials, in the order the trials started."""
    return sorted((storage / "train").glob("train-*"), key=lambda p: p.stat().st_mtime)


def _wait_for(predicate, what: str, proc: subprocess.Popen, log: Path, timeout: float = 400,
              poll: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = predicate()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before {what}:\n{log.read_text()[-4000:]}")
        time.sleep(poll)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def _trial_processes(root: int) -> list[int]:
    """The Ray Tune trial processes (`ray::ImplicitFunc`) among the descendants of `root` (the
    launch, whose local Ray's raylet starts the workers)."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == root:
                return True
        return False

    return [pid for pid, cmd in commands.items()
            if cmd.startswith(b"ray::ImplicitFunc") and descends(pid)]


def registered_checkpoint(train_dir: Path) -> bool:
    """Ray Train has registered an epoch checkpoint of this run (not only written its folder):
    a restart will resume from it."""
    snapshot = train_dir / "checkpoint_manager_snapshot.json"
    try:
        return '"checkpoint_dir_name":"epoch-' in snapshot.read_text().replace(" ", "")
    except OSError:
        return False


def _checkpoint_of_trial(storage: Path, index: int):
    def check():
        dirs = _train_dirs(storage)
        if len(dirs) > index and registered_checkpoint(dirs[index]):
            return dirs[index]
        return None

    return check


def _train_worker_actors():
    from ray.util.state import list_actors

    return list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
                       detail=True)


@pytest.fixture(scope="module")
def faulty_sweep(tmp_path_factory, demo_dir, cache_dir):
    import ray
    from ray.cluster_utils import Cluster

    tmp = tmp_path_factory.mktemp("faults")
    base = tiny_dict(demo_dir, epochs=EPOCHS)
    # Long enough epochs (a few seconds) that the faults land mid-training.
    base["data"]["train_limit"] = {"sst": 800, "para": 800, "sts": 800}
    base["data"]["dev_limit"] = {"sst": 64, "para": 64, "sts": 64}
    sweep = {
        "name": "faults", "base": base,
        "search": {"algorithm": "random", "num_samples": 3, "max_concurrent": 1, "seed": 0},
        "resources": {"workers": 2, "cpus_per_worker": 1},
        "failures": {"worker_restarts": 2, "trial_retries": 1},
        "checkpoints": {"keep": 1},
    }
    path = tmp / "faults.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    storage = tmp / "runs"
    log = tmp / "launch.log"

    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "600"
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1"})
    nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "MTSWEEP_CACHE": str(cache_dir), "RAY_ADDRESS": cluster.address}
    env.pop("MLFLOW_TRACKING_URI", None)
    events: dict = {}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "launch", str(path), "--json",
             "--storage", str(storage), "--address", cluster.address],
            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=out, text=True)
    try:
        # Trial 2: kill one of its training workers once its first checkpoint is saved.
        _wait_for(_checkpoint_of_trial(storage, 1), "trial 2's first checkpoint", proc, log)
        actors = _wait_for(_train_worker_actors, "trial 2's workers", proc, log)
        events["killed_pid"] = actors[0].pid
        os.kill(actors[0].pid, signal.SIGKILL)

        # Trial 3: remove the node its training workers run on.
        _wait_for(_checkpoint_of_trial(storage, 2), "trial 3's first checkpoint", proc, log)
        actors = _wait_for(_train_worker_actors, "trial 3's workers", proc, log)
        node_id = actors[0].node_id
        node = next(n for n in nodes if n.node_id == node_id)
        events["removed_node"] = node_id
        cluster.remove_node(node, allow_graceful=False)

        stdout, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
        ray.shutdown()
        cluster.shutdown()
    text = log.read_text()
    assert proc.returncode == 0, text[-5000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    return {"summary": summary, "log": text, "tmp": tmp, "storage": storage, **events}


def _runs_in_start_order(faulty_sweep):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{faulty_sweep['tmp'] / 'mlflow.db'}")
    parent = faulty_sweep["summary"]["parent_run_id"]
    runs = client.search_runs(["1"], f"tags.`mlflow.parentRunId` = '{parent}'",
                              order_by=["attributes.start_time ASC"])
    return client, runs


def _final(run) -> dict[str, float]:
    return {k: run.data.metrics[k] for k in METRICS}


def _steps(client, run, metric="overall") -> list[int]:
    return sorted(h.step for h in client.get_metric_history(run.info.run_id, metric))


def test_each_trial_has_one_finished_run(faulty_sweep):
    client, runs = _runs_in_start_order(faulty_sweep)
    assert len(runs) == 3, "a restarted trial continues its run rather than opening another"
    assert [r.info.status for r in runs] == ["FINISHED"] * 3
    assert client.get_run(faulty_sweep["summary"]["parent_run_id"]).info.status == "FINISHED"


def test_completed_trial_is_not_rerun(faulty_sweep):
    client, runs = _runs_in_start_order(faulty_sweep)
    reference = runs[0]
    assert "mtsweep.resumed_from" not in reference.data.tags
    assert _steps(client, reference) == list(range(1, EPOCHS + 1))


@pytest.mark.parametrize("index,fault", [(1, "killed worker"), (2, "lost node")])
def test_trial_resumes_from_its_checkpoint_with_the_reference_metrics(faulty_sweep, index,
                                                                       fault):
    client, runs = _runs_in_start_order(faulty_sweep)
    run = runs[index]
    resumed = run.data.tags.get("mtsweep.resumed_from", "")
    assert resumed.startswith("epoch-"), f"{fault}: the trial did not go on from a checkpoint"
    resumed_epoch = int(resumed.split("-")[1])
    assert 1 <= resumed_epoch < EPOCHS
    steps = _steps(client, run)
    # Epochs up to the checkpoint were not trained (so not logged) again.
    assert steps.count(1) == 1, f"{fault}: epoch 1 was trained twice: steps {steps}"
    assert set(steps) == set(range(1, EPOCHS + 1))
    assert _final(run) == pytest.approx(_final(runs[0]), abs=1e-6), fault


def test_checkpoints_are_kept_per_the_sweep_policy(faulty_sweep):
    # checkpoints.keep: 1 → the best epoch by the metric, plus the latest (a restart's).
    for train_dir in _train_dirs(faulty_sweep["storage"]):
        kept = sorted(p.name for p in train_dir.glob("epoch-*"))
        assert 1 <= len(kept) <= 2 and f"epoch-{EPOCHS}" in kept, (train_dir, kept)


def test_killed_one_worker_trial_process_is_rerun_from_its_checkpoint(tmp_path, demo_dir,
                                                                      cache_dir):
    """A one-worker trial trains in its Ray Tune trial process (no Ray Train worker group). That
    process is SIGKILLed after the trial's first checkpoint: Ray Tune re-runs the trial
    (`worker_restarts` + `trial_retries` times at most), which goes on from its own checkpoint in
    the same MLflow run and ends with exactly the metrics of an undisturbed copy of it."""
    from mlflow.tracking import MlflowClient

    base = tiny_dict(demo_dir, epochs=EPOCHS)
    base["data"]["train_limit"] = {"sst": 800, "para": 800, "sts": 800}
    base["data"]["dev_limit"] = {"sst": 64, "para": 64, "sts": 64}
    sweep = {"name": "killed", "base": base,
             # Two copies of one trial (a tag is recorded, not applied): one is disturbed.
             "space": {"tag.copy": ["first", "second"]},
             "search": {"algorithm": "grid", "max_concurrent": 1},
             "resources": {"workers": 1, "cpus_per_worker": 1},
             "failures": {"worker_restarts": 1, "trial_retries": 0}}
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    storage, log = tmp_path / "runs", tmp_path / "launch.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "MTSWEEP_CACHE": str(cache_dir)}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)

    def first_checkpoint():
        """(trial id, its process) once a trial has saved a checkpoint: the trial is then
        killed at once, whatever it is doing (the epoch may not be logged yet)."""
        done = sorted(storage.glob("train/train-*/epoch-*/done.json"))
        if not done:
            return None
        pids = _trial_processes(proc.pid)
        assert len(pids) == 1, f"one trial at a time, found trial processes {pids}"
        return done[0].parents[1].name.removeprefix("train-"), pids[0]

    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "launch", str(path), "--json",
             "--storage", str(storage)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
            stderr=out, text=True)
    try:
        trial_id, pid = _wait_for(first_checkpoint, "the first trial's first checkpoint", proc,
                                  log, poll=0.02)
        os.kill(pid, signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-5000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = {r.data.tags["mtsweep.ray_trial_id"]: r for r in client.search_runs(
        ["1"], f"tags.`mlflow.parentRunId` = '{summary['parent_run_id']}'")}
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs.values())
    killed = runs.pop(trial_id)
    other = next(iter(runs.values()))
    assert killed.data.tags.get("mtsweep.resumed_from", "").startswith("epoch-"), killed.data.tags
    assert "mtsweep.resumed_from" not in other.data.tags
    steps = _steps(client, killed)
    assert steps == list(range(1, EPOCHS + 1)), f"an epoch was trained (logged) twice: {steps}"
    assert _final(killed) == pytest.approx(_final(other), abs=1e-6)
