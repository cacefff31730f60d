"""A token <-> id map that reads and writes fairseq's ``dict.txt``, so fairseq dictionaries and ours interchange."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

BOS, PAD, EOS, UNK = "<s>", "<pad>", "</s>", "<unk>"


class DictionaryFormatError(ValueError):
    """A dict.txt line that is not ``<token> <count>``; the message names the file and line."""


class Dictionary:
    """fairseq's layout: ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, then the file's tokens in order."""

    def __init__(self) -> None:
        self.symbols: list[str] = []
        self.count: list[int] = []
        self.indices: dict[str, int] = {}
        self.bos_index = self.add_symbol(BOS)
        self.pad_index = self.add_symbol(PAD)
        self.eos_index = self.add_symbol(EOS)
        self.unk_index = self.add_symbol(UNK)
        self.nspecial = len(self.symbols)

    def __len__(self) -> int:
        return len(self.symbols)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dictionary) and self.symbols == other.symbols

    def __getitem__(self, idx: int) -> str:
        return self.symbols[idx] if 0 <= idx < len(self.symbols) else UNK

    def pad(self) -> int:
        return self.pad_index

    def eos(self) -> int:
        return self.eos_index

    def unk(self) -> int:
        return self.unk_index

    def bos(self) -> int:
        return self.bos_index

    def index(self, sym: str) -> int:
        """The id of ``sym``, or ``<unk>``'s when it is unknown."""
        return self.indices.get(sym, self.unk_index)

    def add_symbol(self, word: str, n: int = 1, overwrite: bool = False) -> int:
        """Add ``word`` (or add ``n`` to its count) and return its id."""
        if word in self.indices and not overwrite:
            idx = self.indices[word]
            self.count[idx] += n
            return idx
        idx = len(self.symbols)
        self.indices[word] = idx
        self.symbols.append(word)
        self.count.append(n)
        return idx

    def encode_line(self, line: str, append_eos: bool = True) -> torch.Tensor:
        """Whitespace-split tokens to ids (+ ``</s>``), as fairseq's binarizer does."""
        ids = [self.index(w) for w in line.split()]
        if append_eos:
            ids.append(self.eos_index)
        return torch.tensor(ids, dtype=torch.int32)

    def string(self, ids: Iterable[int], strip_eos: bool = True) -> str:
        """Ids back to space-separated tokens, without padding (and ``</s>``)."""
        skip = {self.pad_index} | ({self.eos_index} if strip_eos else set())
        return " ".join(self[int(i)] for i in ids if int(i) not in skip)

    # --------------------------------------------------------------------------------------------------- files
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Dictionary:
        """Read a fairseq dict.txt; a malformed line raises an error naming the file and line."""
        d = cls()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"dictionary {path} not found")
        with path.open(encoding="utf-8") as f:
            for lineno, raw in enumerate(f, start=1):
                line = raw.rstrip("\n")
                if not line.strip():
                    continue
                overwrite = False
                parts = line.rsplit(" ", 1)
                if len(parts) == 2 and parts[1] == "#fairseq:overwrite":
                    overwrite = True
                    parts = parts[0].rsplit(" ", 1)
                if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                    raise DictionaryFormatError(f"{path}, line {lineno}: expected '<token> <count>', got {line[:80]!r}")
                word, count = parts
                if word in d.indices and not overwrite:
                    raise DictionaryFormatError(
                        f"{path}, line {lineno}: duplicate token {word!r} (add '#fairseq:overwrite' to allow it)"
                    )
                d.add_symbol(word, int(count), overwrite=overwrite)
        return d

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write dict.txt without the special symbols, as fairseq does."""
        lines = [f"{s} {c}\n" for s, c in zip(self.symbols[self.nspecial :], self.count[self.nspecial :])]
        Path(path).write_text("".join(lines), encoding="utf-8")

    @classmethod
    def build(cls, counts: Counter[str], pad_to_multiple: int = 8) -> Dictionary:
        """A dictionary from token counts: by count descending (ties by token), padded like fairseq's."""
        d = cls()
        for word, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            if word not in d.indices:
                d.add_symbol(word, n)
        i = 0
        while len(d) % pad_to_multiple:
            d.add_symbol(f"madeupword{i:04d}", 0)
            i += 1
        return d

    def unknown_tokens(self, tokens: Sequence[str]) -> list[str]:
        """The tokens of ``tokens`` that this dictionary maps to ``<unk>``."""
        return [t for t in tokens if t not in self.indices]
