"""Data preparation: fairseq-compatible dictionary and binary formats, caching, batching that drops nothing, and
clear errors for bad input files."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from runner.config import DatasetConfig
from runner.data.batching import batch_by_size, ordered_indices
from runner.data.text import DataError
from runner.dictionary import Dictionary, DictionaryFormatError
from runner.indexed_dataset import IndexedDataset, write_indexed_dataset
from runner.tasks.translation import TranslationTask

from .conftest import cut_corpus, run_module


def test_dictionary_follows_fairseq_layout(tmp_path: Path) -> None:
    d = Dictionary.build(Counter({"▁the": 5, "▁a": 9, "x": 1}))
    assert d.symbols[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert d.symbols[4:7] == ["▁a", "▁the", "x"]  # by count, descending
    assert len(d) % 8 == 0 and d.symbols[7] == "madeupword0000"
    d.save(tmp_path / "dict.txt")
    lines = (tmp_path / "dict.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:3] == ["▁a 9", "▁the 5", "x 1"], "specials are not written"
    assert Dictionary.load(tmp_path / "dict.txt") == d
    assert d.encode_line("▁a zzz").tolist() == [4, d.unk(), d.eos()]


def test_malformed_dictionary_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "dict.txt"
    p.write_text("▁a 3\n▁b\n", encoding="utf-8")
    with pytest.raises(DictionaryFormatError, match=r"dict\.txt, line 2"):
        Dictionary.load(p)


def test_indexed_dataset_is_fairseq_mmidx(tmp_path: Path) -> None:
    items = [np.array([5, 6, 2]), np.array([2]), np.array([7, 8, 9, 10, 2])]
    write_indexed_dataset(tmp_path / "x", items, np.dtype(np.uint16))
    raw = (tmp_path / "x.idx").read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    version, code, n = struct.unpack("<QBQ", raw[9:26])
    assert (version, code, n) == (1, 8, 3)  # dtype code 8 = uint16, as fairseq numbers it
    sizes = np.frombuffer(raw, np.int32, 3, 26)
    pointers = np.frombuffer(raw, np.int64, 3, 26 + 12)
    assert sizes.tolist() == [3, 1, 5] and pointers.tolist() == [0, 6, 8]
    ds = IndexedDataset(tmp_path / "x")
    assert [ds[i].tolist() for i in range(3)] == [a.tolist() for a in items]


@pytest.mark.parametrize("multiple", [1, 8])
def test_batching_keeps_every_example_and_respects_max_tokens(multiple: int) -> None:
    rng = np.random.RandomState(0)
    sizes = rng.randint(1, 40, size=1001)
    order = ordered_indices(sizes, sizes, seed=3)
    batches = batch_by_size(order, sizes, max_tokens=300, required_multiple=multiple)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1001)), "every example in exactly one batch"
    for b in batches:
        assert len(b) * sizes[b].max() <= 300
    capped = batch_by_size(order, sizes, max_tokens=300, max_sentences=5, required_multiple=multiple)
    assert max(len(b) for b in capped) <= 5 and sum(len(b) for b in capped) == 1001
    if multiple > 1:
        assert all(len(b) % multiple == 0 or len(b) < multiple for b in batches[:-1])
        assert sum(len(b) % multiple == 0 for b in batches) > len(batches) // 2


def _task(corpus: Path, data_bin: Path, **kw: object) -> TranslationTask:
    return TranslationTask(
        data=str(corpus),
        source_lang="ja",
        target_lang="en",
        data_bin=str(data_bin),
        character_coverage=0.98,
        vocab_size=1000,
        **kw,
    )


def test_prepare_reports_caches_and_rebuilds_when_inputs_change(tmp_path: Path, caplog) -> None:
    corpus = cut_corpus(tmp_path / "c", n_train=600, n_valid=31)
    task = _task(corpus, tmp_path / "bin")
    with caplog.at_level("INFO"):
        p = task.prepare()
    assert p.stats["train.ja"].sentences == 600 and p.stats["valid.en"].sentences == 31
    assert p.stats["train.en"].unk == 0
    assert "train.ja: 600 sentences" in caplog.text and "<unk>" in caplog.text
    assert len(task.dataset("test")) == 31
    stamp = (tmp_path / "bin" / "train.ja-en.en.bin").stat().st_mtime_ns

    caplog.clear()
    with caplog.at_level("INFO"):
        _task(corpus, tmp_path / "bin").prepare()
    assert "using prepared data" in caplog.text
    assert (tmp_path / "bin" / "train.ja-en.en.bin").stat().st_mtime_ns == stamp

    with (corpus / "valid.en").open("a", encoding="utf-8") as f:
        f.write("One more line.\n")
    with (corpus / "valid.ja").open("a", encoding="utf-8") as f:
        f.write("もう一行。\n")
    caplog.clear()
    with caplog.at_level("INFO"):
        p2 = _task(corpus, tmp_path / "bin").prepare()
    assert "stale" in caplog.text and p2.stats["valid.ja"].sentences == 32


def test_bad_input_files_get_errors_naming_them(tmp_path: Path) -> None:
    corpus = cut_corpus(tmp_path / "c", n_train=300, n_valid=11)
    (corpus / "test.en").unlink()
    with pytest.raises(DataError, match=r"test\.en: file not found"):
        _task(corpus, tmp_path / "b1").prepare()
    (corpus / "test.en").write_text("")
    with pytest.raises(DataError, match=r"test\.en: file is empty"):
        _task(corpus, tmp_path / "b2").prepare()
    cut_corpus(corpus, n_train=300, n_valid=11)
    lines = (corpus / "valid.en").read_text(encoding="utf-8").splitlines()
    (corpus / "valid.en").write_text("\n".join(lines[:-2]) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        _task(corpus, tmp_path / "b3").prepare()
    assert "valid.ja has 11 lines" in str(e.value) and "valid.en has 9 lines" in str(e.value)
    cut_corpus(corpus, n_train=300, n_valid=11)
    raw = (corpus / "train.ja").read_bytes().split(b"\n")
    raw[41] = raw[41][:3] + b"\xff\xfe" + raw[41][3:]
    (corpus / "train.ja").write_bytes(b"\n".join(raw))
    with pytest.raises(DataError, match=r"train\.ja, line 42: not valid UTF-8 \(byte 0xff"):
        _task(corpus, tmp_path / "b4").prepare()


def test_a_dictionary_that_does_not_fit_the_data_is_refused(tmp_path: Path) -> None:
    corpus = cut_corpus(tmp_path / "c", n_train=300, n_valid=11)
    foreign = tmp_path / "dict.txt"
    foreign.write_text("".join(f"word{i} 10\n" for i in range(100)), encoding="utf-8")
    with pytest.raises(
        DataError, match=r"dictionary .*dict\.txt does not fit the data: 9\d\.\d% of the tokens of train\.ja are <unk>"
    ):
        _task(corpus, tmp_path / "bin", dict_path=str(foreign)).prepare()


def test_over_long_examples_are_skipped_in_train_and_refused_in_valid(tmp_path: Path, caplog) -> None:
    corpus = cut_corpus(tmp_path / "c", n_train=300, n_valid=11)
    task = _task(corpus, tmp_path / "bin")
    task.prepare()
    ds = task.dataset("train")
    limit = int(np.percentile(ds.tgt_sizes, 90))
    dcfg = DatasetConfig(max_tokens=512)
    with caplog.at_level("WARNING"):
        batches = task.batches("train", (1000, limit), dcfg, seed=1, train=True)
    kept = sum(len(b) for b in batches)
    too_long = int((ds.tgt_sizes > limit).sum())
    assert too_long > 0 and kept == len(ds) - too_long
    assert f"skipped {too_long} example(s)" in caplog.text and "line " in caplog.text
    with pytest.raises(DataError, match="skip_invalid_size_inputs_valid_test"):
        task.batches("valid", (1000, 3), dcfg, seed=1, train=False)
    dcfg.skip_invalid_size_inputs_valid_test = True
    assert task.batches("valid", (1000, 3), dcfg, seed=1, train=False) == []


def test_preprocess_cli_reports_bad_input_and_exits_nonzero(tmp_path: Path) -> None:
    corpus = cut_corpus(tmp_path / "c", n_train=300, n_valid=11)
    (corpus / "valid.ja").write_text("一行だけ。\n", encoding="utf-8")
    proc = run_module(
        "runner.preprocess",
        [f"task.data={corpus}", f"task.data_bin={tmp_path / 'bin'}", f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 1
    assert "valid.ja has 1 lines but" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
