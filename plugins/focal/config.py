"""The schema of ``criterion=focal``; registered as ``schema/criterion/focal`` when the plug-in is activated."""

from dataclasses import dataclass


@dataclass
class FocalLossConfig:
    """Focal loss (Lin et al., 2017) over target tokens: ``-(1 - p) ** gamma * log p``; gamma 0 is cross-entropy."""

    _target_: str = "focal.criterion.FocalLoss"
    gamma: float = 2.0


SCHEMAS = {"criterion": {"focal": FocalLossConfig}}
