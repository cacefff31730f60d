"""What happens to bad inputs at inference time: empty lines and sources longer than the model's positions.

Each case is reported with the file (or ``stdin``) and line at fault; an over-long source is truncated, skipped or
refused as ``long_inputs`` says.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

from runner.data.text import DataError

log = logging.getLogger(__name__)
LONG_INPUT_POLICIES = ("truncate", "skip", "error")


def check_policy(policy: str) -> None:
    """Reject an unknown ``long_inputs`` value, naming the choices."""
    if policy not in LONG_INPUT_POLICIES:
        raise ValueError(f"long_inputs must be one of {list(LONG_INPUT_POLICIES)}, got {policy!r}")


def fit_source(ids: torch.Tensor, max_positions: int, policy: str, where: str, eos: int) -> Optional[torch.Tensor]:
    """``ids`` (ending in ``</s>``) cut to ``max_positions`` tokens, or None when skipped; errors per ``policy``."""
    if ids.numel() <= max_positions:
        return ids
    msg = f"{where}: input has {ids.numel()} tokens (incl. </s>), more than the model's {max_positions} positions"
    if policy == "error":
        raise DataError(f"{msg}; set long_inputs=truncate or long_inputs=skip")
    if policy == "skip":
        log.warning("%s: skipped (long_inputs=skip; its hypothesis is empty)", msg)
        return None
    log.warning("%s: truncated to the first %d tokens (long_inputs=truncate)", msg, max_positions - 1)
    return torch.cat([ids[: max_positions - 1], ids.new_tensor([eos])])


def warn_empty(line: str, where: str) -> bool:
    """True (with a warning naming the line) when ``line`` has no text to translate."""
    if line.strip():
        return False
    log.warning("%s: empty input line (translated as an empty source)", where)
    return True
