"""Checkpoint files: atomic writes, safe reads, and the retention policy (best, last, every N epochs/updates).

A checkpoint is a dict of tensors and plain containers only (the resolved config, state_dicts, trainer counters,
RNG states), so it loads with ``torch.load(weights_only=True)``: opening one never runs pickled code.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit; the message names the file."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_atomic(state: dict[str, Any], paths: list[Path]) -> None:
    """Write ``state`` to the first path via a temporary file and rename, then hard-link it to the others.

    A reader (or a crash) sees either the previous file or the complete new one, never a partial write.
    """
    if not paths:
        return
    first = paths[0]
    first.parent.mkdir(parents=True, exist_ok=True)
    tmp = first.with_name(f".{first.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, first)
    for other in paths[1:]:
        tmp_other = other.with_name(f".{other.name}.tmp")
        tmp_other.unlink(missing_ok=True)
        os.link(first, tmp_other)
        os.replace(tmp_other, other)
    _fsync_dir(first.parent)


def load(path: str | Path) -> dict[str, Any]:
    """Read one of our checkpoints without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a runner checkpoint (no 'model' entry)")
    return state


def prune(save_dir: Path, keep_interval_updates: int, keep_last_epochs: int) -> None:
    """Delete the oldest update (``checkpoint_E_U.pt``) and epoch (``checkpointE.pt``) checkpoints beyond the limits."""
    for pattern, keep in (
        (r"checkpoint_\d+_(\d+)\.pt", keep_interval_updates),
        (r"checkpoint(\d+)\.pt", keep_last_epochs),
    ):
        if keep < 0:
            continue
        found = sorted(
            ((int(m.group(1)), p) for p in save_dir.iterdir() if (m := re.fullmatch(pattern, p.name))),
            reverse=True,
        )
        for _, p in found[keep:]:
            p.unlink(missing_ok=True)
            log.info("removed old checkpoint %s", p)
