"""Test doubles that plug in through ``_target_`` like any user component."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from runner.criteria import CrossEntropyCriterion


class NonFiniteCriterion(CrossEntropyCriterion):
    """Cross-entropy whose loss becomes NaN on chosen forward calls (counted from 1), as a diverging model's would."""

    def __init__(self, padding_idx: int = 1, nan_calls: tuple[int, ...] = ()):
        super().__init__(padding_idx)
        self.nan_calls = set(nan_calls)
        self.calls = 0

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, int, dict[str, float]]:
        loss, size, out = super().forward(model, batch)
        if self.training:
            self.calls += 1
            if self.calls in self.nan_calls:
                loss = loss * float("nan")
                out["loss"] = float("nan")
        return loss, size, out


class FailingOnRank1Criterion(CrossEntropyCriterion):
    """Cross-entropy that raises on the third training call of rank 1, as a crashing worker would."""

    def __init__(self, padding_idx: int = 1):
        super().__init__(padding_idx)
        self.calls = 0

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, int, dict[str, float]]:
        import os

        self.calls += 1
        if os.environ.get("RANK") == "1" and self.calls == 3:
            raise RuntimeError("simulated failure on rank 1")
        return super().forward(model, batch)
