"""mtsweep's Optuna searcher does not train a configuration twice: a repeated proposal gets the
known result (the study records it), and no trial is started for it."""

from __future__ import annotations

import optuna
import pytest

from orchestrator.searcher import OptunaSearch


def _space(trial) -> None:
    trial.suggest_categorical("lr", [1e-3, 3e-3])
    trial.suggest_categorical("head", ["cosine", "sbert"])


def _searcher(**kw) -> OptunaSearch:
    return OptunaSearch(space=_space, metric="overall", mode="max",
                        sampler=optuna.samplers.RandomSampler(seed=0), **kw)


def _key(config) -> tuple:
    return config["lr"], config["head"]


def test_proposals_never_repeat_a_completed_configuration():
    s = _searcher()
    values = {(1e-3, "cosine"): 0.5, (1e-3, "sbert"): 0.6, (3e-3, "cosine"): 0.7,
              (3e-3, "sbert"): 0.8}
    trained = []
    for i in range(4):
        config = s.suggest(f"t{i}")
        trained.append(_key(config))
        s.on_trial_complete(f"t{i}", {"overall": values[_key(config)]})
    assert sorted(trained) == sorted(values), "4 trials, the 4 distinct configurations"
    assert s.repeats_skipped > 0, "a random sampler on 4 points repeats itself"
    study = s._ot_study
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 4 + s.repeats_skipped
    for t in complete:  # each repeat carries the value of the trial it repeated
        assert t.value == values[(t.params["lr"], t.params["head"])]
    assert study.best_value == 0.8


def test_running_and_failed_configurations_are_not_answered_for():
    s = _searcher()
    first = s.suggest("a")  # still running: a repeat of it is trained
    seen = [_key(s.suggest(f"b{i}")) for i in range(20)]
    assert _key(first) in seen and s.repeats_skipped == 0
    s.on_trial_complete("a", None, error=True)
    assert s.repeats_skipped == 0


def test_a_space_with_nothing_new_trains_a_repeat(caplog):
    s = _searcher()
    s.MAX_REPEATS = 5
    configs = []
    for i in range(4):
        configs.append(s.suggest(f"t{i}"))
        s.on_trial_complete(f"t{i}", {"overall": 0.1 * i})
    with caplog.at_level("WARNING", logger="mtsweep.searcher"):
        again = s.suggest("t4")
    assert _key(again) in {_key(c) for c in configs}
    assert "already trained; training a repeat" in caplog.text


def test_state_survives_save_and_restore(tmp_path):
    s = _searcher()
    for i in range(4):
        s.suggest(f"t{i}")
        s.on_trial_complete(f"t{i}", {"overall": 0.1 * i})
    s.save(str(tmp_path / "searcher.pkl"))
    restored = _searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.repeats_skipped == s.repeats_skipped
    restored.MAX_REPEATS = 3
    before = restored.repeats_skipped
    restored.suggest("t9")  # every point is known: answered from the restored study
    assert restored.repeats_skipped == before + 3


@pytest.mark.parametrize("metric", [["sst_acc", "sts_corr"]])
def test_multi_objective_repeats_get_all_values(metric):
    s = OptunaSearch(space=_space, metric=metric, mode=["max", "max"],
                     sampler=optuna.samplers.RandomSampler(seed=1))
    for i in range(4):
        config = s.suggest(f"t{i}")
        s.on_trial_complete(f"t{i}", {"sst_acc": config["lr"], "sts_corr": 1.0})
    s.MAX_REPEATS = 2
    s.suggest("t5")
    told = [t for t in s._ot_study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(told) > 4 and all(t.values == [t.params["lr"], 1.0] for t in told)
