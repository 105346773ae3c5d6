"""When the topology changes and by how much: pure functions of the training step."""
import math
from dataclasses import dataclass

DECAYS = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class UpdateSchedule:
    """Mask updates every `update_interval` steps until `stop_fraction` of training.

    The share of active weights replaced at an update decays from `drop_fraction` to
    `min_drop_fraction` over the updating part of training (RigL: cosine to 0, stop at 0.75;
    ITOP/sparselearning: cosine to 0.005 over the whole run).
    """

    update_interval: int
    drop_fraction: float
    decay: str
    stop_fraction: float
    min_drop_fraction: float
    total_steps: int

    @property
    def stop_step(self) -> int:
        return int(self.stop_fraction * self.total_steps)

    def is_update_step(self, step: int) -> bool:
        """Step counts optimizer steps from 1; no update at the very end of training."""
        return step % self.update_interval == 0 and step < self.stop_step

    def drop_fraction_at(self, step: int) -> float:
        progress = min(step / max(self.stop_step, 1), 1.0)
        if self.decay == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif self.decay == "linear":
            factor = 1.0 - progress
        else:
            factor = 1.0
        return self.min_drop_fraction + (self.drop_fraction - self.min_drop_fraction) * factor

    def count_updates(self, steps: int) -> int:
        """How many mask updates happen within the first `steps` steps."""
        return len(range(self.update_interval, min(steps + 1, self.stop_step), self.update_interval))
