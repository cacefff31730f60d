"""Rebuild a trained model from its checkpoint alone: the saved config builds it, the task state gives its vocabulary.

Used by generate, interactive and eval_lm. Every failure names the checkpoint and what is wrong with it (a model of
another task, a missing sentencepiece model, a dictionary that does not fit the weights).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from runner import checkpoint as ckpt
from runner.data.text import DataError
from runner.data.tokenizer import SentencePieceTokenizer
from runner.dictionary import Dictionary
from runner.plugins import load_plugins, locate

log = logging.getLogger(__name__)

SEQ2SEQ, LANGUAGE_MODEL = "seq2seq", "language_model"


@dataclass
class LoadedModel:
    """A model in eval mode with what inference needs around it."""

    path: Path
    cfg: DictConfig  # the composed config the model was trained with
    state: dict[str, Any]  # the raw checkpoint (for result records)
    model: nn.Module
    dictionary: Dictionary
    tokenizer: SentencePieceTokenizer
    kind: str  # SEQ2SEQ or LANGUAGE_MODEL
    device: torch.device
    # A source that is not text (e.g. images): the task class's ``inference_source(task_cfg)``, an object with
    # ``read(line, data_dir, where) -> Tensor`` (first dim: source positions) and ``collate(list) -> batch``.
    source: Optional[Any] = None

    @property
    def task_name(self) -> str:
        return str(self.cfg.task.get("_target_", "?"))

    @property
    def source_lang(self) -> Optional[str]:
        return self.cfg.task.get("source_lang")

    @property
    def target_lang(self) -> Optional[str]:
        return self.cfg.task.get("target_lang", self.cfg.task.get("lang"))

    def data_dir(self, override: Optional[str]) -> Path:
        """The folder of raw splits: ``override`` or the task's ``data`` at training time."""
        if override:
            return Path(override)
        data = self.cfg.task.get("data")
        if not data:
            raise DataError(f"{self.path}: the checkpoint's task has no data folder; pass data=FOLDER")
        return Path(data)

    def encode(self, line: str) -> torch.Tensor:
        """Raw text to ids ending in ``</s>`` (LongTensor)."""
        return self.dictionary.encode_line(self.tokenizer.encode(line)).long()

    def decode(self, ids: torch.Tensor) -> tuple[str, str]:
        """Ids to (space-joined pieces, detokenized text), without ``</s>``/padding."""
        pieces = self.dictionary.string(ids.tolist())
        return pieces, self.tokenizer.decode(pieces)


def dictionary_from_symbols(symbols: list[str], path: Path) -> Dictionary:
    """The dictionary a checkpoint recorded as its symbol list (specials first, as fairseq's)."""
    d = Dictionary()
    if list(symbols[: d.nspecial]) != d.symbols:
        raise ValueError(f"{path}: task_state.dictionary does not start with {d.symbols}")
    for sym in symbols[d.nspecial :]:
        d.add_symbol(sym, overwrite=True)
    return d


def model_kind(cfg: DictConfig) -> str:
    """Decoder-only language model or encoder-decoder, from the model's ``_target_``."""
    target = str(cfg.model.get("_target_", ""))
    return LANGUAGE_MODEL if "transformer_lm" in target or "LanguageModel" in target else SEQ2SEQ


def load_model(
    path: str | Path,
    expect: tuple[str, ...] = (SEQ2SEQ, LANGUAGE_MODEL),
    spm_model: Optional[str] = None,
    cpu: bool = False,
    bf16: bool = False,
    purpose: str = "this command",
    user_dir: Any = None,
) -> LoadedModel:
    """Load ``path`` (a checkpoint, or an exported folder) for inference; ``expect`` lists the model kinds
    ``purpose`` can use."""
    path = Path(path)
    if path.is_dir():  # a folder written by `python -m runner.export`
        from runner.export import read_exported

        state = read_exported(path)
    else:
        state = ckpt.load(path, mmap=True)  # weights paged in from the file, never held twice
    if "cfg" not in state or "task_state" not in state:
        raise ckpt.CheckpointError(f"{path}: has no 'cfg'/'task_state': not written by `python -m runner`")
    cfg = OmegaConf.create(state["cfg"])
    load_plugins(cfg, user_dir, keys=("task", "model"))  # plug-in models: importable, or a clear PluginError
    kind = model_kind(cfg)
    task = cfg.task.get("_target_", "?")
    if kind not in expect:
        hint = "runner.eval_lm" if kind == LANGUAGE_MODEL else "runner.generate or runner.interactive"
        raise ckpt.CheckpointError(
            f"{path} is a {kind.replace('_', ' ')} checkpoint (task {task}, model {cfg.model.get('_target_')}); "
            f"{purpose} needs a {' or '.join(e.replace('_', ' ') for e in expect)} checkpoint (try {hint})"
        )
    task_state = state["task_state"]
    dictionary = dictionary_from_symbols(list(task_state["dictionary"]), path)
    spm_path = Path(spm_model or task_state.get("spm_model") or "")
    if not spm_path.is_file():
        raise DataError(
            f"sentencepiece model {spm_path} (recorded in checkpoint {path}) not found: "
            "pass spm_model=PATH to the model it was trained with"
        )
    tokenizer = SentencePieceTokenizer(spm_path)
    pad = dictionary.pad()
    if kind == LANGUAGE_MODEL:
        sizes = {"vocab_size": len(dictionary)}
    else:
        sizes = {"src_vocab_size": len(dictionary), "tgt_vocab_size": len(dictionary)}
    # built on the meta device, taking the checkpoint's tensors: no random weights first
    model = ckpt.build_with_weights(lambda: instantiate(cfg.model, padding_idx=pad, **sizes), state["model"], path)
    device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
    model = model.to(device)
    if bf16:
        model = model.to(torch.bfloat16)
    model.eval()
    log.info("loaded %s (%s, %d symbols) on %s", path, task, len(dictionary), device)
    source_hook = getattr(locate(task), "inference_source", None) if task != "?" else None
    source = source_hook(cfg.task) if source_hook is not None else None
    return LoadedModel(path, cfg, state, model, dictionary, tokenizer, kind, device, source)
