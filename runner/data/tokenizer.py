"""sentencepiece: train a model on the training text when none is given, encode to pieces, decode back to text."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

import sentencepiece as spm

from runner.data.text import DataError


class SentencePieceTokenizer:
    """Text <-> space-joined pieces, the representation fairseq dictionaries and binarized data are built on."""

    def __init__(self, model_path: str | Path):
        model_path = Path(model_path)
        if not model_path.is_file():
            raise DataError(f"sentencepiece model {model_path} not found")
        self.path = model_path
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(model_path))
        except Exception as e:  # sentencepiece raises OSError/RuntimeError with an unhelpful text
            raise DataError(f"{model_path}: not a sentencepiece model ({e})") from None

    def encode(self, line: str) -> str:
        """One line of text to space-joined pieces."""
        return " ".join(self.sp.EncodeAsPieces(line))

    def decode(self, pieces: str) -> str:
        """Space-joined pieces back to text (sentencepiece's own detokenization)."""
        return self.sp.DecodePieces(pieces.split())

    @staticmethod
    def train(
        sentences: Sequence[str],
        out_path: str | Path,
        vocab_size: int,
        model_type: str = "unigram",
        character_coverage: float = 0.9995,
        user_defined_symbols: Sequence[str] = (),
        options: Optional[Mapping[str, object]] = None,
    ) -> SentencePieceTokenizer:
        """Train a model on ``sentences`` and save it at ``out_path``; ``options`` are further trainer flags (e.g. the
        special ids of a vocabulary convention)."""
        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences),
                model_writer=buf,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                user_defined_symbols=list(user_defined_symbols),
                num_threads=1,  # deterministic across machines
                minloglevel=2,
                **dict(options or {}),
            )
        except RuntimeError as e:
            raise DataError(f"training a sentencepiece model for {out_path} failed: {e}") from None
        Path(out_path).write_bytes(buf.getvalue())
        return SentencePieceTokenizer(out_path)
