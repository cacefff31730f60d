"""Multi-process training with torchrun on the CPU (gloo): DDP matches one process with the same global batch,
a failing rank ends every rank with its error, FSDP trains and checkpoints; and the SLURM environment mapping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from runner import checkpoint as ckpt
from runner.config import REPO_ROOT
from runner.distributed import env_from_slurm, first_host

from .conftest import micro_overrides, run_module

COMMON = [
    "optimization.max_update=8",
    "common.log_interval=1",
    "model.dropout=0",
    "dataset.max_tokens=512",
    "tracking.enabled=false",
    "dataset.validate_interval_updates=4",
]


def torchrun(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "runner", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def losses(path: Path, kind: str = "train_inner") -> dict[int, float]:
    return {r["num_updates"]: r["loss"] for r in map(json.loads, path.read_text().splitlines()) if r["type"] == kind}


@pytest.fixture(scope="module")
def single_process_reference(corpus, data_bin, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    run_module("runner", micro_overrides(corpus, data_bin, out, *COMMON, "optimization.update_freq=2"), cwd=out)
    return out


def test_ddp_two_processes_match_one_process_with_update_freq_2(
    corpus, data_bin, tmp_path, single_process_reference
) -> None:
    out = tmp_path / "ddp"
    proc = torchrun(micro_overrides(corpus, data_bin, out, *COMMON), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = single_process_reference
    got, want = losses(out / "meters.jsonl"), losses(ref / "meters.jsonl")
    assert list(got) == list(want) == list(range(1, 9))
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-4), f"update {k}"
    assert losses(out / "meters.jsonl", "valid") == pytest.approx(losses(ref / "meters.jsonl", "valid"), rel=1e-4)
    a = ckpt.load(out / "checkpoints" / "checkpoint_last.pt")["model"]
    b = ckpt.load(ref / "checkpoints" / "checkpoint_last.pt")["model"]
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-5)
    more = micro_overrides(corpus, data_bin, out, *[c.replace("max_update=8", "max_update=10") for c in COMMON])
    proc = torchrun(more, cwd=tmp_path)
    assert proc.returncode == 0 and "resumed from" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert ckpt.load(out / "checkpoints" / "checkpoint_last.pt")["trainer"]["num_updates"] == 10


def test_a_failing_rank_ends_all_ranks_with_its_error(corpus, data_bin, tmp_path) -> None:
    args = micro_overrides(
        corpus,
        data_bin,
        tmp_path / "fail",
        *COMMON,
        "criterion=cross_entropy",
        "criterion._target_=tests.support.FailingOnRank1Criterion",
    )
    start = time.time()
    proc = torchrun(args, cwd=tmp_path, timeout=240)
    assert proc.returncode != 0
    assert "simulated failure on rank 1" in proc.stdout + proc.stderr
    assert time.time() - start < 200, "no hang until the collective timeout"


def test_fsdp_trains_checkpoints_and_resumes(corpus, data_bin, tmp_path, single_process_reference) -> None:
    out = tmp_path / "fsdp"
    args = micro_overrides(corpus, data_bin, out, *COMMON, "distributed.strategy=fsdp")
    proc = torchrun(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = losses(single_process_reference / "meters.jsonl")
    got = losses(out / "meters.jsonl")
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-4), f"update {k}"
    state = ckpt.load(out / "checkpoints" / "checkpoint_last.pt")
    assert state["model"]["encoder.embed_tokens.weight"].shape[1] == 32, "a full (unsharded) state dict"
    more = micro_overrides(
        corpus,
        data_bin,
        out,
        *[c.replace("max_update=8", "max_update=10") for c in COMMON],
        "distributed.strategy=fsdp",
    )
    proc = torchrun(more, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout + proc.stderr
    assert ckpt.load(out / "checkpoints" / "checkpoint_last.pt")["trainer"]["num_updates"] == 10


def test_slurm_environment_maps_to_torch_distributed() -> None:
    env = {
        "SLURM_NTASKS": "4",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "gpu[007-008]",
    }
    got = env_from_slurm(env)
    assert got["RANK"] == "3" and got["WORLD_SIZE"] == "4" and got["LOCAL_RANK"] == "1"
    assert got["MASTER_ADDR"] == "gpu007" and got["MASTER_PORT"] == str(20000 + 4242)
    assert env_from_slurm({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) == {}
    assert first_host("node1,node2") == "node1"
