"""``python -m runner.interactive``: stdin in, fairseq's lines out, dialog history with /reset, nbest reranking."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from runner.config import DialogHistoryConfig
from runner.generation.search import Hypothesis
from runner.interactive import DialogHistory, rerank

from .conftest import run_module
from .test_generate import trained_checkpoint

UNK = 3


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_checkpoint(tmp_path_factory)


def by_id(stdout: str, kind: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for m in re.finditer(rf"^{kind}-(\d+)\t(.*)$", stdout, re.M):
        out.setdefault(int(m.group(1)), []).append(m.group(2))
    return out


def test_dialog_keeps_history_until_reset(checkpoint: Path, tmp_path: Path):
    stdin = "こんにちは\n\n元気ですか\n/reset\nありがとう\n"
    args = [
        f"path={checkpoint}",
        "history.enabled=true",
        "generation.beam=3",
        "generation.nbest=2",
        "generation.max_len_b=6",
        "common.threads=1",
    ]
    proc = run_module("runner.interactive", args, tmp_path, input=stdin)
    src = {i: v[0] for i, v in by_id(proc.stdout, "S").items()}
    replies = {i: v[0].split("\t", 1)[1] for i, v in by_id(proc.stdout, "D").items()}
    assert src[0] == "[SPK2]こんにちは"
    # the second turn sees the first exchange: user turn, the system's reply, separators and speaker tags
    assert src[1] == f"[SPK2]こんにちは[SEP][SPK1]{replies[0]}[SEP][SPK2]元気ですか"
    assert src[2] == "[SPK2]ありがとう"  # /reset forgot everything before it
    assert "stdin, line 2: empty input skipped" in proc.stderr and "history cleared" in proc.stderr
    assert all(len(v) == 2 for v in by_id(proc.stdout, "H").values())  # nbest
    assert all(float(v[0].split("\t")[0]) >= 0 for v in by_id(proc.stdout, "W").values())  # latency
    # a translation checkpoint (history off by default) translates each line on its own, like fairseq
    plain = run_module("runner.interactive", args[:1] + args[2:], tmp_path, input="こんにちは\n元気ですか\n")
    assert [v[0] for v in by_id(plain.stdout, "S").values()] == ["こんにちは", "元気ですか"]


def test_history_window_and_character_cap():
    h = DialogHistory(DialogHistoryConfig(turns=3, max_chars=40, user_tag="<u>", system_tag="<s>", separator="|"))
    for i in range(4):
        h.add(f"user{i}", f"sys{i}")
    assert h.context("now") == "<u>user3|<s>sys3|<u>now"  # the last turns - 1 earlier turns, then the new one
    long = "x" * 30  # 40 - 30 = 10 characters of context left: only the newest earlier turn fits
    assert h.context(long) == f"<s>sys3|<u>{long}"
    assert h.context("y" * 39) == "<u>" + "y" * 39
    h.reset()
    assert h.context("again") == "<u>again"
    with pytest.raises(ValueError, match="history.turns"):
        DialogHistory(DialogHistoryConfig(turns=0))


def test_rerank_penalises_unk():
    def hyp(tokens: list[int], score: float) -> Hypothesis:
        return Hypothesis(torch.tensor(tokens), score, torch.zeros(len(tokens)))

    hyps = [hyp([5, UNK, 2], -0.1), hyp([5, 6, 2], -0.5), hyp([UNK, UNK, 2], -0.05)]
    assert [h.score for h in rerank(hyps, UNK, 100.0)] == [-0.5, -0.1, -0.05]
    assert [h.score for h in rerank(hyps, UNK, 0.0)] == [-0.05, -0.1, -0.5]
