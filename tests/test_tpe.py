"""mtsweep's TPE sampler proposes exactly what Optuna's does, with less work per suggestion.

Each test drives two studies through the same history — trials asked several at a time,
finishing out of order, some failing or pruned — one with `optuna.samplers.TPESampler`, one
with `orchestrator.tpe.TPESampler`, both with the same arguments and seed, and compares every
proposal.
"""

from __future__ import annotations

import pickle
import random
import threading
import warnings

import optuna
import pytest

from orchestrator import tpe
from orchestrator.space import load_sweep, make_sampler
from tests.conftest import REPO

FULL = load_sweep(REPO / "search_spaces" / "full.yaml")

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _drive(study: optuna.Study, n: int, *, concurrency: int = 4, seed: int = 1,
           space=FULL.define_by_run) -> list[dict]:
    """Ask `n` trials, `concurrency` at a time; each finishes in random order, 10 % failed,
    10 % pruned, the rest complete with random values. Returns every proposal."""
    rng = random.Random(seed)
    running: list[optuna.Trial] = []
    proposals: list[dict] = []
    while len(proposals) < n:
        while len(running) < concurrency and len(proposals) < n:
            trial = study.ask()
            space(trial)
            running.append(trial)
            proposals.append(dict(trial.params))
        trial = running.pop(rng.randrange(len(running)))
        r = rng.random()
        if r < 0.1:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif r < 0.2:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            values = [rng.random() for _ in study.directions]
            study.tell(trial, values if len(values) > 1 else values[0])
    return proposals


def _pair(directions=("maximize",), **kwargs) -> tuple[optuna.Study, optuna.Study]:
    def study(cls):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.create_study(sampler=cls(seed=3, **kwargs), directions=list(directions))
    return study(optuna.samplers.TPESampler), study(tpe.TPESampler)


@pytest.mark.parametrize("constant_liar", [True, False])
def test_same_proposals_as_optunas_tpe_on_the_conditional_space(constant_liar):
    stock, fast = _pair(multivariate=True, group=True, n_startup_trials=8,
                        constant_liar=constant_liar)
    expected = _drive(stock, 120)
    got = _drive(fast, 120)
    assert len({repr(sorted(p.items())) for p in expected}) > 100, "distinct proposals"
    assert got == expected


@pytest.mark.parametrize("kwargs", [
    {"multivariate": True, "n_startup_trials": 5},  # one group: every parameter together
    {"n_startup_trials": 5},  # independent TPE, one parameter at a time
])
def test_same_proposals_without_groups(kwargs):
    stock, fast = _pair(**kwargs)
    assert _drive(fast, 60) == _drive(stock, 60)


def test_same_proposals_with_two_objectives():
    stock, fast = _pair(directions=("maximize", "minimize"), n_startup_trials=5)
    assert _drive(fast, 50) == _drive(stock, 50)


def test_a_pickled_sampler_goes_on_as_optunas_would():
    # A resumed sweep restores its searcher, sampler included, from a pickle.
    stock, fast = _pair(multivariate=True, group=True, n_startup_trials=8)
    assert _drive(fast, 40) == _drive(stock, 40)
    for study in (stock, fast):
        study.sampler = pickle.loads(pickle.dumps(study.sampler))
    assert type(fast.sampler) is tpe.TPESampler
    assert _drive(fast, 40, seed=2) == _drive(stock, 40, seed=2)


def test_one_sampler_for_two_studies_does_not_mix_their_trials():
    # The caches hold one study's trials; a sampler moved to another study starts them afresh.
    def second_study(cls) -> list[dict]:
        sampler = cls(seed=0, multivariate=True, n_startup_trials=3)
        _drive(optuna.create_study(sampler=sampler, direction="maximize"), 20)
        return _drive(optuna.create_study(sampler=sampler, direction="maximize"), 20, seed=5)

    assert second_study(tpe.TPESampler) == second_study(optuna.samplers.TPESampler)


def test_parallel_threads_get_valid_proposals():
    # study.optimize(n_jobs=...) shares the sampler between threads.
    sampler = tpe.TPESampler(seed=0, multivariate=True, group=True, n_startup_trials=5)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    errors: list[BaseException] = []

    def objective(trial):
        FULL.define_by_run(trial)
        return random.random()

    def work():
        try:
            study.optimize(objective, n_trials=15)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 45


def test_sweeps_use_it_where_optuna_is_a_checked_version(monkeypatch):
    assert tpe.supported(optuna.__version__), "the pinned Optuna is a checked version"
    assert type(make_sampler(FULL)) is tpe.TPESampler
    assert not tpe.supported("6.0.0") and not tpe.supported("4.5.1")
    monkeypatch.setattr(tpe, "supported", lambda version=None: False)
    assert type(make_sampler(FULL)) is optuna.samplers.TPESampler
