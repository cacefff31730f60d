"""Raw text -> sentencepiece -> dictionary -> binarized splits, cached in ``data_bin`` and rebuilt when stale.

The cache key (``manifest.json``) holds the content hashes of every input file plus the settings that shape the
output, so editing a data file, swapping the sentencepiece model or changing the vocabulary size rebuilds, while a
re-run reuses. The manifest is written last: an interrupted preparation is redone, never half-used.
A lock file serialises concurrent preparations (sweep jobs starting together).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from runner.config import VocabularyConfig
from runner.data.text import DataError
from runner.data.tokenizer import SentencePieceTokenizer
from runner.dictionary import Dictionary
from runner.indexed_dataset import best_dtype, write_indexed_dataset

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclass
class SideStats:
    """What preparing one side of one split found: the numbers a user checks before training."""

    sentences: int
    tokens: int
    unk: int
    top_unknown: list[str]

    @property
    def unk_rate(self) -> float:
        return self.unk / max(self.tokens, 1)


@dataclass
class PreparedData:
    """Where the prepared artefacts of a task are, and their statistics per ``split.lang``."""

    data_bin: Path
    dictionary: Dictionary
    spm_path: Path
    stats: dict[str, SideStats]

    def prefix(self, split: str, src: str, tgt: str, lang: str) -> Path:
        return self.data_bin / f"{split}.{src}-{tgt}.{lang}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def _locked(data_bin: Path) -> Iterator[None]:
    data_bin.mkdir(parents=True, exist_ok=True)
    with open(data_bin / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class Corpus:
    """What a task hands to :func:`prepare_corpus`: its raw files, how to read a split, where each side goes.

    ``read_split(split)`` returns one list of lines per side (a translation pair has two sides, a language-model
    corpus one); ``stem(split, side)`` names the binarized files of that side in ``data_bin``.
    """

    inputs: Sequence[Path]
    splits: Sequence[str]
    sides: Sequence[str]
    read_split: Callable[[str], Sequence[list[str]]]
    stem: Callable[[str, str], str]
    settings: dict[str, object]


def prepare_corpus(
    data_bin: str | Path,
    corpus: Corpus,
    vocab: VocabularyConfig,
    user_defined_symbols: Sequence[str] = (),
    force: bool = False,
) -> PreparedData:
    """Prepare (or reuse) the binarized splits of ``corpus``; the first split trains sentencepiece and the dict."""
    data_bin = Path(data_bin)
    extra = [Path(p) for p in (vocab.spm_model, vocab.dict_path) if p]
    for p in [*corpus.inputs, *extra]:
        if not p.is_file():
            raise DataError(f"{p}: file not found")
    manifest = {
        "format": FORMAT_VERSION,
        "inputs": {str(p): _sha256(p) for p in [*corpus.inputs, *extra]},
        "settings": {
            **corpus.settings,
            "splits": list(corpus.splits),
            "sides": list(corpus.sides),
            "stems": [corpus.stem(split, side) for split in corpus.splits for side in corpus.sides],
            **{k: getattr(vocab, k) for k in ("spm_model", "dict_path", "vocab_size", "spm_model_type")},
            "character_coverage": vocab.character_coverage,
            "user_defined_symbols": list(user_defined_symbols),
            **({"spm_options": dict(vocab.spm_options)} if vocab.spm_options else {}),
            **({"dict_from_spm": True} if vocab.dict_from_spm else {}),
        },
    }
    manifest_path = data_bin / "manifest.json"
    with _locked(data_bin):
        old = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        if force or old is None or {k: old.get(k) for k in manifest} != manifest:
            if old is not None:
                log.info("data in %s is stale: rebuilding", data_bin)
            manifest_path.unlink(missing_ok=True)
            stats = _build(data_bin, corpus, vocab, user_defined_symbols)
            manifest["stats"] = {k: asdict(v) for k, v in stats.items()}
            tmp = manifest_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
            os.replace(tmp, manifest_path)
        else:
            log.info("using prepared data in %s", data_bin)
            stats = {k: SideStats(**v) for k, v in old["stats"].items()}
    prepared = PreparedData(data_bin, Dictionary.load(data_bin / "dict.txt"), data_bin / "spm.model", stats)
    check_unknowns(prepared, vocab.dict_path, vocab.spm_model, vocab.unk_warn_rate, vocab.max_unk_rate)
    return prepared


def _build(
    data_bin: Path, corpus: Corpus, vocab: VocabularyConfig, user_defined_symbols: Sequence[str]
) -> dict[str, SideStats]:
    texts = {split: corpus.read_split(split) for split in corpus.splits}
    first = corpus.splits[0]
    spm_path = data_bin / "spm.model"
    if vocab.spm_model:
        shutil.copyfile(vocab.spm_model, spm_path)
        tok = SentencePieceTokenizer(spm_path)
    else:
        log.info("training a %d-piece sentencepiece model on %s", vocab.vocab_size, first)
        tok = SentencePieceTokenizer.train(
            [line for side in texts[first] for line in side],
            spm_path,
            vocab.vocab_size,
            vocab.spm_model_type,
            vocab.character_coverage,
            user_defined_symbols,
            dict(vocab.spm_options),
        )
    pieces = {split: [[tok.encode(line) for line in side] for side in sides] for split, sides in texts.items()}
    if vocab.dict_path:
        dictionary = Dictionary.load(vocab.dict_path)
    elif vocab.dict_from_spm:
        dictionary = dictionary_from_spm(tok)
    else:
        counts: Counter[str] = Counter()
        for side in pieces[first]:
            for line in side:
                counts.update(line.split())
        dictionary = Dictionary.build(counts)
    dictionary.save(data_bin / "dict.txt")
    dtype = best_dtype(len(dictionary))
    stats: dict[str, SideStats] = {}
    for split, sides in pieces.items():
        for side, lines in zip(corpus.sides, sides):
            ids = [dictionary.encode_line(line).numpy() for line in lines]
            write_indexed_dataset(data_bin / corpus.stem(split, side), ids, dtype)
            unknown: Counter[str] = Counter()
            for line in lines:
                unknown.update(dictionary.unknown_tokens(line.split()))
            stats[f"{split}.{side}"] = SideStats(
                sentences=len(ids),
                tokens=int(sum(len(x) for x in ids)),
                unk=int(sum(int((x == dictionary.unk()).sum()) for x in ids)),
                top_unknown=[w for w, _ in unknown.most_common(5)],
            )
    return stats


def dictionary_from_spm(tok: SentencePieceTokenizer, count: int = 100) -> Dictionary:
    """The sentencepiece vocabulary in id order without its control/unknown pieces, ``count`` each, as NTT's
    ``sp_oall_32k.txt``: with two special pieces first, fairseq id = sentencepiece id + 2."""
    d = Dictionary()
    sp = tok.sp
    for i in range(sp.GetPieceSize()):
        if not (sp.IsControl(i) or sp.IsUnknown(i)):
            d.add_symbol(sp.IdToPiece(i), count)
    return d


def check_unknowns(
    prepared: PreparedData, dict_path: Optional[str], spm_model: Optional[str], warn_rate: float, max_rate: float
) -> None:
    """Report per split; warn loudly when ``<unk>`` is frequent and refuse a dictionary that does not fit."""
    for key, s in prepared.stats.items():
        log.info("%s: %d sentences, %d tokens, <unk> %.2f%%", key, s.sentences, s.tokens, 100 * s.unk_rate)
    for key, s in prepared.stats.items():
        if s.unk_rate > max_rate:
            what = f"dictionary {dict_path}" if dict_path else f"sentencepiece model {spm_model or prepared.spm_path}"
            raise DataError(
                f"the {what} does not fit the data: {100 * s.unk_rate:.1f}% of the tokens of {key} are <unk> "
                f"(task.max_unk_rate={max_rate}); most frequent unknown pieces: {s.top_unknown}. "
                "Was the data tokenized differently from the dictionary?"
            )
        if s.unk_rate > warn_rate:
            log.warning(
                "!!! %s: %.1f%% of tokens are <unk> (above task.unk_warn_rate=%s); most frequent unknown pieces: %s",
                key,
                100 * s.unk_rate,
                warn_rate,
                s.top_unknown,
            )
