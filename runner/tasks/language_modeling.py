"""Language modelling: monolingual text as one token stream cut into fixed-length blocks (fairseq's task).

Each split is sentencepiece-encoded and binarized like the translation data (cached in ``data_bin``, rebuilt when an
input or setting changes). The stream of a split is ``</s>`` followed by every line's ids (each ending in ``</s>``);
a sample predicts ``stream[start:end]`` from ``stream[start-1:end-1]``, so every token, the first included, is
predicted exactly once. ``sample_break_mode=none`` cuts the stream into ``tokens_per_sample`` blocks; ``eos`` makes one
sample per line (lines longer than a block are split, never dropped).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from runner.config import DatasetConfig, LanguageModelingConfig
from runner.data.batching import batch_by_size
from runner.data.prepare import Corpus
from runner.data.text import DataError, read_lines
from runner.indexed_dataset import IndexedDataset
from runner.tasks.base import TextTask

log = logging.getLogger(__name__)
BREAK_MODES = ("none", "eos")


def block_spans(line_sizes: np.ndarray, block: int, mode: str) -> np.ndarray:
    """[N, 2] target ranges ``[start, end)`` over the stream (which begins with one ``</s>``)."""
    if mode not in BREAK_MODES:
        raise ValueError(f"task.sample_break_mode must be one of {list(BREAK_MODES)}, got {mode!r}")
    if block < 1:
        raise ValueError(f"task.tokens_per_sample must be >= 1, got {block}")
    total = int(line_sizes.sum())
    if mode == "none":
        starts = np.arange(1, total + 1, block, dtype=np.int64)
        return np.stack([starts, np.minimum(starts + block, total + 1)], axis=1)
    spans = []
    pos = 1
    for n in line_sizes.tolist():
        for s in range(pos, pos + n, block):
            spans.append((s, min(s + block, pos + n)))
        pos += n
    return np.asarray(spans, dtype=np.int64).reshape(-1, 2)


class BlockDataset:
    """Samples of a token stream; ``context_window`` prepends up to that many earlier tokens as unscored input."""

    def __init__(self, stream: np.ndarray, spans: np.ndarray, pad_idx: int, context_window: int = 0):
        self.stream = torch.from_numpy(stream.astype(np.int64))
        self.spans = spans
        self.pad_idx = pad_idx
        self.context_window = context_window
        starts = spans[:, 0]
        self.context = np.minimum(starts - 1, context_window)  # earlier tokens each sample sees
        self.sizes = spans[:, 1] - spans[:, 0] + self.context

    def __len__(self) -> int:
        return len(self.spans)

    def collate(self, indices: Sequence[int]) -> dict[str, Any]:
        """fairseq's batch dictionary: right-padded input blocks and their next-token targets."""
        inputs, targets = [], []
        for i in indices:
            start, end = (int(x) for x in self.spans[int(i)])
            ctx = int(self.context[int(i)])
            inputs.append(self.stream[start - 1 - ctx : end - 1])
            tgt = self.stream[start - ctx : end].clone()
            tgt[:ctx] = self.pad_idx  # context tokens are input only
            targets.append(tgt)
        width = max(len(x) for x in inputs)
        src = torch.full((len(inputs), width), self.pad_idx, dtype=torch.long)
        target = torch.full((len(inputs), width), self.pad_idx, dtype=torch.long)
        for row, (x, y) in enumerate(zip(inputs, targets)):
            src[row, : len(x)] = x
            target[row, : len(y)] = y
        return {
            "id": torch.as_tensor(np.asarray(indices, dtype=np.int64)),
            "nsentences": len(inputs),
            "ntokens": int(target.ne(self.pad_idx).sum()),
            "net_input": {"src_tokens": src, "src_lengths": torch.tensor([len(x) for x in inputs])},
            "target": target,
        }


class LanguageModelingTask(TextTask):
    """Prepares monolingual data, builds a decoder-only model and its criterion, serves blocked batches."""

    def __init__(self, **cfg: Any):
        super().__init__()
        self.cfg = LanguageModelingConfig(**cfg)

    # ------------------------------------------------------------------------------------------------------ data
    def text_path(self, split: str) -> Path:
        return Path(self.cfg.data) / f"{split}.{self.side}"

    @property
    def side(self) -> str:
        return self.cfg.lang or "txt"

    def corpus(self) -> Corpus:
        c = self.cfg
        return Corpus(
            inputs=[self.text_path(s) for s in c.splits],
            splits=c.splits,
            sides=(self.side,),
            read_split=lambda split: [read_lines(self.text_path(split))],
            stem=lambda split, side: split,
            settings={"task": "language_modeling"},
        )

    def dataset(self, split: str, context_window: int = 0) -> BlockDataset:
        """The blocked samples of ``split``."""
        key = f"{split}/{context_window}"
        if key not in self._datasets:
            p = self._need_prepared()
            if split not in self.cfg.splits:
                raise DataError(f"split {split!r} is not prepared; task.splits is {list(self.cfg.splits)}")
            ds = IndexedDataset(p.data_bin / split)
            stream = ids_stream(np.fromfile(p.data_bin / f"{split}.bin", dtype=ds.dtype), p.dictionary.eos())
            spans = block_spans(
                np.asarray(ds.sizes, dtype=np.int64), self.cfg.tokens_per_sample, self.cfg.sample_break_mode
            )
            self._datasets[key] = BlockDataset(stream, spans, p.dictionary.pad(), context_window)
        return self._datasets[key]

    def batches(
        self, split: str, max_positions: tuple[int, int], dcfg: DatasetConfig, seed: int, train: bool
    ) -> list[np.ndarray]:
        """Batches of blocks under ``max_tokens``/``batch_size``; a block longer than the model allows is an error."""
        ds = self.dataset(split)
        longest = int(ds.sizes.max()) if len(ds) else 0
        if longest > max_positions[0]:
            raise DataError(
                f"{split}: samples of {longest} tokens do not fit the model's {max_positions[0]} positions; lower "
                f"task.tokens_per_sample ({self.cfg.tokens_per_sample}) or raise model.max_target_positions"
            )
        order = np.random.RandomState(seed).permutation(len(ds))
        order = order[np.argsort(ds.sizes[order], kind="stable")]
        return batch_by_size(order, ds.sizes, dcfg.max_tokens, dcfg.batch_size, dcfg.required_batch_size_multiple)

    # ---------------------------------------------------------------------------------------------------- build
    def build_model(self, model_cfg: DictConfig) -> nn.Module:
        d = self.target_dictionary
        return instantiate(model_cfg, vocab_size=len(d), padding_idx=d.pad())

    def build_criterion(self, criterion_cfg: DictConfig) -> nn.Module:
        return instantiate(criterion_cfg, padding_idx=self.target_dictionary.pad())


def ids_stream(ids: np.ndarray, eos: int) -> np.ndarray:
    """The stream a split is scored on: ``</s>`` then all lines' ids (each already ending in ``</s>``)."""
    return np.concatenate([np.asarray([eos], dtype=np.int64), ids.astype(np.int64)])
