"""Optuna's TPE sampler with the per-suggestion work that does not change cached.

A suggestion of multivariate, grouped TPE (`make_sampler`'s choice for a conditional space)
makes, for every parameter group of the space (14 for `search_spaces/full.yaml`), a pass over
every finished trial: it re-derives the group decomposition from all trials, splits them into
the better and the worse part, and converts each trial's parameters to the sampler's internal
representation. All three only grow with the study, so a suggestion's cost grows linearly with
it, and in a large sweep the driver spends most of its CPU there (`bench/SCALE.md`): 31 ms at
500 finished trials and about 64 ms at 1,000 on a 2-core AMD EPYC, against 13 and 22 ms here.

`TPESampler` here gives the same proposals as `optuna.samplers.TPESampler` with the same
arguments and seed — `tests/test_tpe.py` checks that, suggestion for suggestion — and keeps
what a finished trial contributes, which never changes:

- the group decomposition takes in each finished trial once, not at every suggestion (taking
  in a trial again leaves Optuna's decomposition as it is);
- the split into better and worse trials is computed once per suggestion, not once per group;
- a finished trial's internal representation of a parameter is computed once, into a table
  by trial number, from which each group takes its rows with NumPy.

The caches rely on private parts of Optuna's TPE; `make_sampler` uses this class only with the
Optuna versions it was checked against (`SUPPORTED`) and Optuna's own class otherwise.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers._tpe import sampler as _tpe
from optuna.search_space.group_decomposed import _SearchSpaceGroup
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

# Optuna versions whose TPE internals this class was checked against (major, minor).
SUPPORTED = {(5, 0)}


def supported(version: str = optuna.__version__) -> bool:
    major, minor = (int(p) for p in version.split(".")[:2])
    return (major, minor) in SUPPORTED


class TPESampler(optuna.samplers.TPESampler):
    """`optuna.samplers.TPESampler`, same arguments, same proposals, less work per suggestion."""

    @functools.wraps(optuna.samplers.TPESampler.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.RLock()
        self._cache = _Cache()

    def __getstate__(self) -> dict[str, Any]:
        # Checkpoints carry the sampler's state, not what it can recompute.
        state = self.__dict__.copy()
        del state["_lock"], state["_cache"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._cache = _Cache()

    def _for_study(self, study: Study) -> _Cache:
        """The caches, for `study`'s trials (a sampler serves one study, as Optuna's do)."""
        key = (id(study._storage), study._study_id)
        if key != self._cache.study_key:
            self._cache = _Cache(key)
        return self._cache

    # -- group decomposition -------------------------------------------------------------------

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if not (self._group and self._is_multivariate(study)):
            return super().infer_relative_search_space(study, trial)
        self._search_space_group = self._group_decomposition(study)
        search_space: dict[str, BaseDistribution] = {}
        for sub_space in self._search_space_group.search_spaces:
            for name, distribution in sorted(sub_space.items()):
                if not distribution.single():
                    search_space[name] = distribution
        return search_space

    def _group_decomposition(self, study: Study) -> _SearchSpaceGroup:
        with self._lock:
            return self._fold_new_trials(study)

    def _fold_new_trials(self, study: Study) -> _SearchSpaceGroup:
        """What `_GroupDecomposedSearchSpace.calculate` returns: it folds every finished trial's
        parameters into the decomposition it keeps, at every suggestion; a trial folded in
        before changes nothing (the decomposition already refines its parameter set), so only
        the trials that finished since the last suggestion are folded in here."""
        seen = self._for_study(study).seen_trials
        assert self._group_decomposed_search_space is not None
        decomposition = self._group_decomposed_search_space._search_space
        states = (TrialState.COMPLETE, TrialState.PRUNED)
        for t in study._get_trials(deepcopy=False, states=states, use_cache=True):
            if t.number not in seen:
                seen.add(t.number)
                decomposition.add_distributions(t.distributions)
        return _copy_group(decomposition)

    # -- one split per suggestion --------------------------------------------------------------

    def _sample(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        # The caches are shared by the threads of `study.optimize(n_jobs=...)`.
        with self._lock:
            return self._sample_cached(study, trial, search_space)

    def _sample_cached(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        # Optuna's `TPESampler._sample`, with the split of the suggestion under way kept for all
        # of its parameter groups. With the constant liar (Optuna's default) the running trials
        # take part as bad ones; a trial that finishes, starts or fails changes the count of
        # finished trials or of all of them, and so the key.
        cache = self._for_study(study)
        if self._constant_liar:
            states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        else:
            states = (TrialState.COMPLETE, TrialState.PRUNED)
        trials = study._get_trials(deepcopy=False, states=states,
                                   use_cache=not self._constant_liar)
        if self._constant_liar:
            trials = [t for t in trials if trial.number != t.number]
        if self._gamma is None:
            self._gamma = (_tpe.default_gamma if len(study.directions) <= 1
                           else _tpe.default_gamma_multiobjective)
        n = sum(t.state != TrialState.RUNNING for t in trials)
        key = (trial.number, n, len(trials))
        if key != cache.split_key:
            cache.new_split(key, _tpe._split_trials(study, trials, self._gamma(n)))
        below_trials, above_trials = cache.split

        mpe_below = self._build_parzen_estimator(study, search_space, below_trials,
                                                 handle_below=True)
        mpe_above = self._build_parzen_estimator(study, search_space, above_trials,
                                                 handle_below=False)
        samples_below = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acq_func_vals = self._compute_acquisition_func(samples_below, mpe_below, mpe_above)
        ret = self._compare(samples_below, acq_func_vals)
        for param_name, dist in search_space.items():
            ret[param_name] = dist.to_external_repr(ret[param_name])
        return ret

    # -- internal representations --------------------------------------------------------------

    def _get_internal_repr(
        self, trials: list[FrozenTrial], search_space: dict[str, BaseDistribution], study: Study
    ) -> dict[str, np.ndarray]:
        side = next((i for i, part in enumerate(self._cache.split) if part is trials), None)
        if side is None or not search_space:
            return super()._get_internal_repr(trials, search_space, study)
        # Trials that have every parameter of the group, as Optuna's loop selects them.
        columns = {name: self._column(study, side, trials, name, dist)
                   for name, dist in search_space.items()}
        mask = np.logical_and.reduce([present for present, _ in columns.values()])
        if not mask.any():
            return {name: np.asarray([]) for name in search_space}
        return {name: values[mask] for name, (_, values) in columns.items()}

    def _column(self, study: Study, side: int, trials: list[FrozenTrial], name: str,
                dist: BaseDistribution) -> tuple[np.ndarray, np.ndarray]:
        """Which of `trials` have `name`, and its internal representation in each."""
        cache = self._cache
        key = (side, name)
        cached = cache.columns.get(key)
        if cached is not None and cached[0] == dist:
            return cached[1]
        numbers, finished = cache.rows(side, trials)
        table = cache.table(name, dist, int(numbers.max()) + 1 if len(numbers) else 0)
        # Finished trials never change: each is read once, into the table by trial number.
        for i in np.flatnonzero(finished & ~table.read[numbers]):
            table.read_trial(trials[i])
        present = table.present[numbers]
        values = table.values[numbers]
        # A running trial's parameters include the relative ones it was given (constant liar).
        for i in np.flatnonzero(~finished):
            value = self._get_params(trials[i], study).get(name, _MISSING)
            present[i] = value is not _MISSING
            if present[i]:
                values[i] = dist.to_internal_repr(value)
        cache.columns[key] = (dist, (present, values))
        return present, values


class _Cache:
    """What the sampler keeps between calls for one study's trials."""

    def __init__(self, study_key: tuple | None = None) -> None:
        self.study_key = study_key
        # The trials already folded into the group decomposition.
        self.seen_trials: set[int] = set()
        # The split of the suggestion under way (better, worse), and, per side, its trials'
        # numbers and finished flags and its parameters as columns.
        self.split_key: tuple | None = None
        self.split: tuple[list[FrozenTrial], list[FrozenTrial]] | tuple[()] = ()
        self.side_rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.columns: dict[tuple[int, str], tuple[BaseDistribution, tuple]] = {}
        # Each parameter's internal representation in the finished trials.
        self.tables: dict[str, _Column] = {}

    def new_split(self, key: tuple, split: tuple[list[FrozenTrial], list[FrozenTrial]]) -> None:
        self.split_key, self.split = key, split
        self.side_rows, self.columns = {}, {}

    def rows(self, side: int, trials: list[FrozenTrial]) -> tuple[np.ndarray, np.ndarray]:
        rows = self.side_rows.get(side)
        if rows is None:
            rows = self.side_rows[side] = (
                np.fromiter((t.number for t in trials), dtype=np.int64, count=len(trials)),
                np.fromiter((t.state.is_finished() for t in trials), dtype=bool,
                            count=len(trials)))
        return rows

    def table(self, name: str, dist: BaseDistribution, size: int) -> _Column:
        table = self.tables.get(name)
        if table is None or table.dist != dist:
            table = self.tables[name] = _Column(name, dist)
        table.grow(size)
        return table


class _Column:
    """One parameter's internal representation in every finished trial, by trial number."""

    def __init__(self, name: str, dist: BaseDistribution) -> None:
        self.name, self.dist = name, dist
        # Optuna's arrays: category indices are integers, everything else floats.
        self.dtype = np.int64 if isinstance(dist, CategoricalDistribution) else np.float64
        self.read = np.zeros(0, dtype=bool)
        self.present = np.zeros(0, dtype=bool)
        self.values = np.zeros(0, dtype=self.dtype)

    def grow(self, size: int) -> None:
        if size <= len(self.read):
            return
        extra = max(size, 2 * len(self.read), 64) - len(self.read)
        self.read = np.concatenate([self.read, np.zeros(extra, dtype=bool)])
        self.present = np.concatenate([self.present, np.zeros(extra, dtype=bool)])
        self.values = np.concatenate([self.values, np.zeros(extra, dtype=self.dtype)])

    def read_trial(self, trial: FrozenTrial) -> None:
        n = trial.number
        self.read[n] = True
        value = trial.params.get(self.name, _MISSING)
        if value is not _MISSING:
            self.present[n] = True
            self.values[n] = self.dist.to_internal_repr(value)


_MISSING = object()


def _copy_group(group: _SearchSpaceGroup) -> _SearchSpaceGroup:
    copy = _SearchSpaceGroup()
    copy._search_spaces = [dict(s) for s in group.search_spaces]
    return copy
