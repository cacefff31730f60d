"""Training end to end on real data: checkpoints, exact resume after SIGKILL, accumulation, NaN handling,
patience, fine-tuning and retention."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from runner import checkpoint as ckpt
from runner.tasks.translation import TranslationTask
from runner.trainer import Trainer, TrainingError

from .conftest import compose_train, micro_overrides, run_module


def meters(path: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["type"] == kind]


def make_trainer(corpus: Path, data_bin: Path, out: Path, *extra: str) -> Trainer:
    cfg = compose_train(micro_overrides(corpus, data_bin, out, *extra))
    return Trainer(cfg, TranslationTask(**cfg.task))


def test_main_job_trains_validates_checkpoints_and_logs(corpus, data_bin, tmp_path) -> None:
    out = tmp_path / "run"
    proc = run_module(
        "runner",
        micro_overrides(corpus, data_bin, out, "optimization.max_epoch=3", "common.log_interval=5"),
        cwd=tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert "epoch 001:" in log and "loss=" in log and "wps=" in log and "num_updates=" in log
    for name in ("checkpoint_best.pt", "checkpoint_last.pt", "checkpoint1.pt", "checkpoint3.pt"):
        assert (out / "checkpoints" / name).is_file(), name
    valid = meters(out / "meters.jsonl", "valid")
    assert [v["epoch"] for v in valid] == [1, 2, 3]
    assert valid[-1]["loss"] < valid[0]["loss"], "validation loss falls"
    inner = meters(out / "meters.jsonl", "train_inner")[0]
    for key in ("loss", "nll_loss", "ppl", "wps", "ups", "wpb", "bsz", "lr", "gnorm", "clip", "num_updates"):
        assert key in inner
    state = ckpt.load(out / "checkpoints" / "checkpoint_last.pt")
    assert state["cfg"]["model"]["encoder_embed_dim"] == 32, "the composed config travels with the checkpoint"
    assert state["trainer"]["epoch"] == 3 and state["trainer"]["best"] == min(v["loss"] for v in valid)

    again = run_module("runner", micro_overrides(corpus, data_bin, out, "optimization.max_epoch=3"), cwd=tmp_path)
    assert "nothing to do" in again.stdout + again.stderr, "re-running the same command resumes (and is done)"


def _train_losses(path: Path) -> dict[int, float]:
    """Per-update training loss; a later record for the same update (after a resume) replaces an earlier one."""
    return {r["num_updates"]: r["loss"] for r in meters(path, "train_inner")}


def test_sigkilled_run_resumes_mid_epoch_with_identical_losses(corpus, data_bin, tmp_path) -> None:
    extra = [
        "optimization.max_update=36",
        "checkpoint.save_interval_updates=4",
        "common.log_interval=1",
        "dataset.max_tokens=512",
        "model.dropout=0.3",
    ]
    ref = tmp_path / "ref"
    run_module("runner", micro_overrides(corpus, data_bin, ref, *extra), cwd=tmp_path)
    reference = _train_losses(ref / "meters.jsonl")
    assert len(reference) == 36

    out = tmp_path / "killed"
    args = [sys.executable, "-m", "runner", *micro_overrides(corpus, data_bin, out, *extra)]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        done = _train_losses(out / "meters.jsonl") if (out / "meters.jsonl").exists() else {}
        if len(done) >= 14:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(_train_losses(out / "meters.jsonl"))
    assert 14 <= killed_at < 36
    saved = ckpt.load(out / "checkpoints" / "checkpoint_last.pt")["trainer"]
    assert saved["batch_offset"] > 0 and saved["num_updates"] < killed_at + 1, "resume point is mid-epoch"

    resumed = run_module("runner", micro_overrides(corpus, data_bin, out, *extra), cwd=tmp_path)
    assert "resumed from" in resumed.stdout + resumed.stderr
    losses = _train_losses(out / "meters.jsonl")
    assert losses == reference, "the resumed run's losses equal the uninterrupted run's"


@pytest.mark.filterwarnings(r"ignore:Seems like `optimizer.step\(\)` has been overridden")
def test_update_freq_normalises_by_the_tokens_of_the_whole_update(corpus, data_bin, tmp_path) -> None:
    trainer = make_trainer(corpus, data_bin, tmp_path, "model.dropout=0", "optimization.clip_norm=0")
    ds = trainer.task.dataset("train")
    b1, b2 = ds.collate(list(range(0, 7))), ds.collate(list(range(7, 30)))
    model, crit = trainer.model, trainer.criterion
    model.train()
    total = 0.0
    for b in (b1, b2):
        loss, _, _ = crit(model, b)
        total = total + loss
    (total / (b1["ntokens"] + b2["ntokens"])).backward()
    expected = [p.grad.clone() for p in trainer.params]
    trainer.optimizer.zero_grad(set_to_none=True)
    # Capture the gradients the trainer applies by intercepting the optimizer step.
    seen: list[torch.Tensor] = []
    trainer.optimizer.step = lambda *a, **k: seen.extend(p.grad.clone() for p in trainer.params)  # type: ignore
    assert trainer.train_step([b1, b2]) is not None
    for e, s in zip(expected, seen):
        torch.testing.assert_close(s, e, rtol=1e-5, atol=1e-7)


def test_nonfinite_updates_are_skipped_then_stop_training(corpus, data_bin, tmp_path, caplog) -> None:
    out = tmp_path / "nan"
    cfg = compose_train(
        micro_overrides(
            corpus,
            data_bin,
            out,
            "criterion=cross_entropy",
            "checkpoint.save_interval_updates=2",
            "optimization.max_nonfinite_updates=3",
        )
    )
    with open_dict(cfg):
        cfg.criterion = {"_target_": "tests.support.NonFiniteCriterion", "nan_calls": [3, 6, 7, 8]}
    trainer = Trainer(cfg, TranslationTask(**cfg.task))
    with caplog.at_level("WARNING"), pytest.raises(TrainingError, match="3 consecutive updates had a non-finite"):
        trainer.train()
    assert caplog.text.count("skipped an update") == 4
    last = ckpt.load(out / "checkpoints" / "checkpoint_last.pt")
    assert last["trainer"]["num_updates"] == 4, "the last good checkpoint is kept"
    assert all(torch.isfinite(t).all() for t in last["model"].values())


def test_patience_stops_and_is_saved_in_the_checkpoint(corpus, data_bin, tmp_path) -> None:
    out = tmp_path / "patience"
    # An lr of zero never improves the validation loss after the first validation.
    trainer = make_trainer(
        corpus,
        data_bin,
        out,
        "optimizer.lr=0",
        "checkpoint.patience=2",
        "dataset.validate_interval_updates=2",
        "optimization.max_epoch=5",
    )
    state = trainer.train()
    assert state["bad_validations"] == 2 and state["num_updates"] == 6
    assert ckpt.load(out / "checkpoints" / "checkpoint_last.pt")["trainer"]["bad_validations"] == 2


def test_finetune_from_model_only_when_no_last_checkpoint(corpus, data_bin, tmp_path) -> None:
    base = tmp_path / "base"
    make_trainer(corpus, data_bin, base, "optimization.max_update=3").train()
    src = base / "checkpoints" / "checkpoint_last.pt"
    out = tmp_path / "ft"
    ft = make_trainer(corpus, data_bin, out, "optimization.max_update=2", f"checkpoint.finetune_from_model={src}")
    ft.restore()
    start = ckpt.load(src)["model"]
    assert all(torch.equal(ft.model.state_dict()[k], v) for k, v in start.items())
    assert ft.state.num_updates == 0, "fine-tuning starts fresh counters"
    ft.train()
    again = make_trainer(corpus, data_bin, out, "optimization.max_update=4", f"checkpoint.finetune_from_model={src}")
    again.restore()
    assert again.state.num_updates == 2, "an existing checkpoint_last wins over finetune_from_model"


def test_keep_interval_updates_prunes_old_checkpoints(corpus, data_bin, tmp_path) -> None:
    out = tmp_path / "keep"
    make_trainer(
        corpus,
        data_bin,
        out,
        "optimization.max_update=8",
        "checkpoint.save_interval_updates=2",
        "checkpoint.keep_interval_updates=2",
        "checkpoint.no_epoch_checkpoints=true",
    ).train()
    names = sorted(p.name for p in (out / "checkpoints").glob("checkpoint_*_*.pt"))
    assert names == ["checkpoint_1_6.pt", "checkpoint_1_8.pt"]
    assert not list((out / "checkpoints").glob(".*.tmp")), "no temporary files left behind"


def test_stop_time_and_bf16(corpus, data_bin, tmp_path) -> None:
    state = make_trainer(corpus, data_bin, tmp_path / "t", "optimization.stop_time_hours=0.0000001").train()
    assert state["num_updates"] == 1 and state["epoch"] == 1
    state = make_trainer(corpus, data_bin, tmp_path / "bf", "common.bf16=true", "optimization.max_update=2").train()
    assert state["num_updates"] == 2


def test_terminal_gets_a_tqdm_bar_per_epoch_and_split(corpus, data_bin, tmp_path) -> None:
    """Run under a pseudo-terminal, as a user at a shell would see it."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a 160-column terminal
    args = micro_overrides(corpus, data_bin, tmp_path / "tty", "optimization.max_epoch=1", "common.log_format=auto")
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=tmp_path, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait()
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, screen[-2000:]
    assert "[Epoch 1] [TRAIN]:" in screen and "it/s" in screen and "loss=" in screen and "lr=" in screen
    assert "[Epoch 1] [VALID]:" in screen


def test_reset_flags_restart_what_they_name(corpus, data_bin, tmp_path) -> None:
    out = tmp_path / "reset"
    make_trainer(corpus, data_bin, out, "optimization.max_update=3").train()
    saved = ckpt.load(out / "checkpoints" / "checkpoint_last.pt")
    kept = make_trainer(corpus, data_bin, out, "optimization.max_update=6")
    kept.restore()
    assert kept.optimizer.state_dict()["state"], "optimizer moments are restored by default"
    assert kept.scheduler.last_epoch == saved["lr_scheduler"]["last_epoch"]
    reset = make_trainer(
        corpus,
        data_bin,
        out,
        "optimization.max_update=6",
        "checkpoint.reset_optimizer=true",
        "checkpoint.reset_lr_scheduler=true",
        "checkpoint.reset_dataloader=true",
        "checkpoint.reset_meters=true",
    )
    reset.restore()
    assert not reset.optimizer.state_dict()["state"]
    assert reset.scheduler.last_epoch == 0
    assert (reset.state.epoch, reset.state.batch_offset, reset.state.train_time) == (1, 0, 0.0)
    assert reset.state.num_updates == 3, "the update count and weights still come from the checkpoint"
    assert torch.equal(
        reset.model.state_dict()["decoder.layers.0.fc1.weight"], saved["model"]["decoder.layers.0.fc1.weight"]
    )
