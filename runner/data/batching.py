"""Length-bucketed batches under a token budget, keeping every example (fairseq drops remainders; we do not)."""

from __future__ import annotations

from typing import Optional

import numpy as np


def ordered_indices(src_sizes: np.ndarray, tgt_sizes: np.ndarray, seed: int) -> np.ndarray:
    """Indices sorted by target then source length, with ties broken by a seeded shuffle."""
    perm = np.random.RandomState(seed).permutation(len(tgt_sizes))
    order = np.lexsort((src_sizes[perm], tgt_sizes[perm]))
    return perm[order]


def batch_by_size(
    indices: np.ndarray,
    sizes: np.ndarray,
    max_tokens: Optional[int],
    max_sentences: Optional[int] = None,
    required_multiple: int = 1,
) -> list[np.ndarray]:
    """Cut ``indices`` (in order) into batches whose ``len(batch) * max(size)`` stays within ``max_tokens``.

    ``sizes[i]`` is the padded length example ``i`` needs. When a batch is full its size is rounded down to
    ``required_multiple`` and the rest starts the next batch; the final batch keeps whatever is left.
    """
    if max_tokens is None and max_sentences is None:
        raise ValueError("set dataset.max_tokens or dataset.batch_size")
    batches: list[np.ndarray] = []
    current: list[int] = []
    longest = 0
    for idx in indices.tolist():
        n = int(sizes[idx])
        new_longest = max(longest, n)
        too_many_tokens = max_tokens is not None and (len(current) + 1) * new_longest > max_tokens
        too_many_sents = max_sentences is not None and len(current) + 1 > max_sentences
        if current and (too_many_tokens or too_many_sents):
            keep = len(current)
            if required_multiple > 1 and keep >= required_multiple:
                keep -= keep % required_multiple
            batches.append(np.asarray(current[:keep], dtype=np.int64))
            current = current[keep:]
            longest = max((int(sizes[i]) for i in current), default=0)
            new_longest = max(longest, n)
        current.append(idx)
        longest = new_longest
    if current:
        batches.append(np.asarray(current, dtype=np.int64))
    return batches
