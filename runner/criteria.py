"""Training criteria. Each returns the summed loss over the batch, the sample size to normalise by (target
tokens), and logging outputs; the trainer divides by the sample size of the whole update, so ``update_freq``
accumulation normalises exactly per token."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

LN2 = math.log(2)


class CrossEntropyCriterion(nn.Module):
    """Negative log-likelihood of the reference tokens, padding ignored."""

    def __init__(self, padding_idx: int = 1):
        super().__init__()
        self.padding_idx = padding_idx

    def token_losses(self, lprobs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(loss, nll) summed over non-pad tokens."""
        mask = target.ne(self.padding_idx)
        nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        nll_sum = nll.masked_fill(~mask, 0.0).sum()
        return nll_sum, nll_sum

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, int, dict[str, float]]:
        logits = model(**batch["net_input"])
        lprobs = getattr(model, "module", model).get_normalized_probs(logits, log_probs=True)  # DDP wraps in .module
        loss, nll = self.token_losses(lprobs, batch["target"])
        ntokens = int(batch["ntokens"])
        logging = {
            "loss": float(loss.detach()),
            "nll_loss": float(nll.detach()),
            "ntokens": ntokens,
            "nsentences": int(batch["nsentences"]),
            "sample_size": ntokens,
        }
        return loss, ntokens, logging


class LabelSmoothedCrossEntropyCriterion(CrossEntropyCriterion):
    """fairseq's label smoothing: ``(1 - eps - eps_i) * nll + eps_i * sum(-lprobs)`` with ``eps_i = eps / (V - 1)``.

    Reported ``nll_loss`` stays the plain likelihood, so perplexities compare across criteria.
    """

    def __init__(self, padding_idx: int = 1, label_smoothing: float = 0.1):
        super().__init__(padding_idx)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"criterion.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.eps = label_smoothing

    def token_losses(self, lprobs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        mask = target.ne(self.padding_idx)
        nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        smooth = -lprobs.sum(-1)
        nll = nll.masked_fill(~mask, 0.0).sum()
        smooth = smooth.masked_fill(~mask, 0.0).sum()
        eps_i = self.eps / (lprobs.size(-1) - 1)
        loss = (1.0 - self.eps - eps_i) * nll + eps_i * smooth
        return loss, nll


def base2_per_token(total: float, ntokens: int) -> float:
    """fairseq reports losses in bits per token."""
    return total / max(ntokens, 1) / LN2


def perplexity(nll_base2: float) -> float:
    try:
        return float(2**nll_base2)
    except OverflowError:
        return float("inf")
