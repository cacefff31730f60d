"""Shared fixtures: a small real corpus cut from the bundled Tatoeba sample, a micro model, CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from runner.config import CONF_DIR, REPO_ROOT

SAMPLE = REPO_ROOT / "data" / "tatoeba-ja-en"

# A model small enough that a few dozen updates take seconds on 2 cores.
MICRO = [
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "model.encoder_embed_dim=32",
    "model.decoder_embed_dim=32",
    "model.encoder_ffn_embed_dim=64",
    "model.decoder_ffn_embed_dim=64",
    "model.encoder_attention_heads=2",
    "model.decoder_attention_heads=2",
    "model.max_source_positions=64",
    "model.max_target_positions=64",
    "dataset.max_tokens=1024",
    "task.vocab_size=1000",
    "task.character_coverage=0.98",
    "lr_scheduler.warmup_updates=10",
    "common.log_format=simple",
    "common.threads=1",
    "tracking.enabled=false",  # tests of tracking turn it on themselves
]


def cut_corpus(dest: Path, n_train: int = 1500, n_valid: int = 101) -> Path:
    """A real ja-en corpus of ``n_train``/``n_valid``/``n_valid`` pairs taken from the bundled sample."""
    dest.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_valid)):
        for lang in ("ja", "en"):
            lines = (SAMPLE / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()[:n]
            (dest / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cut_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def data_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One prepared data folder shared by the tests that do not test preparation itself."""
    return tmp_path_factory.mktemp("data-bin")


def micro_overrides(corpus: Path, data_bin: Path, out: Path, *extra: str) -> list[str]:
    """Overrides for a micro training run on ``corpus`` writing into ``out``."""
    return [
        f"task.data={corpus}",
        f"task.data_bin={data_bin}",
        f"checkpoint.save_dir={out / 'checkpoints'}",
        f"common.meters_file={out / 'meters.jsonl'}",
        f"hydra.run.dir={out}",
        *MICRO,
        *extra,
    ]


def run_module(
    module: str, args: list[str], cwd: Path, check: bool = True, timeout: float = 600, **popen: object
) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as a user would, returning its output."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )  # type: ignore[arg-type]
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def compose_train(overrides: list[str]) -> DictConfig:
    """The composed training config, as `python -m runner` would see it (minus Hydra's runtime keys)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose("train", overrides=overrides)
