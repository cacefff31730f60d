"""What every text task shares: preparing its corpus (sentencepiece, dictionary, binarized splits) once, the
vocabulary it exposes to models and checkpoints, and moving batches to a device."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Optional

import torch

from runner.config import VocabularyConfig
from runner.data.prepare import Corpus, PreparedData, prepare_corpus
from runner.data.tokenizer import SentencePieceTokenizer
from runner.dictionary import Dictionary


class TextTask(ABC):
    """Base of the tasks whose data is text: subclasses say what their corpus is (:meth:`corpus`)."""

    cfg: Any  # a VocabularyConfig subclass with data_bin

    def __init__(self) -> None:
        self.prepared: Optional[PreparedData] = None
        self._datasets: dict[str, Any] = {}

    @abstractmethod
    def corpus(self) -> Corpus:
        """The raw files, splits and sides of this task's data."""

    def user_defined_symbols(self) -> Sequence[str]:
        """Symbols a trained sentencepiece model must keep whole (e.g. dialog speaker tags)."""
        return ()

    def prepare(self, force: bool = False) -> PreparedData:
        """Make sure the binarized data is there and current (preparing it if missing or stale)."""
        vocab: VocabularyConfig = self.cfg
        self.prepared = prepare_corpus(self.cfg.data_bin, self.corpus(), vocab, self.user_defined_symbols(), force)
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
