"""An acquisition function defined outside dst_cli: grow by gradient plus momentum magnitude (SNFS-like)."""
from torch import Tensor

from dst_cli.sparse import Acquisition, ScoreContext, SparseConfigError


class MyAcq(Acquisition):
    """Drop the smallest |w|; grow the largest |g| + alpha * |momentum|."""

    def __init__(self, alpha: float = 0.5):
        if not alpha >= 0:
            raise SparseConfigError("acq.alpha", f"acq.alpha={alpha} is invalid; allowed: a number >= 0")
        self.alpha = alpha

    def grow_scores(self, ctx: ScoreContext) -> Tensor:
        momentum = ctx.optimizer_state.get("momentum_buffer")
        score = ctx.grad.abs()
        return score if momentum is None else score + self.alpha * momentum.abs()
