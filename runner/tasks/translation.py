"""Translation: parallel text ``{data}/{split}.{src}`` / ``{split}.{tgt}``, as fairseq's translation task."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from runner.config import DatasetConfig, TranslationConfig
from runner.data.batching import batch_by_size, ordered_indices
from runner.data.pair_dataset import LanguagePairDataset
from runner.data.prepare import PreparedData, prepare_pairs
from runner.data.text import DataError, read_parallel
from runner.data.tokenizer import SentencePieceTokenizer
from runner.dictionary import Dictionary
from runner.indexed_dataset import IndexedDataset

log = logging.getLogger(__name__)


class TranslationTask:
    """Prepares the data, builds model and criterion for it, and runs one train or valid step on a batch."""

    def __init__(self, **cfg: Any):
        self.cfg = TranslationConfig(**cfg)
        self.prepared: Optional[PreparedData] = None
        self._datasets: dict[str, LanguagePairDataset] = {}

    # ------------------------------------------------------------------------------------------------------ data
    def text_path(self, split: str, lang: str) -> Path:
        return Path(self.cfg.data) / f"{split}.{lang}"

    def read_split(self, split: str) -> tuple[list[str], list[str]]:
        """Raw source and target lines of ``split``."""
        return read_parallel(self.text_path(split, self.cfg.source_lang), self.text_path(split, self.cfg.target_lang))

    def prepare(self, force: bool = False) -> PreparedData:
        """Make sure the binarized data is there and current (preparing it if missing or stale)."""
        c = self.cfg
        inputs = [self.text_path(s, lang) for s in c.splits for lang in (c.source_lang, c.target_lang)]
        self.prepared = prepare_pairs(
            c.data_bin,
            inputs,
            {"task": "translation"},
            c.splits,
            (c.source_lang, c.target_lang),
            self.read_split,
            c.spm_model,
            c.dict_path,
            c.vocab_size,
            c.spm_model_type,
            c.character_coverage,
            unk_warn_rate=c.unk_warn_rate,
            max_unk_rate=c.max_unk_rate,
            force=force,
        )
        return self.prepared

    def _need_prepared(self) -> PreparedData:
        if self.prepared is None:
            self.prepare()
        assert self.prepared is not None
        return self.prepared

    @property
    def source_dictionary(self) -> Dictionary:
        return self._need_prepared().dictionary

    @property
    def target_dictionary(self) -> Dictionary:
        return self._need_prepared().dictionary

    def tokenizer(self) -> SentencePieceTokenizer:
        return SentencePieceTokenizer(self._need_prepared().spm_path)

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

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild this task's vocabulary without the data folder."""
        p = self._need_prepared()
        return {"dictionary": list(p.dictionary.symbols), "spm_model": str(p.spm_path)}

    @staticmethod
    def move_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """The batch with every tensor on ``device``."""

        def move(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                return x.to(device, non_blocking=True)
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            return x

        return move(batch)
