"""A real sweep end to end: Optuna (conditional space) → Ray Tune (ASHA) → Ray Train (2 workers,
gloo) → MLflow records. Plus the CLI paths that start nothing (dry run, bad files)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, tiny_dict


def _mtsweep(args, cwd, timeout=900, **env):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **env}
    full_env.pop("RAY_ADDRESS", None)
    full_env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def test_paper_table3_dry_run_lists_the_rows(tmp_path):
    r = _mtsweep(["launch", str(REPO / "search_spaces" / "paper_table3.yaml"), "--dry-run",
                  "--json"], cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    rows = [p["params"]["tag.experiment"] for p in out["points"]]
    assert len(rows) == 13 and "STS-cross-encoder" in rows and "use-all-data" in rows
    assert "param-bs32-dp0.4-lr2e-5" in r.stdout
    assert not (tmp_path / "mlflow.db").exists(), "a dry run starts nothing"


@pytest.mark.parametrize("text, message", [
    ("base: {}\nsearch: {algorithm: annealing}\n", "search.algorithm"),
    ("base: {}\nspace: {optim.lr: {float: [0.1, 0.01]}}\n", "space.optim.lr"),
    ("base: {}\nresources: {workers: 0}\n", "resources.workers"),
])
def test_bad_sweep_file_is_one_line_and_starts_nothing(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    r = _mtsweep(["launch", str(f)], cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "bad.yaml" in r.stderr and message in r.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def test_unreachable_tracking_server_fails_before_any_trial(tmp_path, demo_dir):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"base": tiny_dict(demo_dir), "search": {"num_samples": 1}}))
    r = _mtsweep(["launch", str(sweep), "--tracking-uri", "http://user:s3cret@127.0.0.1:9"],
                 cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "cannot reach the MLflow tracking store http://user:***@127.0.0.1:9" in r.stderr
    assert "s3cret" not in r.stderr + r.stdout and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


def test_sweeps_started_together_on_a_new_sqlite_store_all_open_it(tmp_path):
    """MLflow creates a new SQLite store's tables when a process first opens it; three
    launches opening the same new store at once must not break each other's set-up."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = ("import sys\n"
            "from orchestrator.tracking import TrackingError, check_reachable\n"
            "try:\n    check_reachable(sys.argv[1])\n"
            "except TrackingError as e:\n    sys.exit(str(e))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, uri], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), results
    from orchestrator.tracking import client, get_or_create_experiment

    get_or_create_experiment(uri, "after")
    assert client(uri).get_experiment_by_name("after") is not None


def test_sweeps_of_one_file_started_in_the_same_second_get_their_own_folders(tmp_path):
    storage = tmp_path / "runs"
    storage.mkdir()  # as check_storage makes it
    code = ("import sys\nfrom orchestrator.launch import new_run_name\n"
            "print(new_run_name(sys.argv[1], 's-20261127-120000'))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(storage)], cwd=REPO, text=True,
                              stdout=subprocess.PIPE) for _ in range(3)]
    names = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert names == ["s-20261127-120000", "s-20261127-120000-2", "s-20261127-120000-3"]
    assert sorted(f.name for f in storage.iterdir()) == names


@contextlib.contextmanager
def _another_local_ray():
    """A second, idle local Ray on this machine, as another sweep or a reproduction would be."""
    temp = tempfile.mkdtemp(prefix="mtsw-other-", dir="/tmp")
    code = ("import ray, sys; ray.init(num_cpus=1, include_dashboard=False, "
            f"_temp_dir={temp!r}, logging_level='ERROR'); print('up', flush=True); "
            "sys.stdin.read(); ray.shutdown()")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",
                                                          "RAY_API_SERVER_ADDRESS")}
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        yield
    finally:
        proc.stdin.close()  # the Ray stops when its input ends
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_sweep_with_conditional_space_asha_and_two_worker_trials(tmp_path, demo_dir, cache_dir):
    from mlflow.tracking import MlflowClient

    base = tiny_dict(demo_dir, epochs=2)
    base["data"]["train_limit"] = {"sst": 96, "para": 96, "sts": 96}
    base["data"]["dev_limit"] = {"sst": 48, "para": 48, "sts": 48}
    base["tasks"]["para"]["head_args"] = {}
    sweep = {
        "name": "e2e",
        "base": base,
        "space": {
            "optim.lr": {"float": [5e-4, 3e-3], "log": True},
            "schedule.name": {"values": ["round_robin", "annealed"],
                              "branches": {"annealed": {"schedule.args.alpha_end":
                                                        {"float": [0.0, 0.5]}}}},
            "tasks.para.head": {"values": ["cosine", "sbert"],
                                "branches": {"cosine": {"tasks.para.head_args.scale": [1.0, 5.0]},
                                             "sbert": {"tasks.para.loss": ["bce", "ce"]}}},
        },
        "search": {"algorithm": "tpe", "metric": "overall", "mode": "max", "num_samples": 2,
                   "max_concurrent": 1, "seed": 1},
        "scheduler": {"name": "asha", "args": {"grace_period": 1, "reduction_factor": 2}},
        "resources": {"workers": 2, "cpus_per_worker": 1},
    }
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    # Another Ray runs on the machine: Ray Train's clean-up of the first trial's workers must
    # still find this sweep's Ray, or the second trial waits for their CPUs forever.
    with _another_local_ray():
        r = _mtsweep(["launch", str(path), "--json"], cwd=tmp_path, timeout=480,
                     MTSWEEP_CACHE=str(cache_dir))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert "local Ray" in r.stdout.splitlines()[0] and "mlflow.db" in r.stdout
    assert "| SST acc | QQP acc | STS r | overall" in r.stdout  # the results table
    assert out["num_samples"] == 2 and len(out["trials"]) == 2

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(out["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["mtsweep.kind"] == "sweep"
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "sweep")] == ["sweep/e2e.yaml"]
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2, "one run per trial, even with 2 workers per trial"
    numbers = set()
    for trial, run in zip(sorted(out["trials"], key=lambda t: t["run_id"]),
                          sorted(children, key=lambda c: c.info.run_id)):
        p, tags, m = run.data.params, run.data.tags, run.data.metrics
        assert trial["run_id"] == run.info.run_id
        # Params: every run has the same columns; conditional ones only in their branch.
        assert p["schedule.name"] == trial["params"]["schedule.name"]
        if p["schedule.name"] == "annealed":
            assert 0.0 <= float(p["schedule.args.alpha_end"]) <= 0.5
        else:
            assert p["schedule.args.alpha_end"] == "n/a"
        assert (p["tasks.para.head_args.scale"] == "n/a") == (p["tasks.para.head"] == "sbert")
        assert 5e-4 <= float(p["optim.lr"]) <= 3e-3 and p["encoder.name"] == "tiny"
        # Per-epoch metrics with step = epoch; status by how far the trial got.
        history = client.get_metric_history(run.info.run_id, "overall")
        epochs = int(m["epoch"])
        assert [h.step for h in history] == list(range(1, epochs + 1))
        assert run.info.status == ("FINISHED" if epochs == 2 else "KILLED")
        assert tags["mtsweep.stopped_early"] == ("false" if epochs == 2 else "true")
        for key in ("sst_acc", "para_acc", "sts_corr", "overall", "train_loss_sst"):
            assert key in m
        numbers.add(tags["mtsweep.optuna_trial_number"])
        assert tags["mtsweep.ray_trial_id"] and tags["mtsweep.seed"] == "3"
        assert tags["mtsweep.version.torch"] and tags["mtsweep.git_commit"]
        assert tags["mtsweep.reproduce_command"].startswith(f"mtsweep reproduce {run.info.run_id}")
        arts = {a.path for d in ("config", "confusion", "predictions")
                for a in client.list_artifacts(run.info.run_id, d)}
        assert {"config/trial_config.yaml", "confusion/confusion-sst.png",
                "confusion/confusion.json", "predictions/sts-dev.parquet"} <= arts
    assert numbers == {"0", "1"}


@pytest.mark.slow
def test_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, demo_dir, cache_dir):
    """One trial raises (its data directory is missing), one diverges (NaN loss, caught within
    10 steps): both end FAILED (MLflow status and error text, Ray Tune error, Optuna told), the
    third trial of the grid still runs, and the sweep run is closed."""
    import pickle

    from mlflow.tracking import MlflowClient

    base = tiny_dict(demo_dir, epochs=1)
    base["data"]["train_limit"] = {"sst": 160, "para": 160, "sts": 160}
    base["data"]["dev_limit"] = {"sst": 32, "para": 32, "sts": 32}
    sweep = {
        "name": "failing",
        "base": base,
        "space": {"tag.case": {
            "values": ["ok", "raises", "diverges"],
            "branches": {"raises": {"data.dir": str(tmp_path / "no-such-data")},
                         "diverges": {"optim.lr": 1.0e6, "optim.max_grad_norm": None}}}},
        "search": {"algorithm": "grid", "max_concurrent": 1},
        "resources": {"workers": 1, "cpus_per_worker": 1},
    }
    path = tmp_path / "failing.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    r = _mtsweep(["launch", str(path), "--json"], cwd=tmp_path, MTSWEEP_CACHE=str(cache_dir))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert "2 failed" in r.stderr and "no-such-data" in r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    by_case = {t["params"]["tag.case"]: t for t in out["trials"]}
    assert {c: t["status"] for c, t in by_case.items()} == {
        "ok": "FINISHED", "raises": "FAILED", "diverges": "FAILED"}
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    raised = client.get_run(by_case["raises"]["run_id"])
    assert "no-such-data" in raised.data.tags["mtsweep.error"]
    diverged = client.get_run(by_case["diverges"]["run_id"]).data.tags["mtsweep.error"]
    assert "loss of task" in diverged and "at epoch 1, step 10" in diverged, diverged[-500:]
    assert client.get_run(out["parent_run_id"]).info.status == "FINISHED"
    assert out["best_run_id"] == by_case["ok"]["run_id"]
    # Each trial's local staging folder (epoch outputs, checkpoint copies) is gone, failed or not.
    staging = Path(tempfile.gettempdir()) / "mtsweep-trials"
    for t in out["trials"]:
        trial_id = client.get_run(t["run_id"]).data.tags["mtsweep.ray_trial_id"]
        assert not (staging / trial_id).exists(), (t["params"]["tag.case"], trial_id)
    # Ray Tune recorded the errors, and the Optuna study knows those trials failed.
    folder = next((tmp_path / "runs").glob("failing-*"))
    assert len(list(folder.glob("run_trial_*/error.txt"))) == 2
    state = pickle.loads(next(folder.glob("searcher-state-*.pkl")).read_bytes())
    states = sorted(t.state.name for t in state["_ot_study"].trials)
    assert states == ["COMPLETE", "FAIL", "FAIL"], states


def test_one_worker_trials_share_a_warm_process_and_keep_their_checkpoints(
        tmp_path, demo_dir, cache_dir):
    """`resources.workers: 1` (ray_train: auto): each trial trains in its Ray Tune trial process,
    the next trial reuses that process (no Ray Train worker group is started), and every trial
    keeps its epoch checkpoints as Ray Train would — the best by the checkpoint metric and the
    latest, each marked complete — while MLflow gets one run per trial, each epoch once. The
    search never trains a configuration twice."""
    from mlflow.tracking import MlflowClient

    base = tiny_dict(demo_dir, epochs=3)
    sweep = {"name": "warm", "base": base,
             "space": {"optim.lr": [1e-4, 1e-3, 3e-3]},
             # Random search on 3 points proposes repeats (seed 0: the 3rd proposal is one).
             "search": {"algorithm": "random", "num_samples": 3, "max_concurrent": 1,
                        "seed": 0},
             "resources": {"workers": 1, "cpus_per_worker": 1},
             "checkpoints": {"keep": 1, "metric": "overall", "mode": "max"}}
    path = tmp_path / "warm.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    r = _mtsweep(["launch", str(path), "--json"], cwd=tmp_path, MTSWEEP_CACHE=str(cache_dir))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert [t["status"] for t in out["trials"]] == ["FINISHED"] * 3
    # No configuration trained twice: the repeats got the known result, and no trial.
    assert sorted(float(t["params"]["optim.lr"]) for t in out["trials"]) == [1e-4, 1e-3, 3e-3]
    assert "proposal(s) repeated a configuration already trained" in r.stdout

    folder = next((tmp_path / "runs").glob("warm-*"))
    pids = set()
    for result in folder.glob("run_trial_*/result.json"):
        pids |= {json.loads(line)["pid"] for line in result.read_text().splitlines()}
    assert len(pids) == 1, f"the three trials ran in one reused process, not {pids}"

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(out["parent_run_id"]).data.metrics["search_repeats_skipped"] >= 1
    train_dirs = sorted((tmp_path / "runs" / "train").glob("train-*"))
    assert len(train_dirs) == 3
    for trial in out["trials"]:
        run = client.get_run(trial["run_id"])
        history = {h.step: h.value for h in client.get_metric_history(trial["run_id"], "overall")}
        assert sorted(history) == [1, 2, 3]
        assert run.data.metrics["startup_seconds"] > 0
        kept = sorted((tmp_path / "runs" / "train" / f"train-{run.data.tags['mtsweep.ray_trial_id']}"
                       ).glob("epoch-*/done.json"))
        best = max(history, key=lambda e: (history[e], e))
        assert [p.parent.name for p in kept] == sorted({f"epoch-{best}", "epoch-3"}), history
        saved = json.loads(kept[-1].read_text())
        assert saved["overall"] == pytest.approx(history[3])


def _launch_json(tmp_path, sweep: dict, cache_dir, status: int = 0):
    """Write `sweep` to a file, launch it with --json; (completed process, summary, client)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path / f"{sweep['name']}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    r = _mtsweep(["launch", str(path), "--json"], cwd=tmp_path, MTSWEEP_CACHE=str(cache_dir))
    assert r.returncode == status, r.stdout[-3000:] + r.stderr[-5000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return r, out, MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_asha_trials_that_train_every_epoch_log_their_model(tmp_path, demo_dir, cache_dir):
    """`tracking.log_model: true` under ASHA, one-worker trials: ASHA stops every trial at its
    last epoch (max_t), from within that epoch's report, so the model is saved and logged
    before it. A trial that trained every epoch has `model/` and `mtsweep predict RUN_ID`
    uses it; one stopped early has none, and predict says why."""
    base = tiny_dict(demo_dir, epochs=2)
    base["data"]["train_limit"] = {"sst": 64, "para": 64, "sts": 64}
    base["data"].pop("dev_limit", None)  # the whole dev sets, as predict sees them
    sweep = {"name": "models", "base": base,
             "space": {"optim.lr": [2e-3, 1e-7, 1e-3]},
             "search": {"algorithm": "grid", "max_concurrent": 1},
             "scheduler": {"name": "asha", "args": {"grace_period": 1, "reduction_factor": 2}},
             "resources": {"workers": 1, "cpus_per_worker": 1},
             "tracking": {"log_model": True}}
    r, out, client = _launch_json(tmp_path, sweep, cache_dir)
    by_epochs: dict[int, list[str]] = {1: [], 2: []}
    for trial in out["trials"]:
        run = client.get_run(trial["run_id"])
        epochs = int(run.data.metrics["epoch"])
        by_epochs[epochs].append(trial["run_id"])
        model = {a.path for a in client.list_artifacts(trial["run_id"], "model")}
        if epochs == 2:
            assert run.info.status == "FINISHED"
            assert {"model/model.safetensors", "model/config.yaml", "model/encoder"} <= model
        else:
            assert run.data.tags["mtsweep.stopped_early"] == "true" and model == set()
    assert by_epochs[2], "the first trial trains every epoch"

    finished = by_epochs[2][0]
    r = _mtsweep(["predict", finished, "--data-dir", str(demo_dir), "--out",
                  str(tmp_path / "pred"), "--cpu", "--json"], cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    predicted = json.loads(r.stdout.strip().splitlines()[-1])["metrics"]
    recorded = client.get_run(finished).data.metrics
    assert predicted["overall"] == pytest.approx(recorded["overall"], abs=1e-6)
    # lr 1e-7 learns nothing in its first epoch: ASHA stops it at its first rung.
    assert by_epochs[1], "a trial stopped early"
    r = _mtsweep(["predict", by_epochs[1][0], "--data-dir", str(demo_dir)], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "the scheduler stopped it early, after epoch 1 of 2" in r.stderr, r.stderr


def test_a_sweep_that_runs_out_of_time_closes_the_trial_it_cut(tmp_path, demo_dir, cache_dir):
    """`search.time_budget_s`: Ray Tune stops the running trial when the budget is spent. The
    sweep ends normally (exit 0, sweep run FINISHED) and the cut trial's run is closed as
    stopped early, with the reason, rather than left running."""
    base = tiny_dict(demo_dir, epochs=200)
    base["data"]["dev_limit"] = {"sst": 16, "para": 16, "sts": 16}
    sweep = {"name": "budget", "base": base, "space": {"optim.lr": [1e-3, 2e-3]},
             "search": {"algorithm": "grid", "max_concurrent": 1, "time_budget_s": 15},
             "resources": {"workers": 1, "cpus_per_worker": 1}}
    r, out, client = _launch_json(tmp_path, sweep, cache_dir)
    assert client.get_run(out["parent_run_id"]).info.status == "FINISHED"
    trial, = out["trials"]
    run = client.get_run(trial["run_id"])
    assert run.info.status == "KILLED" and 1 <= run.data.metrics["epoch"] < 200
    assert run.data.tags["mtsweep.stopped_early"] == "true"
    assert "time budget (search.time_budget_s: 15 s) ran out" in run.data.tags["mtsweep.error"]


def test_a_sweep_whose_every_trial_failed_is_a_failed_sweep(tmp_path, demo_dir, cache_dir):
    """Exit status 1 and the sweep run FAILED (not FINISHED) when no trial succeeded; each
    failure is one line on the driver's stderr."""
    sweep = {"name": "allfail", "base": tiny_dict(demo_dir, epochs=1),
             "space": {"data.dir": [str(tmp_path / "no-such-data")]},
             "search": {"algorithm": "grid"}, "resources": {"workers": 1, "cpus_per_worker": 1}}
    r, out, client = _launch_json(tmp_path, sweep, cache_dir, status=1)
    assert [t["status"] for t in out["trials"]] == ["FAILED"]
    failed = [line for line in r.stderr.splitlines() if line.startswith("trial ")]
    assert len(failed) == 1 and "no-such-data does not exist" in failed[0], r.stderr[-3000:]
    assert client.get_run(out["parent_run_id"]).info.status == "FAILED"
