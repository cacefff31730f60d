"""Integration tests on a real single-node SLURM cluster (slurm-wlm + munge, see scripts/slurm_cluster.sh):
a two-job sweep through `hydra/launcher=slurm`, jobs running the config frozen at submission, and a preemption
(`scancel --signal=USR2`) that checkpoints, requeues and resumes to the same result as an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import checkpoint as ckpt
from runner.config import CONF_DIR, REPO_ROOT

from .conftest import micro_overrides, run_module

SCRIPT = REPO_ROOT / "scripts" / "slurm_cluster.sh"


def _sinfo_ok(env: dict[str, str]) -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "idle" in out.stdout or "mix" in out.stdout or "alloc" in out.stdout


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An environment whose SLURM_CONF points at a running cluster: an existing one, or one started (and stopped)
    here. Skipped, with the reason, only where SLURM cannot start."""
    env = dict(os.environ)
    if env.get("SLURM_CONF") and _sinfo_ok(env):
        yield env
        return
    if not shutil.which("slurmctld") or not shutil.which("munged"):
        pytest.skip("SLURM is not installed (scripts/slurm_cluster.sh install, as root, installs slurm-wlm + munge)")
    if os.geteuid() != 0:
        pytest.skip("starting the test SLURM cluster needs root (slurmd runs jobs as any user)")
    state = tmp_path_factory.mktemp("slurm")
    proc = subprocess.run(["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"SLURM could not start: {proc.stderr.strip() or proc.stdout.strip()}")
    env["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True)


LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=15",  # >= 11: below that submitit treats every signal as a time-out
]


def _submit(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a sweep from the submitting side; it blocks until its SLURM jobs end (read with communicate())."""
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _sweep_overrides(corpus: Path, data_bin: Path, *extra: str) -> list[str]:
    out = micro_overrides(corpus, data_bin, Path("unused"), *extra)
    drop = ("checkpoint.save_dir=", "common.meters_file=", "hydra.run.dir=")
    return [o for o in out if not o.startswith(drop)] + ["tracking.enabled=false"]


def test_two_job_sweep_runs_on_slurm_with_the_config_frozen_at_submission(slurm, corpus, data_bin, tmp_path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    args = [
        "-m",
        f"--config-path={conf}",
        *LAUNCHER,
        "+hydra.launcher.additional_parameters={begin: now+8}",  # jobs wait in the queue while conf/ changes
        *_sweep_overrides(corpus, data_bin, "optimization.max_update=3", "optimizer.lr=1e-3,5e-4"),
    ]
    proc = _submit(args, tmp_path, slurm)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob("multirun/*/*/.submitit/*")):
        time.sleep(0.5)
    pending = subprocess.run(["squeue", "-h", "-o", "%i %T %j"], env=slurm, capture_output=True, text=True).stdout
    assert "runner" in pending, pending
    train = conf / "train.yaml"
    train.write_text(train.read_text().replace("max_epoch: 10", "max_epoch: 1\n  max_update: 1"))
    (conf / "arch" / "transformer_tiny.yaml").write_text("# @package model\nencoder_layers: 7\n")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    assert "all 2 jobs completed" in out
    dirs = sorted(p for p in tmp_path.glob("multirun/*/*/*") if p.name.isdigit())
    assert [d.name for d in dirs] == ["0", "1"]
    lrs = set()
    for d in dirs:
        state = ckpt.load(d / "checkpoints" / "checkpoint_last.pt")
        assert state["trainer"]["num_updates"] == 3, "the job ran the submitted max_update, not the edited conf/"
        assert state["cfg"]["model"]["encoder_layers"] == 1
        lrs.add(state["cfg"]["optimizer"]["lr"])
        assert (d / "runner.log").is_file()
    assert lrs == {1e-3, 5e-4}


def _losses(path: Path) -> dict[int, float]:
    return {
        r["num_updates"]: r["loss"]
        for r in map(json.loads, path.read_text().splitlines())
        if r["type"] == "train_inner"
    }


def test_preempted_job_checkpoints_requeues_and_resumes_to_the_same_result(slurm, corpus, data_bin, tmp_path) -> None:
    extra = [
        "optimization.max_update=60",
        "common.log_interval=1",
        "dataset.max_tokens=256",
        "checkpoint.save_interval_updates=1000",  # only the preemption itself writes a mid-run checkpoint
        "dataset.disable_validation=true",
    ]
    ref = tmp_path / "ref"
    run_module("runner", micro_overrides(corpus, data_bin, ref, *extra, "tracking.enabled=false"), cwd=tmp_path)
    reference = _losses(ref / "meters.jsonl")

    args = ["-m", *LAUNCHER, *_sweep_overrides(corpus, data_bin, *extra, "common.threads=1")]
    args += ["+hydra.launcher.additional_parameters={requeue: true}"]
    proc = _submit(args, tmp_path, slurm)
    meters = None
    deadline = time.time() + 300
    while time.time() < deadline:
        found = list(tmp_path.glob("multirun/*/*/0/meters.jsonl"))
        if found and len(_losses(found[0])) >= 10:
            meters = found[0]
            break
        time.sleep(0.2)
    assert meters is not None, "the job did not start training"
    job_id = subprocess.run(["squeue", "-h", "-o", "%i"], env=slurm, capture_output=True, text=True).stdout.split()[0]
    subprocess.run(["scancel", "--signal=USR2", job_id], env=slurm, check=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    log = (meters.parent / "runner.log").read_text()
    assert "received SIGUSR2" in log and "resumed from" in log, log[-3000:]
    assert ckpt.load(meters.parent / "checkpoints" / "checkpoint_last.pt")["trainer"]["num_updates"] == 60
    assert _losses(meters) == reference, "requeued run ends where an uninterrupted one does"


def test_two_tasks_of_one_job_train_as_one_ddp_group(slurm, corpus, data_bin, tmp_path) -> None:
    args = [
        "-m",
        *LAUNCHER,
        "hydra.launcher.tasks_per_node=2",
        "hydra.launcher.mem_gb=2",
        *_sweep_overrides(corpus, data_bin, "optimization.max_update=4", "common.threads=1"),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=tmp_path, env=slurm, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (job,) = [p for p in tmp_path.glob("multirun/*/*/0")]
    logs = "".join(p.read_text() for p in tmp_path.glob("multirun/*/*/.submitit/*/*.out"))
    assert "distributed: rank 0 of 2" in logs and "distributed: rank 1 of 2" in logs, logs[-3000:]
    assert ckpt.load(job / "checkpoints" / "checkpoint_last.pt")["trainer"]["num_updates"] == 4
