"""``python -m runner.generate`` end to end on a micro checkpoint: fairseq's output lines, no sentence dropped on an
odd-sized split, input order, results written as they go (and kept after a crash), sacrebleu scores, bad input."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest
import torch

from runner.checkpoint import CheckpointError
from runner.config import GenerateConfig, GenerationConfig, InferenceConfig
from runner.data.text import DataError
from runner.generation.search import SequenceGenerator

from .conftest import SAMPLE, cut_corpus, micro_overrides, run_module


def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro ja->en model trained for a few dozen updates (shared on disk by the generation test modules)."""
    root = tmp_path_factory.getbasetemp() / "generation-model"
    ckpt = root / "out" / "checkpoints" / "checkpoint_best.pt"
    if not ckpt.is_file():
        corpus = cut_corpus(root / "corpus", n_train=1500, n_valid=101)
        overrides = micro_overrides(corpus, root / "data-bin", root / "out", "optimization.max_update=40")
        run_module("runner", overrides, cwd=root)
    return ckpt


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_checkpoint(tmp_path_factory)


FAST = ["generation.beam=2", "generation.max_len_b=8", "common.threads=1"]


def blocks(stdout: str, kind: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for line in stdout.splitlines():
        m = re.match(rf"{kind}-(\d+)\t(.*)$", line)
        if m:
            out.setdefault(int(m.group(1)), []).append(m.group(2))
    return out


def test_generate_keeps_every_sentence_of_an_odd_split_and_scores(checkpoint: Path, tmp_path: Path):
    n = len((SAMPLE / "test.ja").read_text(encoding="utf-8").splitlines())
    assert n == 499
    res = tmp_path / "res"
    proc = run_module(
        "runner.generate",
        [
            f"path={checkpoint}",
            f"data={SAMPLE}",
            "gen_subset=test",
            "batch_size=64",
            "max_tokens=700",
            f"results_path={res}",
            "generation.nbest=2",
            *FAST,
        ],
        cwd=tmp_path,
    )
    hyps = blocks(proc.stdout, "H")
    assert sorted(hyps) == list(range(n))  # every input exactly once, none dropped at a batch boundary
    assert all(len(v) == 2 for v in hyps.values())  # nbest
    src = (SAMPLE / "test.ja").read_text(encoding="utf-8").splitlines()
    assert blocks(proc.stdout, "S")[7] == [src[7]]
    for line in hyps[0]:
        score, pieces = line.split("\t")
        float(score)
    pos = blocks(proc.stdout, "P")[0][0].split()
    assert len(pos) == len(hyps[0][0].split("\t")[1].split()) + 1  # one per token plus </s>
    m = re.search(
        r"Translated 499 sentences \(([\d,]+) tokens\) in [\d.]+s \(([\d.]+) sentences/s, ([\d.]+) tokens/s\)",
        proc.stdout,
    )
    assert m, proc.stdout[-2000:]
    assert re.search(
        r"Generate test with beam=2: BLEU = [\d.]+ .*\[nrefs:1\|case:mixed\|eff:no\|tok:13a\|", proc.stdout
    )
    assert re.search(r"Generate test with beam=2: chrF2 = [\d.]+ \[nrefs:1", proc.stdout)
    assert re.search(r"Generate test with beam=2: TER = [\d.]+ \[nrefs:1", proc.stdout)
    # files: the fairseq-format log, one best hypothesis per input line in input order, and the summary
    assert len(blocks((res / "generate-test.txt").read_text(encoding="utf-8"), "H")) == n
    hyp_lines = (res / "generate-test.hyp").read_text(encoding="utf-8").split("\n")[:-1]
    detok = blocks(proc.stdout, "D")
    assert hyp_lines == [detok[i][0].split("\t", 1)[1] for i in range(n)]
    assert '"sentences": 499' in (res / "generate-test.json").read_text()


def run_in_process(checkpoint: Path, **kw) -> str:
    from runner import generate

    gen_kw = kw.pop("generation", {})
    cfg = GenerateConfig(
        path=str(checkpoint),
        generation=GenerationConfig(beam=2, max_len_b=8, **gen_kw),
        common=InferenceConfig(threads=1),
        **kw,
    )
    out = io.StringIO()
    generate.run(cfg, out)
    return out.getvalue()


def test_input_order_flag(checkpoint: Path):
    kw = dict(gen_subset="valid", batch_size=16, score=False)
    batch_order = [int(x) for x in re.findall(r"^S-(\d+)\t", run_in_process(checkpoint, **kw), re.M)]
    assert sorted(batch_order) == list(range(101))
    assert batch_order != sorted(batch_order)  # fairseq's order: as length-sorted batches finish
    in_order = run_in_process(checkpoint, input_order=True, **kw)
    assert [int(x) for x in re.findall(r"^S-(\d+)\t", in_order, re.M)] == list(range(101))


def test_a_crash_mid_run_keeps_the_hypotheses_already_written(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from runner import generate

    calls = {"n": 0}
    original = SequenceGenerator.generate

    def crash_on_third_batch(self, src, prefix=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return original(self, src, prefix)

    monkeypatch.setattr(SequenceGenerator, "generate", crash_on_third_batch)
    cfg = GenerateConfig(
        path=str(checkpoint),
        gen_subset="valid",
        batch_size=10,
        results_path=str(tmp_path),
        generation=GenerationConfig(beam=2, max_len_b=5),
        quiet=True,
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate.run(cfg)
    written = blocks((tmp_path / "generate-valid.txt").read_text(encoding="utf-8"), "H")
    assert len(written) == 20  # the two finished batches are on disk


def test_bad_inputs_get_clear_messages(checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    data = cut_corpus(tmp_path / "data", n_train=5, n_valid=5)
    lines = (data / "test.ja").read_text(encoding="utf-8").splitlines()
    lines[1] = ""
    lines[3] = "長い" * 200
    (data / "test.ja").write_text("\n".join(lines) + "\n", encoding="utf-8")
    src = data / "test.ja"
    with caplog.at_level(logging.WARNING):
        out = run_in_process(checkpoint, data=str(data), long_inputs="skip")
    assert f"{src}, line 2: empty input line" in caplog.text
    assert f"{src}, line 4: input has 402 tokens" in caplog.text and "skipped" in caplog.text
    hyps = blocks(out, "H")
    assert sorted(hyps) == [0, 1, 2, 3, 4] and hyps[3] == ["-inf\t"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        out = run_in_process(checkpoint, data=str(data), long_inputs="truncate")
    assert "truncated to the first 63 tokens" in caplog.text and len(blocks(out, "H")) == 5
    with pytest.raises(DataError, match=r"test.ja, line 4: input has .*long_inputs=truncate"):
        run_in_process(checkpoint, data=str(data), long_inputs="error")
    with pytest.raises(DataError, match="nosuch.ja: file not found"):
        run_in_process(checkpoint, data=str(data), gen_subset="nosuch")
    with pytest.raises(ValueError, match="long_inputs must be one of"):
        run_in_process(checkpoint, data=str(data), long_inputs="drop")
    # through the command line: exit status 1 and the message, no traceback
    proc = run_module(
        "runner.generate", [f"path={checkpoint}", "spm_model=/nonexistent/spm.model"], tmp_path, check=False
    )
    assert proc.returncode == 1 and "sentencepiece model /nonexistent/spm.model" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_checkpoint_of_another_task_is_refused(checkpoint: Path, tmp_path: Path):
    state = torch.load(checkpoint, weights_only=True)
    state["cfg"]["task"] = {"_target_": "runner.tasks.language_modeling.LanguageModelingTask", "data": "x"}
    state["cfg"]["model"] = {"_target_": "runner.models.transformer_lm.TransformerLanguageModel.build"}
    lm_like = tmp_path / "lm.pt"
    torch.save(state, lm_like)
    with pytest.raises(CheckpointError, match=f"{lm_like} is a language model checkpoint.*runner.eval_lm"):
        run_in_process(lm_like)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        run_in_process(tmp_path / "missing.pt")
