"""The captioning task: prepares the vocabulary, reads images and captions, and builds the model and criterion.

It meets the contract runner's trainer relies on (README, "Writing a plug-in"): ``prepare()``, ``dataset(split)``,
``batches(...)``, ``build_model(cfg)``, ``build_criterion(cfg)``, ``move_to(batch, device)`` and ``state()``; and the
hook runner.generate uses for a source that is not text, ``inference_source(task_cfg)``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from runner.config import DatasetConfig
from runner.data.batching import batch_by_size, ordered_indices
from runner.data.text import DataError, read_parallel
from runner.data.tokenizer import SentencePieceTokenizer
from runner.dictionary import Dictionary

from .config import CaptioningConfig
from .dataset import ImageCaptionDataset, ImageSource, load_image

log = logging.getLogger(__name__)


class CaptioningTask:
    """Images + captions in the parallel layout of ``CaptioningConfig``; captions are sentencepiece-encoded."""

    def __init__(self, **cfg: Any):
        self.cfg = CaptioningConfig(**cfg)
        self.dictionary: Optional[Dictionary] = None
        self.spm_path: Optional[Path] = None
        self._datasets: dict[str, ImageCaptionDataset] = {}

    # ------------------------------------------------------------------------------------------------------ data
    def list_path(self, split: str, side: str) -> Path:
        return Path(self.cfg.data) / f"{split}.{side}"

    def read_split(self, split: str) -> tuple[list[str], list[str]]:
        """Image file names and captions of ``split``, aligned line by line."""
        return read_parallel(self.list_path(split, self.cfg.source_lang), self.list_path(split, self.cfg.target_lang))

    def prepare(self, force: bool = False) -> None:
        """Train the sentencepiece model and dictionary on the train captions, unless ``data_bin`` has current ones."""
        c = self.cfg
        data_bin = Path(c.data_bin)
        data_bin.mkdir(parents=True, exist_ok=True)
        train = self.list_path(c.splits[0], c.target_lang)
        if not train.is_file():
            raise DataError(f"{train}: file not found")
        key = {
            "captions": hashlib.sha256(train.read_bytes()).hexdigest(),
            "vocab_size": c.vocab_size,
            "spm_model_type": c.spm_model_type,
        }
        manifest = data_bin / "manifest.json"
        with open(data_bin / ".lock", "w") as lock:  # concurrent sweep jobs prepare once
            fcntl.flock(lock, fcntl.LOCK_EX)
            if force or not manifest.is_file() or json.loads(manifest.read_text()) != key:
                _, captions = self.read_split(c.splits[0])
                spm = SentencePieceTokenizer.train(
                    captions, data_bin / "spm.model", c.vocab_size, c.spm_model_type, 1.0
                )
                Dictionary.build(Counter(p for line in captions for p in spm.encode(line).split())).save(
                    data_bin / "dict.txt"
                )
                tmp = manifest.with_suffix(".tmp")
                tmp.write_text(json.dumps(key))
                os.replace(tmp, manifest)
                log.info("prepared the caption vocabulary in %s", data_bin)
        self.spm_path = data_bin / "spm.model"
        self.dictionary = Dictionary.load(data_bin / "dict.txt")

    def _prepared(self) -> tuple[Dictionary, Path]:
        if self.dictionary is None or self.spm_path is None:
            self.prepare()
        assert self.dictionary is not None and self.spm_path is not None
        return self.dictionary, self.spm_path

    @property
    def target_dictionary(self) -> Dictionary:
        return self._prepared()[0]

    def dataset(self, split: str) -> ImageCaptionDataset:
        """The examples of ``split`` (images decoded once, captions encoded in memory: the set is small)."""
        if split not in self._datasets:
            if split not in self.cfg.splits:
                raise DataError(f"split {split!r} is not one of task.splits {list(self.cfg.splits)}")
            d, spm_path = self._prepared()
            spm = SentencePieceTokenizer(spm_path)
            names, captions = self.read_split(split)
            list_file = self.list_path(split, self.cfg.source_lang)
            images: list[torch.Tensor] = []
            index: dict[str, int] = {}
            image_of = []
            for lineno, name in enumerate(names, start=1):
                if name not in index:
                    path = Path(self.cfg.data) / self.cfg.images / name
                    index[name] = len(images)
                    images.append(load_image(path, self.cfg.image_size, f"{list_file}, line {lineno}"))
                image_of.append(index[name])
            ids = [d.encode_line(spm.encode(line)).long() for line in captions]
            self._datasets[split] = ImageCaptionDataset(images, np.asarray(image_of), ids, d.pad())
        return self._datasets[split]

    def batches(
        self, split: str, max_positions: tuple[int, int], dcfg: DatasetConfig, seed: int, train: bool
    ) -> list[np.ndarray]:
        """Batches of captions of similar length; over-long captions are skipped in train, refused elsewhere."""
        ds = self.dataset(split)
        too_long = ds.tgt_sizes > max_positions[1]
        bad = np.flatnonzero(too_long)
        if len(bad):
            detail = (
                f"line {bad[0] + 1} of {self.list_path(split, self.cfg.target_lang)} has {ds.tgt_sizes[bad[0]]} "
                f"tokens (incl. </s>); model.max_target_positions={max_positions[1]}"
            )
            if not train and not dcfg.skip_invalid_size_inputs_valid_test:
                raise DataError(f"{split}: {len(bad)} caption(s) too long, e.g. {detail}")
            log.warning("%s: skipped %d caption(s) that are too long, e.g. %s", split, len(bad), detail)
        order = ordered_indices(np.zeros_like(ds.tgt_sizes), ds.tgt_sizes, seed)
        order = order[~too_long[order]]
        return batch_by_size(order, ds.tgt_sizes, dcfg.max_tokens, dcfg.batch_size, dcfg.required_batch_size_multiple)

    # ---------------------------------------------------------------------------------------------------- build
    def build_model(self, model_cfg: DictConfig) -> nn.Module:
        """The model for this vocabulary (built with the seq2seq signature runner.generate also uses)."""
        d = self.target_dictionary
        return instantiate(model_cfg, src_vocab_size=len(d), tgt_vocab_size=len(d), padding_idx=d.pad())

    def build_criterion(self, criterion_cfg: DictConfig) -> nn.Module:
        return instantiate(criterion_cfg, padding_idx=self.target_dictionary.pad())

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to decode without the data folder (the keys runner.generate reads)."""
        d, spm_path = self._prepared()
        return {"dictionary": list(d.symbols), "spm_model": str(spm_path.resolve())}

    @staticmethod
    def move_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """The batch with every tensor on ``device``."""
        if isinstance(batch, torch.Tensor):
            return batch.to(device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: CaptioningTask.move_to(v, device) for k, v in batch.items()}
        return batch

    # ------------------------------------------------------------------------------------------------ inference
    @staticmethod
    def inference_source(task_cfg: Any) -> ImageSource:
        """runner.generate's hook for sources that are not text: lines of ``{split}.img`` become images."""
        return ImageSource(str(task_cfg["images"]), int(task_cfg["image_size"]))
