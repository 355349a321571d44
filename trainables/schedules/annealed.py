from __future__ import annotations

from trainables.errors import ConfigError
from trainables.schedules.proportional import Proportional


class Annealed(Proportional):
    """Annealed sampling ("BERT and PALs", Stickland & Murray 2019): task t is drawn with
    probability ∝ n_t^alpha, alpha going linearly from `alpha_start` (1 = proportional to data
    set size) in the first epoch to `alpha_end` (0 = uniform) in the last.

    Args:
        alpha_start: exponent in the first epoch.
        alpha_end: exponent in the last epoch (PALs used 0.2, i.e. 1 − 0.8).
    """

    def __init__(
        self,
        batches_per_task,
        epoch_length,
        steps_per_epoch,
        epochs,
        *,
        alpha_start: float = 1.0,
        alpha_end: float = 0.2,
    ) -> None:
        super().__init__(batches_per_task, epoch_length, steps_per_epoch, epochs, alpha=1.0)
        for name, a in (("alpha_start", alpha_start), ("alpha_end", alpha_end)):
            if not 0.0 <= a <= 1.0:
                raise ConfigError(f"{name}: must be in [0, 1], got {a}")
        self.alpha_start, self.alpha_end = alpha_start, alpha_end

    def alpha_at(self, epoch: int) -> float:
        if self.epochs <= 1:
            return self.alpha_start
        frac = epoch / (self.epochs - 1)
        return self.alpha_start + frac * (self.alpha_end - self.alpha_start)
