"""Language modelling: blocks cover the stream exactly once, ``python -m runner task=language_modeling
model=transformer_lm`` trains, and ``python -m runner.eval_lm`` reports base-2 loss and perplexity for language models
(with a context window) and for translation checkpoints (reference perplexity)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from runner.config import EvalLMConfig, InferenceConfig
from runner.eval_lm import run
from runner.tasks.language_modeling import block_spans

from .conftest import cut_corpus, run_module
from .test_generate import trained_checkpoint

LM = [
    "task=language_modeling",
    "model=transformer_lm",
    "model.decoder_layers=1",
    "model.decoder_embed_dim=32",
    "model.decoder_ffn_embed_dim=64",
    "model.decoder_attention_heads=2",
    "model.max_target_positions=64",
    "task.tokens_per_sample=32",
    "task.vocab_size=500",
    "task.character_coverage=0.98",
    "dataset.max_tokens=1024",
    "lr_scheduler.warmup_updates=10",
    "common.log_format=simple",
    "common.threads=1",
    "optimization.max_update=30",
]


@pytest.fixture(scope="session")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lm")
    corpus = cut_corpus(root / "corpus", n_train=1000, n_valid=101)
    run_module(
        "runner",
        [
            *LM,
            f"task.data={corpus}",
            f"task.data_bin={root / 'bin'}",
            f"hydra.run.dir={root / 'out'}",
            f"checkpoint.save_dir={root / 'out' / 'checkpoints'}",
            f"common.meters_file={root / 'out' / 'meters.jsonl'}",
        ],
        root,
    )
    return root / "out"


def last_valid(meters: Path) -> dict:
    records = [json.loads(line) for line in meters.read_text().splitlines()]
    return [r for r in records if r["type"] == "valid"][-1]


@pytest.mark.parametrize("mode", ["none", "eos"])
def test_blocks_predict_every_token_once(mode: str):
    sizes = np.array([3, 9, 1, 4])
    spans = block_spans(sizes, 4, mode)
    covered = np.concatenate([np.arange(s, e) for s, e in spans])
    assert covered.tolist() == list(range(1, sizes.sum() + 1))
    assert (spans[:, 1] - spans[:, 0]).max() == 4
    if mode == "eos":  # no block crosses a sentence boundary
        bounds = set(np.cumsum(sizes) + 1)
        assert all(not any(s < b < e for b in bounds) for s, e in spans)


def test_eval_lm_matches_training_validation_in_base_2(lm_run: Path):
    ckpt = lm_run / "checkpoints" / "checkpoint_last.pt"
    out = io.StringIO()
    res = run(EvalLMConfig(path=str(ckpt), gen_subset="valid", common=InferenceConfig(threads=1)), out)
    valid = last_valid(lm_run / "meters.jsonl")
    assert res.tokens == valid["ntokens"]
    assert res.loss_base2 == pytest.approx(valid["nll_loss"], abs=1e-3)  # the trainer's base-2 nll, recomputed
    assert res.perplexity == pytest.approx(2**res.loss_base2)
    m = re.search(r"Loss \(base 2\): ([\d.]+), Perplexity: ([\d.]+)", out.getvalue())
    assert m and float(m.group(1)) == pytest.approx(res.loss_base2, abs=1e-4)
    # a context window scores the same tokens, each block now seeing up to 16 earlier ones
    ctx = run(
        EvalLMConfig(path=str(ckpt), gen_subset="valid", context_window=16, common=InferenceConfig(threads=1)),
        io.StringIO(),
    )
    assert ctx.tokens == res.tokens and ctx.loss_base2 != pytest.approx(res.loss_base2, abs=1e-6)
    with pytest.raises(Exception, match="exceed the model's 64 positions"):
        run(EvalLMConfig(path=str(ckpt), context_window=40), io.StringIO())


def test_eval_lm_cli_on_a_translation_checkpoint(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path):
    ckpt = trained_checkpoint(tmp_path_factory)
    proc = run_module("runner.eval_lm", [f"path={ckpt}", "gen_subset=valid", "common.threads=1"], tmp_path)
    m = re.search(r"Loss \(base 2\): ([\d.]+), Perplexity: ([\d.]+)", proc.stdout)
    assert m and "references of valid.en given valid.ja" in proc.stdout
    valid = last_valid(ckpt.parent.parent / "meters.jsonl")  # checkpoint_best holds the best validation
    best = min(
        r["nll_loss"]
        for r in map(json.loads, (ckpt.parent.parent / "meters.jsonl").read_text().splitlines())
        if r["type"] == "valid"
    )
    assert float(m.group(1)) == pytest.approx(best, abs=1e-3) and valid["ntokens"] > 0
    assert float(m.group(2)) == pytest.approx(2 ** float(m.group(1)), rel=1e-3)
    proc = run_module("runner.eval_lm", [f"path={ckpt}", "context_window=8"], tmp_path, check=False)
    assert proc.returncode == 1 and "context_window applies to language models" in proc.stderr
