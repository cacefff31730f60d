"""Translation: parallel text ``{data}/{split}.{src}`` / ``{split}.{tgt}``, as fairseq's translation task."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from runner.config import DatasetConfig, TranslationConfig
from runner.data.batching import batch_by_size, ordered_indices
from runner.data.pair_dataset import LanguagePairDataset
from runner.data.prepare import Corpus
from runner.data.text import DataError, read_parallel
from runner.indexed_dataset import IndexedDataset
from runner.tasks.base import TextTask

log = logging.getLogger(__name__)


class TranslationTask(TextTask):
    """Prepares the data, builds model and criterion for it, and runs one train or valid step on a batch."""

    def __init__(self, **cfg: Any):
        super().__init__()
        self.cfg = TranslationConfig(**cfg)

    # ------------------------------------------------------------------------------------------------------ data
    def text_path(self, split: str, lang: str) -> Path:
        return Path(self.cfg.data) / f"{split}.{lang}"

    def read_split(self, split: str) -> tuple[list[str], list[str]]:
        """Raw source and target lines of ``split``."""
        return read_parallel(self.text_path(split, self.cfg.source_lang), self.text_path(split, self.cfg.target_lang))

    def corpus(self) -> Corpus:
        c = self.cfg
        langs = (c.source_lang, c.target_lang)
        return Corpus(
            inputs=[self.text_path(s, lang) for s in c.splits for lang in langs],
            splits=c.splits,
            sides=langs,
            read_split=self.read_split,
            stem=lambda split, lang: f"{split}.{c.source_lang}-{c.target_lang}.{lang}",
            settings={"task": "translation"},
        )

    def dataset(self, split: str) -> LanguagePairDataset:
        if split not in self._datasets:
            p = self._need_prepared()
            if split not in self.cfg.splits:
                raise DataError(f"split {split!r} is not prepared; task.splits is {list(self.cfg.splits)}")
            c = self.cfg
            src = IndexedDataset(p.prefix(split, c.source_lang, c.target_lang, c.source_lang))
            tgt = IndexedDataset(p.prefix(split, c.source_lang, c.target_lang, c.target_lang))
            d = self.source_dictionary
            self._datasets[split] = LanguagePairDataset(src, tgt, d.pad(), d.eos())
        return self._datasets[split]

    def batches(
        self, split: str, max_positions: tuple[int, int], dcfg: DatasetConfig, seed: int, train: bool
    ) -> list[np.ndarray]:
        """Length-bucketed batches of ``split``; over-long examples are skipped in train, refused in valid/test."""
        ds = self.dataset(split)
        max_src, max_tgt = max_positions
        too_long = (ds.src_sizes > max_src) | (ds.tgt_sizes > max_tgt)
        if dcfg.max_tokens is not None:
            too_long |= np.maximum(ds.src_sizes, ds.tgt_sizes) > dcfg.max_tokens
        bad = np.flatnonzero(too_long)
        if len(bad):
            first = int(bad[0])
            detail = (
                f"line {first + 1} of {self.text_path(split, self.cfg.source_lang)} has {ds.src_sizes[first]} source "
                f"and {ds.tgt_sizes[first]} target tokens (incl. </s>); limits: model.max_source_positions={max_src}, "
                f"model.max_target_positions={max_tgt}, dataset.max_tokens={dcfg.max_tokens}"
            )
            if not train and not dcfg.skip_invalid_size_inputs_valid_test:
                raise DataError(
                    f"{split}: {len(bad)} example(s) too long, e.g. {detail}. "
                    "Set dataset.skip_invalid_size_inputs_valid_test=true to skip them."
                )
            log.warning("%s: skipped %d example(s) that are too long, e.g. %s", split, len(bad), detail)
        order = ordered_indices(ds.src_sizes, ds.tgt_sizes, seed)
        order = order[~too_long[order]]
        return batch_by_size(
            order,
            np.maximum(ds.src_sizes, ds.tgt_sizes),
            dcfg.max_tokens,
            dcfg.batch_size,
            dcfg.required_batch_size_multiple,
        )

    # ---------------------------------------------------------------------------------------------------- build
    def build_model(self, model_cfg: DictConfig) -> nn.Module:
        d = self.source_dictionary
        return instantiate(
            model_cfg, src_vocab_size=len(d), tgt_vocab_size=len(self.target_dictionary), padding_idx=d.pad()
        )

    def build_criterion(self, criterion_cfg: DictConfig) -> nn.Module:
        return instantiate(criterion_cfg, padding_idx=self.target_dictionary.pad())
