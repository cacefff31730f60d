"""Focal loss for sequence models: down-weights tokens the model already predicts well.

Only the per-token loss changes; everything else (padding, the batch dictionary, the logging outputs the trainer
reads) is inherited from runner's cross-entropy criterion, and the reported ``nll_loss`` stays the plain likelihood so
perplexities compare across criteria.
"""

from __future__ import annotations

from torch import Tensor

from runner.criteria import CrossEntropyCriterion


class FocalLoss(CrossEntropyCriterion):
    """``sum over non-pad target tokens of -(1 - p_t) ** gamma * log p_t``."""

    def __init__(self, padding_idx: int = 1, gamma: float = 2.0):
        super().__init__(padding_idx)
        if gamma < 0:
            raise ValueError(f"criterion.gamma must be >= 0, got {gamma}")
        self.gamma = gamma

    def token_losses(self, lprobs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(focal loss, nll) summed over non-pad tokens."""
        mask = target.ne(self.padding_idx)
        logp = lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        weight = (1.0 - logp.exp()).clamp(min=0.0) ** self.gamma
        loss = (-weight * logp).masked_fill(~mask, 0.0).sum()
        nll = (-logp).masked_fill(~mask, 0.0).sum()
        return loss, nll
