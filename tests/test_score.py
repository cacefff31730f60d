"""``python -m runner.score`` and the shared sacrebleu scoring: signatures, ja-mecab for Japanese, bad input."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sacrebleu.metrics import BLEU

from runner.config import ScoreConfig, ScoringConfig
from runner.data.text import DataError
from runner.generation.scoring import ScoringError, bleu_tokenizer
from runner.score import run

from .conftest import SAMPLE, run_module

REFS_JA = (SAMPLE / "test.ja").read_text(encoding="utf-8").splitlines()[:20]
REFS_EN = (SAMPLE / "test.en").read_text(encoding="utf-8").splitlines()[:20]


def write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_japanese_targets_use_ja_mecab_automatically(tmp_path: Path):
    hyps = [line[:-2] + "。" for line in REFS_JA]  # lightly damaged copies
    out = io.StringIO()
    results = run(ScoreConfig(sys=write(tmp_path / "hyp.txt", hyps), ref=write(tmp_path / "test.ja", REFS_JA)), out)
    bleu = results[0]
    assert "tok:ja-mecab" in bleu.signature
    expected = BLEU(tokenize="ja-mecab").corpus_score(hyps, [REFS_JA]).score
    assert bleu.score == pytest.approx(expected) and 0 < bleu.score < 100
    lines = out.getvalue().splitlines()
    assert [line.split(" =")[0] for line in lines] == ["BLEU", "chrF2", "TER"]
    assert "asian:yes" in results[2].signature


def test_english_targets_and_overrides(tmp_path: Path):
    sys_path, ref_path = write(tmp_path / "hyp.txt", REFS_EN), write(tmp_path / "ref.txt", REFS_EN)
    results = run(ScoreConfig(sys=sys_path, ref=ref_path, target_lang="en"), io.StringIO())
    assert results[0].score == pytest.approx(100.0) and "tok:13a" in results[0].signature
    only = ScoringConfig(metrics=["bleu"], tokenize="char", lowercase=True)
    (res,) = run(ScoreConfig(sys=sys_path, ref=ref_path, scoring=only), io.StringIO())
    assert "tok:char" in res.signature and "case:lc" in res.signature
    assert bleu_tokenizer("auto", "zh") == "zh" and bleu_tokenizer("auto", None) == "13a"


def test_bad_input_is_named(tmp_path: Path):
    ref = write(tmp_path / "test.en", REFS_EN)
    short = write(tmp_path / "short.txt", REFS_EN[:5])
    with pytest.raises(DataError, match=r"short.txt has 5 lines but .*test.en has 20 lines"):
        run(ScoreConfig(sys=short, ref=ref), io.StringIO())
    with pytest.raises(ScoringError, match="not available offline"):
        run(ScoreConfig(sys=ref, ref=ref, scoring=ScoringConfig(tokenize="spm")), io.StringIO())
    with pytest.raises(ScoringError, match="unknown metric"):
        run(ScoreConfig(sys=ref, ref=ref, scoring=ScoringConfig(metrics=["meteor"])), io.StringIO())
    proc = run_module("runner.score", [f"sys={tmp_path / 'nope.txt'}", f"ref={ref}"], tmp_path, check=False)
    assert proc.returncode == 1 and "nope.txt: file not found" in proc.stderr
