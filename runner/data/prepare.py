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


def prepare_pairs(
    data_bin: str | Path,
    inputs: Sequence[Path],
    settings: dict[str, object],
    splits: Sequence[str],
    langs: tuple[str, str],
    read_split: Callable[[str], tuple[list[str], list[str]]],
    spm_model: Optional[str],
    dict_path: Optional[str],
    vocab_size: int,
    spm_model_type: str,
    character_coverage: float,
    user_defined_symbols: Sequence[str] = (),
    unk_warn_rate: float = 0.02,
    max_unk_rate: float = 0.2,
    force: bool = False,
) -> PreparedData:
    """Prepare (or reuse) the binarized ``splits`` of a source/target corpus; the first split trains spm/dict."""
    data_bin = Path(data_bin)
    src, tgt = langs
    extra = [Path(p) for p in (spm_model, dict_path) if p]
    for p in [*inputs, *extra]:
        if not p.is_file():
            raise DataError(f"{p}: file not found")
    manifest = {
        "format": FORMAT_VERSION,
        "inputs": {str(p): _sha256(p) for p in [*inputs, *extra]},
        "settings": {
            **settings,
            "splits": list(splits),
            "langs": list(langs),
            "spm_model": spm_model,
            "dict_path": dict_path,
            "vocab_size": vocab_size,
            "spm_model_type": spm_model_type,
            "character_coverage": character_coverage,
            "user_defined_symbols": list(user_defined_symbols),
        },
    }
    manifest_path = data_bin / "manifest.json"
    with _locked(data_bin):
        old = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        if force or old is None or {k: old.get(k) for k in manifest} != manifest:
            if old is not None:
                log.info("data in %s is stale: rebuilding", data_bin)
            manifest_path.unlink(missing_ok=True)
            stats = _build(
                data_bin,
                splits,
                langs,
                read_split,
                spm_model,
                dict_path,
                vocab_size,
                spm_model_type,
                character_coverage,
                user_defined_symbols,
            )
            manifest["stats"] = {k: asdict(v) for k, v in stats.items()}
            tmp = manifest_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
            os.replace(tmp, manifest_path)
        else:
            log.info("using prepared data in %s", data_bin)
            stats = {k: SideStats(**v) for k, v in old["stats"].items()}
    prepared = PreparedData(data_bin, Dictionary.load(data_bin / "dict.txt"), data_bin / "spm.model", stats)
    check_unknowns(prepared, dict_path, spm_model, unk_warn_rate, max_unk_rate)
    return prepared


def _build(
    data_bin: Path,
    splits: Sequence[str],
    langs: tuple[str, str],
    read_split: Callable[[str], tuple[list[str], list[str]]],
    spm_model: Optional[str],
    dict_path: Optional[str],
    vocab_size: int,
    spm_model_type: str,
    character_coverage: float,
    user_defined_symbols: Sequence[str],
) -> dict[str, SideStats]:
    src, tgt = langs
    texts = {split: read_split(split) for split in splits}
    spm_path = data_bin / "spm.model"
    if spm_model:
        shutil.copyfile(spm_model, spm_path)
        tok = SentencePieceTokenizer(spm_path)
    else:
        train_src, train_tgt = texts[splits[0]]
        log.info("training a %d-piece sentencepiece model on %s", vocab_size, splits[0])
        tok = SentencePieceTokenizer.train(
            [*train_src, *train_tgt], spm_path, vocab_size, spm_model_type, character_coverage, user_defined_symbols
        )
    pieces = {split: ([tok.encode(s) for s in a], [tok.encode(t) for t in b]) for split, (a, b) in texts.items()}
    if dict_path:
        dictionary = Dictionary.load(dict_path)
    else:
        counts: Counter[str] = Counter()
        for side in pieces[splits[0]]:
            for line in side:
                counts.update(line.split())
        dictionary = Dictionary.build(counts)
    dictionary.save(data_bin / "dict.txt")
    dtype = best_dtype(len(dictionary))
    stats: dict[str, SideStats] = {}
    for split, sides in pieces.items():
        for lang, lines in zip((src, tgt), sides):
            ids = [dictionary.encode_line(line).numpy() for line in lines]
            write_indexed_dataset(data_bin / f"{split}.{src}-{tgt}.{lang}", ids, dtype)
            unknown: Counter[str] = Counter()
            for line in lines:
                unknown.update(dictionary.unknown_tokens(line.split()))
            stats[f"{split}.{lang}"] = SideStats(
                sentences=len(ids),
                tokens=int(sum(len(x) for x in ids)),
                unk=int(sum(int((x == dictionary.unk()).sum()) for x in ids)),
                top_unknown=[w for w, _ in unknown.most_common(5)],
            )
    return stats


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
