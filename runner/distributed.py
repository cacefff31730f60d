"""Multi-process training: process-group setup from torchrun's or SLURM's environment, DDP/FSDP wrapping, and the
few collectives the trainer needs (sums of meters, the update's total sample size, agreement on stopping).

One process per device. Under torchrun the usual RANK/WORLD_SIZE/MASTER_* variables are read; inside a SLURM job
step with several tasks (``hydra/launcher=slurm`` with ``tasks_per_node``/``nodes``) they are derived from
SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID and the job's first node. gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger("runner.train")


@dataclass
class DistEnv:
    """Where this process sits: global rank, number of processes, rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``gpu[003-005,9],cpu1`` -> ``gpu003``), via scontrol when present."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    head = nodelist.split(",")[0]
    if "[" in head:
        prefix, rest = head.split("[", 1)
        return prefix + rest.rstrip("]").split(",")[0].split("-")[0]
    return head


def env_from_slurm(environ: dict[str, str]) -> dict[str, str]:
    """torch.distributed's env:// variables for a multi-task SLURM job step (empty when not in one)."""
    ntasks = int(environ.get("SLURM_NTASKS", environ.get("SLURM_NPROCS", "1")))
    if ntasks <= 1 or "SLURM_PROCID" not in environ or "RANK" in environ:
        return {}
    job_id = int(environ.get("SLURM_JOB_ID", "0").split("_")[0] or 0)
    return {
        "RANK": environ["SLURM_PROCID"],
        "WORLD_SIZE": str(ntasks),
        "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": environ.get("MASTER_ADDR") or first_host(environ.get("SLURM_JOB_NODELIST", "localhost")),
        "MASTER_PORT": environ.get("MASTER_PORT") or str(20000 + job_id % 20000),
    }


def init(backend: str, timeout_s: int, use_cuda: bool) -> DistEnv:
    """Join the process group described by the environment; a single process when there is none."""
    os.environ.update(env_from_slurm(dict(os.environ)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    env = DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    log.info("distributed: rank %d of %d (local rank %d), backend %s", env.rank, world, env.local_rank, backend)
    return env


def wrap(model: nn.Module, env: DistEnv, strategy: str, device: torch.device) -> nn.Module:
    """DDP (a full replica per process) or FSDP (parameters, gradients and optimizer state sharded per layer)."""
    if not env.enabled:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():
            if type(module).__name__.endswith("Layer") and module is not model:
                fully_shard(module)
        fully_shard(model)
        return model
    raise ValueError(f"distributed.strategy: expected ddp or fsdp, got {strategy!r}")


def all_sum(values: list[float], env: DistEnv) -> list[float]:
    """Element-wise sum over all processes (identity for one process)."""
    if not env.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def any_true(flag: bool, env: DistEnv) -> bool:
    """True on every process when it is true on any (to take decisions together)."""
    if not env.enabled:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_float(value: float, env: DistEnv) -> float:
    """Rank 0's value on every process (e.g. the wall clock that decides stop_time_hours)."""
    if not env.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, 0)
    return float(t.item())


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every process's ``obj``, in rank order."""
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def full_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer, env: DistEnv) -> tuple[dict, dict]:
    """Unsharded model and optimizer state dicts (complete on rank 0), whatever the wrapping."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    if not env.enabled:
        return model.state_dict(), optimizer.state_dict()
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(model, optimizer, options=opts)


def load_full_state_dicts(
    model: nn.Module, optimizer: Optional[torch.optim.Optimizer], model_sd: dict, optim_sd: Optional[dict], env: DistEnv
) -> None:
    """Load unsharded state dicts written by :func:`full_state_dicts` (or by a single process).

    Under FSDP each full tensor is cut to this rank's shard; tied weights (shared embeddings) appear under several
    keys and are simply written once per key."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    from torch.distributed.tensor import DTensor, distribute_tensor

    model = getattr(model, "module", model)  # DDP's wrapper prefixes its keys with "module."
    current = model.state_dict()
    converted = {}
    for key, value in model_sd.items():
        target = current.get(key)
        if isinstance(target, DTensor):
            value = distribute_tensor(value.to(target.dtype), target.device_mesh, target.placements)
        converted[key] = value
    model.load_state_dict(converted)
    if optimizer is None or optim_sd is None:
        return
    if env.enabled:
        set_optimizer_state_dict(model, optimizer, optim_sd, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(optim_sd)


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()
