"""Language modelling: monolingual text as one token stream cut into fixed-length blocks (fairseq's task).

Each split is sentencepiece-encoded and binarized like the translation data (cached in ``data_bin``, rebuilt when an
input or setting changes). The stream of a split is ``</s>`` followed by every line's ids (each ending in ``</s>``);
a sample predicts ``stream[start:end]`` from ``stream[start-1:end-1]``, so every token, the first included, is
predicted exactly once. ``sample_break_mode=none`` cuts the stream into ``tokens_per_sample`` blocks; ``eos`` makes one
sample per line (lines longer than a block are split, never dropped).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from runner.config import DatasetConfig, LanguageModelingConfig
from runner.data.batching import batch_by_size
from runner.data.prepare import PreparedData, SideStats, _locked, _sha256, check_unknowns
from runner.data.text import DataError, read_lines
from runner.data.tokenizer import SentencePieceTokenizer
from runner.dictionary import Dictionary
from runner.indexed_dataset import IndexedDataset, best_dtype, write_indexed_dataset

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
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


class LanguageModelingTask:
    """Prepares monolingual data, builds a decoder-only model and its criterion, serves blocked batches."""

    def __init__(self, **cfg: Any):
        self.cfg = LanguageModelingConfig(**cfg)
        self.prepared: Optional[PreparedData] = None
        self._datasets: dict[str, BlockDataset] = {}

    # ------------------------------------------------------------------------------------------------------ data
    def text_path(self, split: str) -> Path:
        suffix = self.cfg.lang or "txt"
        return Path(self.cfg.data) / f"{split}.{suffix}"

    def prepare(self, force: bool = False) -> PreparedData:
        """Make sure the binarized splits are there and current (preparing them if missing or stale)."""
        c = self.cfg
        data_bin = Path(c.data_bin)
        inputs = [self.text_path(s) for s in c.splits] + [Path(p) for p in (c.spm_model, c.dict_path) if p]
        for p in inputs:
            if not p.is_file():
                raise DataError(f"{p}: file not found")
        manifest = {
            "format": FORMAT_VERSION,
            "inputs": {str(p): _sha256(p) for p in inputs},
            "settings": {
                "task": "language_modeling",
                "splits": list(c.splits),
                "lang": c.lang,
                "spm_model": c.spm_model,
                "dict_path": c.dict_path,
                "vocab_size": c.vocab_size,
                "spm_model_type": c.spm_model_type,
                "character_coverage": c.character_coverage,
            },
        }
        manifest_path = data_bin / "manifest.json"
        with _locked(data_bin):
            old = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
            if force or old is None or {k: old.get(k) for k in manifest} != manifest:
                manifest_path.unlink(missing_ok=True)
                stats = self._build(data_bin)
                manifest["stats"] = {k: asdict(v) for k, v in stats.items()}
                tmp = manifest_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
                os.replace(tmp, manifest_path)
            else:
                log.info("using prepared data in %s", data_bin)
                stats = {k: SideStats(**v) for k, v in old["stats"].items()}
        self.prepared = PreparedData(data_bin, Dictionary.load(data_bin / "dict.txt"), data_bin / "spm.model", stats)
        check_unknowns(self.prepared, c.dict_path, c.spm_model, c.unk_warn_rate, c.max_unk_rate)
        return self.prepared

    def _build(self, data_bin: Path) -> dict[str, SideStats]:
        c = self.cfg
        texts = {split: read_lines(self.text_path(split)) for split in c.splits}
        spm_path = data_bin / "spm.model"
        if c.spm_model:
            spm_path.write_bytes(Path(c.spm_model).read_bytes())
            tok = SentencePieceTokenizer(spm_path)
        else:
            log.info("training a %d-piece sentencepiece model on %s", c.vocab_size, c.splits[0])
            tok = SentencePieceTokenizer.train(
                texts[c.splits[0]], spm_path, c.vocab_size, c.spm_model_type, c.character_coverage
            )
        pieces = {split: [tok.encode(line) for line in lines] for split, lines in texts.items()}
        if c.dict_path:
            dictionary = Dictionary.load(c.dict_path)
        else:
            counts: Counter[str] = Counter()
            for line in pieces[c.splits[0]]:
                counts.update(line.split())
            dictionary = Dictionary.build(counts)
        dictionary.save(data_bin / "dict.txt")
        stats = {}
        for split, lines in pieces.items():
            ids = [dictionary.encode_line(line).numpy() for line in lines]
            write_indexed_dataset(data_bin / split, ids, best_dtype(len(dictionary)))
            unknown: Counter[str] = Counter()
            for line in lines:
                unknown.update(dictionary.unknown_tokens(line.split()))
            stats[split] = SideStats(
                sentences=len(ids),
                tokens=int(sum(len(x) for x in ids)),
                unk=int(sum(int((x == dictionary.unk()).sum()) for x in ids)),
                top_unknown=[w for w, _ in unknown.most_common(5)],
            )
        return stats

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

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild this task's vocabulary without the data folder."""
        p = self._need_prepared()
        return {"dictionary": list(p.dictionary.symbols), "spm_model": str(p.spm_path)}

    @staticmethod
    def move_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """The batch with every tensor on ``device``."""
        net = {k: v.to(device, non_blocking=True) for k, v in batch["net_input"].items()}
        return {**batch, "id": batch["id"].to(device), "target": batch["target"].to(device), "net_input": net}


def ids_stream(ids: np.ndarray, eos: int) -> np.ndarray:
    """The stream a split is scored on: ``</s>`` then all lines' ids (each already ending in ``</s>``)."""
    return np.concatenate([np.asarray([eos], dtype=np.int64), ids.astype(np.int64)])
