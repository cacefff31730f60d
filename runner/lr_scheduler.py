"""The learning-rate schedules torch lacks. Cosine, polynomial decay and reduce-on-plateau target torch's own classes
directly (conf/lr_scheduler/); the trainer steps every scheduler per update, except the validation-driven ones,
which it steps after each validation with the validation loss."""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau


class InverseSquareRootLR(LambdaLR):
    """Linear warmup from ``warmup_init_lr`` to the optimizer's lr, then decay with 1/sqrt(update), as in fairseq."""

    def __init__(self, optimizer: Optimizer, warmup_updates: int = 4000, warmup_init_lr: float = 0.0):
        self.warmup_updates = warmup_updates
        base = optimizer.param_groups[0]["lr"]
        init_ratio = warmup_init_lr / base if base > 0 else 0.0

        def factor(step: int) -> float:
            if warmup_updates > 0 and step < warmup_updates:
                return init_ratio + (1.0 - init_ratio) * step / warmup_updates
            return (max(warmup_updates, 1) / max(step, 1)) ** 0.5

        super().__init__(optimizer, factor)


class FixedLR:
    """A constant lr, multiplied by ``lr_shrink`` whenever a validation does not improve on the best loss."""

    def __init__(self, optimizer: Optimizer, lr_shrink: float = 1.0):
        if not 0.0 < lr_shrink <= 1.0:
            raise ValueError(f"lr_scheduler.lr_shrink must be in (0, 1], got {lr_shrink}")
        self.optimizer = optimizer
        self.lr_shrink = lr_shrink
        self.best = float("inf")

    def step(self, metrics: float) -> None:
        if metrics < self.best:
            self.best = metrics
        elif self.lr_shrink < 1.0:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.lr_shrink

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "lr_shrink": self.lr_shrink}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]


def steps_on_validation(scheduler: Any) -> bool:
    """True for schedules driven by the validation loss rather than by the update count."""
    return isinstance(scheduler, (ReduceLROnPlateau, FixedLR))
