"""``python -m runner.export``: a trained checkpoint as a folder (safetensors, config, dict.txt, sentencepiece model)
that loads back on its own and computes exactly what the checkpoint computes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from runner import checkpoint as ckpt
from runner.config import GenerateConfig, GenerationConfig, InferenceConfig
from runner.export import export, read_exported
from runner.generate import run as generate
from runner.generation.loading import load_model
from runner.tasks.translation import TranslationTask
from runner.trainer import Trainer

from .conftest import compose_train, micro_overrides, run_module


@pytest.fixture(scope="module")
def trained(corpus, data_bin, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export-run")
    cfg = compose_train(micro_overrides(corpus, data_bin, out, "optimization.max_update=4"))
    Trainer(cfg, TranslationTask(**cfg.task)).train()
    return out / "checkpoints" / "checkpoint_last.pt"


def small_test_split(corpus: Path, dest: Path, n: int = 4) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for lang in ("ja", "en"):
        lines = (corpus / f"test.{lang}").read_text(encoding="utf-8").splitlines()[:n]
        (dest / f"test.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def test_export_writes_a_folder_that_loads_back_identically(trained: Path, corpus: Path, tmp_path: Path) -> None:
    folder = tmp_path / "exported"
    run_module("runner.export", [f"path={trained}", f"output={folder}"], cwd=tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.yaml",
        "dict.txt",
        "model.safetensors",
        "sentencepiece.model",
    ]
    state = ckpt.load(trained)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        stored = set(f.keys())
    # the micro run shares all embeddings: one tensor stored for three names
    assert "encoder.embed_tokens.weight" in stored
    assert "decoder.embed_tokens.weight" not in stored and "decoder.output_projection.weight" not in stored
    assert len(stored) == len(state["model"]) - 2

    back = read_exported(folder)
    assert back["task_state"]["dictionary"] == state["task_state"]["dictionary"]
    assert back["cfg"]["model"] == state["cfg"]["model"]
    for k, v in state["model"].items():
        assert torch.equal(back["model"][k], v), k

    from_file, from_folder = load_model(trained), load_model(folder)
    model = from_folder.model
    assert model.decoder.output_projection.weight is model.encoder.embed_tokens.weight, "tied again after loading"
    src = torch.tensor([[5, 9, 17, 2], [1, 7, 12, 2]])
    prev = torch.tensor([[2, 8, 4], [2, 6, 30]])
    with torch.no_grad():
        expected = from_file.model(src, src.ne(1).sum(1), prev)
        got = model(src, src.ne(1).sum(1), prev)
    assert torch.equal(expected, got)

    data = small_test_split(corpus, tmp_path / "data")
    outputs = []
    for path in (trained, folder):
        cfg = GenerateConfig(
            path=str(path),
            data=str(data),
            score=False,
            generation=GenerationConfig(beam=2, max_len_b=6),
            common=InferenceConfig(threads=1),
        )
        out = io.StringIO()
        generate(cfg, out)
        outputs.append([line for line in out.getvalue().splitlines() if line.startswith(("H-", "D-"))])
    assert len(outputs[0]) == 8 and outputs[0] == outputs[1], "generate from the folder = from the checkpoint"


def test_an_incomplete_folder_is_named(trained: Path, tmp_path: Path) -> None:
    broken = export(trained, tmp_path / "broken")
    (broken / "dict.txt").unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"broken: not an exported model folder \(dict.txt missing\)"):
        load_model(broken)
    missing = run_module("runner.export", [f"path={tmp_path / 'nope.pt'}", f"output={tmp_path / 'x'}"], tmp_path, False)
    assert missing.returncode == 1 and "nope.pt: checkpoint not found" in missing.stderr
