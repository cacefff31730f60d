"""Checkpoint files: atomic writes, safe reads, and the retention policy (best, last, every N epochs/updates).

A checkpoint is a dict of tensors and plain containers only (the resolved config, state_dicts, trainer counters,
RNG states), so it loads with ``torch.load(weights_only=True)``: opening one never runs pickled code.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit; the message names the file."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_atomic(state: dict[str, Any], paths: list[Path]) -> None:
    """Write ``state`` to the first path via a temporary file and rename, then hard-link it to the others.

    A reader (or a crash) sees either the previous file or the complete new one, never a partial write.
    """
    if not paths:
        return
    first = paths[0]
    first.parent.mkdir(parents=True, exist_ok=True)
    tmp = first.with_name(f".{first.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, first)
    for other in paths[1:]:
        tmp_other = other.with_name(f".{other.name}.tmp")
        tmp_other.unlink(missing_ok=True)
        os.link(first, tmp_other)
        os.replace(tmp_other, other)
    _fsync_dir(first.parent)


def load(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Read one of our checkpoints without unpickling code; ``mmap`` maps the tensors from the file (copy-on-write)
    instead of reading them, so a large model's weights are paged in as used and never held twice."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a runner checkpoint (no 'model' entry)")
    return state


def prune(save_dir: Path, keep_interval_updates: int, keep_last_epochs: int) -> None:
    """Delete the oldest update (``checkpoint_E_U.pt``) and epoch (``checkpointE.pt``) checkpoints beyond the limits."""
    for pattern, keep in (
        (r"checkpoint_\d+_(\d+)\.pt", keep_interval_updates),
        (r"checkpoint(\d+)\.pt", keep_last_epochs),
    ):
        if keep < 0:
            continue
        found = sorted(
            ((int(m.group(1)), p) for p in save_dir.iterdir() if (m := re.fullmatch(pattern, p.name))),
            reverse=True,
        )
        for _, p in found[keep:]:
            p.unlink(missing_ok=True)
            log.info("removed old checkpoint %s", p)


def cpu_snapshot(obj: Any) -> Any:
    """A copy of ``obj`` whose tensors are detached CPU clones (shared storage stays shared), safe to serialise in
    another thread while training goes on changing the originals."""
    memo: dict[tuple[Any, ...], torch.Tensor] = {}

    def copy(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            key = (x.untyped_storage().data_ptr(), x.storage_offset(), tuple(x.shape), x.stride(), x.dtype)
            if key not in memo:
                memo[key] = x.detach().to("cpu", copy=True)
            return memo[key]
        if isinstance(x, dict):
            return type(x)((k, copy(v)) for k, v in x.items())
        if isinstance(x, (list, tuple)):
            return type(x)(copy(v) for v in x)
        return x

    return copy(obj)


class BackgroundSaver:
    """Writes checkpoints in a thread so that training goes on while a large model is serialised.

    ``save`` snapshots the state (a CPU copy: the only time training waits), then writes it atomically with
    :func:`save_atomic` and runs ``then`` (pruning, logging) in the thread. One write at a time: a new ``save``, and
    ``wait``, first finish the one in flight; an error in the thread is raised by the next ``save``/``wait``. The
    thread is not a daemon, so an exiting interpreter still completes the write.
    """

    def __init__(self) -> None:
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self.last_write_seconds = 0.0  # duration of the last completed write (serialisation + fsync)

    def save(self, state: dict[str, Any], paths: list[Path], then: Optional[Callable[[], None]] = None) -> float:
        """Start writing ``state`` to ``paths``; returns the seconds training was blocked (waiting + snapshot)."""
        start = time.perf_counter()
        self.wait()
        snapshot = cpu_snapshot(state)
        self._thread = threading.Thread(target=self._write, args=(snapshot, paths, then), name="checkpoint-writer")
        self._thread.start()
        return time.perf_counter() - start

    def _write(self, state: dict[str, Any], paths: list[Path], then: Optional[Callable[[], None]]) -> None:
        start = time.perf_counter()
        try:
            save_atomic(state, paths)
            self.last_write_seconds = time.perf_counter() - start
            if then is not None:
                then()
        except BaseException as e:  # reported to the training thread by the next save()/wait()
            self._error = e

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Block until the write in flight (if any) is on disk; re-raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise CheckpointError(f"writing a checkpoint failed: {type(error).__name__}: {error}") from error


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules whose parameters live on the meta device (no memory, no random values) while buffers stay
    real: non-persistent buffers such as sinusoidal tables are not in a state_dict and must be computed."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: Optional[nn.Parameter]) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def build_with_weights(build: Callable[[], nn.Module], weights: dict[str, torch.Tensor], path: str | Path) -> nn.Module:
    """The module ``build`` makes, holding ``weights`` as its parameters: built on the meta device first, so a large
    model never holds random fp32 weights next to the loaded ones. Tied parameters stay tied; missing or unexpected
    keys and mismatched shapes raise CheckpointError naming ``path`` and the keys."""
    with parameters_on_meta():
        module = build()
    names = dict(module.named_parameters(remove_duplicate=False))
    tied: dict[int, list[str]] = {}
    for name, p in names.items():
        tied.setdefault(id(p), []).append(name)
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the model its config builds: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for name, p in names.items():
        if tuple(weights[name].shape) != tuple(p.shape):
            raise CheckpointError(
                f"{path}: {name} has shape {tuple(weights[name].shape)} in the checkpoint, "
                f"{tuple(p.shape)} in the model"
            )
    module.load_state_dict(weights, assign=True)
    for group in tied.values():
        first = module.get_parameter(group[0])
        for name in group[1:]:
            owner, _, leaf = name.rpartition(".")
            setattr(module.get_submodule(owner), leaf, first)
    still_meta = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if still_meta:
        raise CheckpointError(f"{path}: no values for {still_meta[:5]}")
    return module
