"""Checkpoints written in the background: a snapshot that later updates do not change, atomic files, errors reported
to the training thread, and optional optimizer state."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from runner import checkpoint as ckpt
from runner.tasks.dialog import DialogTask
from runner.trainer import Trainer

from .conftest import MICRO, compose_train


def test_snapshot_is_written_while_the_original_changes(tmp_path: Path):
    w = torch.arange(1_000_000, dtype=torch.float32)
    state = {"model": {"a": w, "tied": w}, "n": 3}
    saver = ckpt.BackgroundSaver()
    paths = [tmp_path / "checkpoint_last.pt", tmp_path / "checkpoint_best.pt"]
    done = []
    saver.save(state, paths, lambda: done.append(True))
    w.add_(1.0)  # training goes on with the live tensors
    saver.wait()
    assert done == [True] and not saver.busy
    loaded = ckpt.load(paths[1])
    assert torch.equal(loaded["model"]["a"], torch.arange(1_000_000, dtype=torch.float32))
    assert loaded["model"]["a"].untyped_storage().data_ptr() == loaded["model"]["tied"].untyped_storage().data_ptr()
    assert paths[0].stat().st_ino == paths[1].stat().st_ino  # one write, hard-linked
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_background_write_is_raised_by_the_next_wait(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    saver = ckpt.BackgroundSaver()
    saver.save({"model": {}}, [blocker / "sub" / "checkpoint_last.pt"])
    with pytest.raises(ckpt.CheckpointError, match="writing a checkpoint failed"):
        saver.wait()
    saver.wait()  # reported once


def test_foreground_saving_without_optimizer_state(tmp_path: Path, caplog):
    out = tmp_path / "run"
    overrides = [
        "task=dialog",
        f"task.data_bin={tmp_path / 'bin'}",
        f"checkpoint.save_dir={out / 'checkpoints'}",
        f"common.meters_file={out / 'meters.jsonl'}",
        *MICRO,
        "model.max_source_positions=256",
        "model.max_target_positions=256",
        "optimization.max_update=3",
        "checkpoint.background_save=false",
        "checkpoint.save_optimizer_state=false",
        "tracking.enabled=false",
    ]
    cfg = compose_train(overrides)
    Trainer(cfg, DialogTask(**cfg.task)).train()
    state = ckpt.load(out / "checkpoints" / "checkpoint_last.pt")
    assert state["optimizer"] is None and state["trainer"]["num_updates"] == 3
    cfg = compose_train([*overrides, "optimization.max_update=4"])
    with caplog.at_level(logging.WARNING, logger="runner.train"):
        trainer = Trainer(cfg, DialogTask(**cfg.task))
        assert all(not p.is_meta for p in trainer.module.parameters())  # built on meta, given the saved weights
        assert torch.equal(trainer.module.encoder.embed_tokens.weight, state["model"]["encoder.embed_tokens.weight"])
        trainer.train()
    assert "has no optimizer state" in caplog.text
    assert ckpt.load(out / "checkpoints" / "checkpoint_last.pt")["trainer"]["num_updates"] == 4
