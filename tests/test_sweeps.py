"""Hydra multirun: grids and Optuna sweeps of real (micro) training jobs, and failed jobs that cannot pass as
success."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from .conftest import MICRO, run_module


def sweep_args(corpus: Path, data_bin: Path, *extra: str) -> list[str]:
    return [
        "-m",
        f"task.data={corpus}",
        f"task.data_bin={data_bin}",
        "tracking.enabled=false",
        "optimization.max_update=2",
        *[o for o in MICRO if not o.startswith("model.")],
        "model.encoder_layers=1",
        "model.decoder_layers=1",
        *extra,
    ]


def job_dirs(root: Path) -> list[Path]:
    (sweep,) = [p for p in (root / "multirun").glob("*/*") if p.is_dir()]
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def test_grid_sweep_puts_each_jobs_checkpoints_in_its_own_folder(corpus, data_bin, tmp_path) -> None:
    proc = run_module(
        "runner",
        sweep_args(corpus, data_bin, "optimizer.lr=1e-3,5e-4", "arch=transformer_tiny,transformer_iwslt_de_en"),
        cwd=tmp_path,
    )
    assert "all 4 jobs completed" in proc.stdout + proc.stderr
    dirs = job_dirs(tmp_path)
    assert [d.name for d in dirs] == ["0", "1", "2", "3"]
    seen = set()
    for d in dirs:
        assert (d / "checkpoints" / "checkpoint_last.pt").is_file()
        hydra_cfg = OmegaConf.load(d / ".hydra" / "hydra.yaml").hydra
        assert hydra_cfg.job.name == "runner"
        cfg = OmegaConf.load(d / ".hydra" / "config.yaml")
        seen.add((cfg.optimizer.lr, cfg.model.encoder_embed_dim))
    assert seen == {(1e-3, 256), (1e-3, 512), (5e-4, 256), (5e-4, 512)}, "the full grid, presets applied"


def test_a_failed_job_is_reported_and_the_sweep_exits_nonzero(corpus, data_bin, tmp_path) -> None:
    missing = tmp_path / "no-such-corpus"
    proc = run_module(
        "runner",
        sweep_args(corpus, data_bin, f"task.data={corpus},{missing}", f"task.data_bin={tmp_path / 'bin'}"),
        cwd=tmp_path,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "1 of 2 jobs FAILED" in out
    assert f"#1 task.data={missing}" in out and "file not found" in out
    assert (job_dirs(tmp_path)[0] / "checkpoints" / "checkpoint_last.pt").is_file(), "the good job still ran"


def test_optuna_sweep_minimises_the_best_validation_loss(corpus, data_bin, tmp_path) -> None:
    run_module(
        "runner",
        sweep_args(
            corpus,
            data_bin,
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.seed=1",
            "optimizer.lr=interval(1e-4,3e-3)",
        ),
        cwd=tmp_path,
    )
    (results,) = (tmp_path / "multirun").glob("*/*/optimization_results.yaml")
    res = OmegaConf.load(results)
    assert res.name == "optuna" and "optimizer.lr" in res.best_params
    best = [
        min(json.loads(line)["loss"] for line in (d / "meters.jsonl").read_text().splitlines() if '"valid"' in line)
        for d in job_dirs(tmp_path)
    ]
    assert res.best_value == min(best)
