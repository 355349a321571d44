"""The sweep's Ray Tune searcher: Optuna, without training a configuration twice.

On a space with categorical parameters a sampler often proposes a point it has already seen
(TPE re-proposed about a third of its points on the 24-point space of `bench/search_efficiency.py`).
A trial is deterministic given its configuration (the seed is part of it), so training it again
only repeats a known result. When Optuna proposes the parameters of a trial that already
completed, `OptunaSearch` here tells the study that trial's value for the new proposal — as
Optuna's FAQ suggests for an objective that meets a repeated point — and asks again, without
starting a Ray trial. Trials still running, failed ones and points with continuous parameters
(which practically never repeat) are left alone. After `MAX_REPEATS` repeated proposals in a
row the repeat is trained: the search has nothing new to propose.
"""

from __future__ import annotations

import logging
from typing import Any

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch as _RayOptunaSearch

log = logging.getLogger("mtsweep.searcher")


class OptunaSearch(_RayOptunaSearch):
    MAX_REPEATS = 50

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.repeats_skipped = 0

    def suggest(self, trial_id: str) -> dict | None:
        for _ in range(self.MAX_REPEATS):
            config = super().suggest(trial_id)
            ot_trial = self._ot_trials.get(trial_id)
            known = self._completed_with(ot_trial.params) if ot_trial is not None else None
            if known is None:
                return config
            # The proposal gets the known result; the next `suggest` asks Optuna anew.
            self._ot_study.tell(ot_trial, known.values if self._multi() else known.value)
            del self._ot_trials[trial_id]
            self.repeats_skipped += 1
        log.warning("the search proposed %d configurations in a row that were already "
                    "trained; training a repeat (a grid search may suit this space better)",
                    self.MAX_REPEATS)
        return super().suggest(trial_id)

    def _multi(self) -> bool:
        return isinstance(self.metric, list)

    def _completed_with(self, params: dict[str, Any]):
        """The first completed trial with exactly these parameters, or None."""
        for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.params == params:
                return t
        return None
