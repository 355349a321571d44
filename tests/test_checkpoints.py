"""A one-worker trial's own epoch checkpoints: complete ones only, the best and the latest kept,
on a local folder and on a storage URI."""

from __future__ import annotations

import pytest

from orchestrator.checkpoints import DONE, TrialCheckpoints


def _epoch_state(tmp_path, epoch: int):
    local = tmp_path / f"local-{epoch}"
    (local / "sub").mkdir(parents=True)
    (local / "weights.bin").write_bytes(bytes([epoch]) * 100)
    (local / "sub" / "rng.json").write_text(f'{{"epoch": {epoch}}}')
    return local


@pytest.mark.parametrize("scheme", ["local", "uri"])
def test_keeps_the_best_and_the_latest_and_restores_the_latest(tmp_path, scheme):
    root = tmp_path / "train" / "train-abc"
    store = TrialCheckpoints(str(root) if scheme == "local" else root.as_uri(), keep=2,
                             metric="overall", mode="max")
    assert store.latest() is None
    for epoch, overall in [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.4)]:
        store.save(_epoch_state(tmp_path, epoch), epoch, {"overall": overall, "note": "x"})
    # The two best (2, 3) and the latest (4); epoch 1 deleted.
    assert sorted(p.name for p in root.iterdir()) == ["epoch-2", "epoch-3", "epoch-4"]
    assert store.latest() == 4
    out = tmp_path / "restored"
    store.download(4, out)
    assert (out / "weights.bin").read_bytes() == bytes([4]) * 100
    assert (out / "sub" / "rng.json").read_text() == '{"epoch": 4}'


def test_min_mode_and_an_incomplete_checkpoint_is_ignored(tmp_path):
    root = tmp_path / "train-x"
    store = TrialCheckpoints(str(root), keep=1, metric="loss", mode="min")
    store.save(_epoch_state(tmp_path, 1), 1, {"loss": 0.2})
    store.save(_epoch_state(tmp_path, 2), 2, {"loss": 0.9})
    assert sorted(p.name for p in root.iterdir()) == ["epoch-1", "epoch-2"]
    # A folder written without its completion mark (the process died while copying).
    (root / "epoch-3").mkdir()
    (root / "epoch-3" / "weights.bin").write_bytes(b"partial")
    assert store.latest() == 2
    (root / "epoch-2" / DONE).unlink()
    assert store.latest() == 1


def test_an_epoch_saved_but_not_logged_is_logged_once_on_restart(tmp_path):
    """A trial killed after saving epoch 2's checkpoint and before logging it: the restarted
    trial logs epoch 2 from the saved metrics; a restart after the epoch was logged does not log
    it again."""
    import mlflow

    from orchestrator.tracking import SweepTracker, get_or_create_experiment
    from orchestrator.trial import TuneSession

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, get_or_create_experiment(uri, "restart"))
    run_id = tracker.client.create_run(tracker.experiment_id).info.run_id
    store = TrialCheckpoints(str(tmp_path / "train-t"))
    store.save(_epoch_state(tmp_path, 1), 1, {"overall": 0.5, "epoch": 1})
    tracker.log_epoch(run_id, {"overall": 0.5, "epoch": 1}, 1)
    store.save(_epoch_state(tmp_path, 2), 2, {"overall": 0.6, "epoch": 2})  # then killed

    for restart in range(2):
        session = TuneSession(store)
        assert session.restore(tmp_path / f"resume-{restart}") == "epoch-2"
        epoch, saved = session.restored_metrics()
        assert (epoch, saved) == (2, {"overall": 0.6, "epoch": 2})
        tracker.log_epoch_once(run_id, saved, epoch)
    history = mlflow.MlflowClient(uri).get_metric_history(run_id, "overall")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.5), (2, 0.6)]
    assert TuneSession(TrialCheckpoints(str(tmp_path / "none"))).restored_metrics() is None
