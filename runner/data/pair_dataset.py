"""Source/target pairs from binarized splits, collated into fairseq's batch dictionary.

The batch dictionary (the contract between tasks, models and criteria):
``id`` (LongTensor[B], example index in its split), ``nsentences``, ``ntokens`` (non-pad target tokens),
``net_input`` = {``src_tokens`` [B, S] left-padded, ``src_lengths`` [B], ``prev_output_tokens`` [B, T]
right-padded target with ``</s>`` moved to the front}, and ``target`` [B, T] right-padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from runner.indexed_dataset import IndexedDataset


def collate_tokens(
    values: Sequence[torch.Tensor], pad_idx: int, left_pad: bool, move_eos_to_beginning: bool = False
) -> torch.Tensor:
    """Stack 1-D id tensors into a padded [B, L] matrix."""
    size = max(v.size(0) for v in values)
    out = values[0].new_full((len(values), size), pad_idx)
    for i, v in enumerate(values):
        if move_eos_to_beginning:
            v = torch.cat([v[-1:], v[:-1]])
        if left_pad:
            out[i, size - len(v) :] = v
        else:
            out[i, : len(v)] = v
    return out


class LanguagePairDataset:
    """Pairs of id sequences (each ending in ``</s>``) with their lengths, for batching and collation."""

    def __init__(self, src: IndexedDataset, tgt: IndexedDataset, pad_idx: int, eos_idx: int):
        if len(src) != len(tgt):
            raise ValueError(f"source has {len(src)} examples but target has {len(tgt)}")
        self.src, self.tgt = src, tgt
        self.pad_idx, self.eos_idx = pad_idx, eos_idx
        self.src_sizes = np.asarray(src.sizes, dtype=np.int64)
        self.tgt_sizes = np.asarray(tgt.sizes, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.src)

    def collate(self, indices: Sequence[int]) -> dict[str, Any]:
        """The batch dictionary for these example indices (in the given order)."""
        src = [self.src[int(i)] for i in indices]
        tgt = [self.tgt[int(i)] for i in indices]
        target = collate_tokens(tgt, self.pad_idx, left_pad=False)
        return {
            "id": torch.as_tensor(np.asarray(indices, dtype=np.int64)),
            "nsentences": len(indices),
            "ntokens": int(sum(len(t) for t in tgt)),
            "net_input": {
                "src_tokens": collate_tokens(src, self.pad_idx, left_pad=True),
                "src_lengths": torch.tensor([len(s) for s in src], dtype=torch.long),
                "prev_output_tokens": collate_tokens(tgt, self.pad_idx, left_pad=False, move_eos_to_beginning=True),
            },
            "target": target,
        }
