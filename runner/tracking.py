"""MLflow tracking: every training run is an MLflow run, every sweep a parent run, and no outage loses a record.

Every exchange with the tracking store is an *operation* (create a run, log a batch, upload an artifact, set the
status), a plain dict. The tracker buffers metrics and sends them as one batch every ``flush_interval`` seconds. An
operation that fails is appended to a local spool file (JSON lines, in the run folder) and replayed in order when the
store answers again, at the end of the run, or when the run is resumed (``python -m runner.tracking replay SPOOL``
does it by hand), so a dead server never stops training and nothing is lost.

``import mlflow`` costs seconds: it happens only inside functions here, so ``--help`` and ``--cfg job`` never pay it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Union

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runner.config import REPO_ROOT

log = logging.getLogger("runner.tracking")

PARENT_FILE = "mlflow_parent.json"  # in a sweep folder: the parent run of the sweep's jobs
PARENT_ENV = "RUNNER_MLFLOW_PARENT_RUN_ID"  # the same, for jobs that cannot see the sweep folder
PENDING = "pending-"  # prefix of the local name of a run that the store has not created yet
LOG_CHECKPOINT = ("none", "config", "weights")
MAX_PARAM_VALUE = 6000  # MLflow truncates longer values, which would then differ from ours on resume
MAX_TAG_VALUE = 5000
MAX_KEY = 250
MAX_RUN_NAME = 250
BATCH_METRICS, BATCH_PARAMS, BATCH_TAGS = 1000, 100, 100  # MLflow's log_batch limits per request

Op = dict[str, Any]


# ------------------------------------------------------------------------------------------------ where and what
def resolve_uri(uri: Optional[str]) -> str:
    """The tracking URI: the configured one, else $MLFLOW_TRACKING_URI, else a SQLite file in the working folder."""
    if uri:
        return uri
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def default_artifact_location(uri: str, experiment: str) -> Optional[str]:
    """Next to a SQLite store, an explicit artifact folder (MLflow's default would be relative to the cwd)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :])
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
    return (db.parent / "mlartifacts" / safe).as_uri()


def flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → dotted keys (``optimizer.lr``); lists stay whole values."""
    out: dict[str, Any] = {}
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def config_params(cfg: DictConfig) -> dict[str, str]:
    """The composed config as MLflow params: dotted keys, string values cut to MLflow's length limit."""
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    params = {}
    for k, v in flat.items():
        if len(k) > MAX_KEY:
            log.warning("tracking: config key %s… is longer than %d characters: not logged as a param", k[:60], MAX_KEY)
            continue
        params[k] = str(v)[:MAX_PARAM_VALUE]
    return params


def _git(*args: str) -> Optional[str]:
    try:
        proc = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_tags() -> dict[str, str]:
    """The code version: commit and whether the working tree differs from it."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return {}
    status = _git("status", "--porcelain")
    return {"git.commit": commit, "mlflow.source.git.commit": commit, "git.dirty": str(bool(status)).lower()}


def run_tags() -> dict[str, str]:
    """Tags of a training run: code version, Hydra overrides and group choices, job name, SLURM ids."""
    tags = {"runner.kind": "train", "mlflow.source.name": "runner", "mlflow.source.type": "JOB", **git_tags()}
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):
        pass
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        tags["hydra.overrides"] = " ".join(hc.overrides.task)
        tags["hydra.job_name"] = hc.job.name
        tags["hydra.output_dir"] = str(hc.runtime.output_dir)
        for group, choice in hc.runtime.choices.items():
            if not group.startswith(("hydra/", "schema")) and choice is not None:
                tags[f"hydra.choice.{group}"] = str(choice)
        if hc.mode == RunMode.MULTIRUN:
            tags["runner.sweep_dir"] = str(Path(hc.sweep.dir).absolute())
            tags["hydra.job_num"] = str(hc.job.num)
    for env, tag in (
        ("SLURM_JOB_ID", "slurm.job_id"),
        ("SLURM_ARRAY_JOB_ID", "slurm.array_job_id"),
        ("SLURM_ARRAY_TASK_ID", "slurm.array_task_id"),
        ("SLURM_RESTART_COUNT", "slurm.restart_count"),
    ):
        if env in os.environ:
            tags[tag] = os.environ[env]
    return {k: v[:MAX_TAG_VALUE] for k, v in tags.items()}


def run_folder(cfg: DictConfig) -> Path:
    """The run's output folder (Hydra's), or the folder holding its checkpoint folder outside Hydra."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.checkpoint.save_dir).absolute().parent


def sweep_info() -> dict[str, Any]:
    """What the sweep's callback published for its jobs (parent run id, uri, swept keys); {} outside a sweep."""
    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        return {}
    f = Path(HydraConfig.get().sweep.dir) / PARENT_FILE
    if f.is_file():
        return json.loads(f.read_text(encoding="utf-8"))
    return {"run_id": os.environ[PARENT_ENV]} if PARENT_ENV in os.environ else {}


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def swept_keys(overrides: list[str]) -> list[str]:
    """The keys a sweep varies (``optimizer.lr=1e-3,2e-3``, ``range(...)``, ``choice(...)``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [o.key_or_group for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()]


def default_run_name() -> str:
    """A sweep job's swept values (what distinguishes it from its siblings), else the run folder's name."""
    if not HydraConfig.initialized():
        return "runner"
    hc = HydraConfig.get()
    name = ""
    if hc.mode == RunMode.MULTIRUN:
        swept = set(sweep_info().get("swept", []))
        name = ",".join(o for o in hc.overrides.task if _override_key(o) in swept) or hc.job.override_dirname
    return (name or Path(hc.runtime.output_dir).name)[:MAX_RUN_NAME]


def parent_run_id(uri: str) -> Optional[str]:
    """The sweep's parent run when this job is part of a multirun in the same store."""
    info = sweep_info()
    return info.get("run_id") if info.get("uri", uri) == uri else None


# ------------------------------------------------------------------------------------------------------- store
@contextmanager
def _http_limits(timeout: int) -> Iterator[None]:
    """No retries and a short timeout for calls to a server (the spool retries); the user's settings win."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)}
    added = [k for k in keys if k not in os.environ]
    for k in added:
        os.environ[k] = keys[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class Store:
    """One tracking URI, applying operations; remembers which store run each pending (local) run became."""

    def __init__(self, uri: str, http_timeout: int = 10):
        self.uri = uri
        self.http_timeout = http_timeout
        self.refs: dict[str, str] = {}
        self._client: Any = None
        self._experiments: dict[str, str] = {}

    def client(self) -> Any:
        """The MlflowClient (imported on first use: it costs seconds)."""
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def experiment_id(self, name: str, artifact_location: Optional[str]) -> str:
        """The experiment's id, creating it (with an explicit artifact location on SQLite) when new."""
        from mlflow.exceptions import MlflowException

        if name in self._experiments:
            return self._experiments[name]
        c = self.client()
        exp = c.get_experiment_by_name(name)
        if exp is None:
            try:
                location = artifact_location or default_artifact_location(self.uri, name)
                self._experiments[name] = c.create_experiment(name, artifact_location=location)
                return self._experiments[name]
            except MlflowException:  # created meanwhile by a parallel sweep job
                exp = c.get_experiment_by_name(name)
                if exp is None:
                    raise
        self._experiments[name] = exp.experiment_id
        return exp.experiment_id

    def send(self, op: Op) -> None:
        """Apply ``op``; one the store refuses (a client error, e.g. a deleted run) is dropped with a warning, since
        retrying it would fail forever and hold back everything spooled after it. Other failures raise."""
        try:
            self.apply(op)
        except Exception as e:
            if not _refused(e):
                raise
            log.warning(
                "tracking: %s refused a %r operation for run %s (%s); dropped",
                self.uri,
                op["op"],
                op.get("run", op.get("ref")),
                _brief(e),
            )

    def run_state(self, run_id: str) -> Optional[str]:
        """The run's lifecycle stage (active, deleted), "missing", or None when the store cannot be asked."""
        try:
            with _http_limits(self.http_timeout):
                return self.client().get_run(run_id).info.lifecycle_stage
        except Exception as e:
            return "missing" if _refused(e) else None

    def run_id(self, ref: str) -> str:
        """The store's id of a run named by its id or its pending local name."""
        run_id = self.refs.get(ref, ref)
        if run_id.startswith(PENDING):
            raise RuntimeError(f"run {ref} was never created (its create operation is missing from the spool)")
        return run_id

    def apply(self, op: Op) -> None:
        """Perform one operation on the store; raises when the store fails."""
        from mlflow.entities import Metric, RunTag

        with _http_limits(self.http_timeout):
            c = self.client()
            kind = op["op"]
            if kind == "create":
                exp_id = self.experiment_id(op["experiment"], op.get("artifact_location"))
                run = c.create_run(exp_id, start_time=op["start_time"], run_name=op["run_name"], tags=op["tags"])
                self.refs[op["ref"]] = run.info.run_id
                return
            run_id = self.run_id(op["run"])
            if kind == "log":
                metrics = [Metric(k, v, ts, step) for k, v, ts, step in op.get("metrics", ())]
                tags = [RunTag(k, v) for k, v in op.get("tags", {}).items()]
                for chunk in _chunks(metrics, BATCH_METRICS):
                    c.log_batch(run_id, metrics=chunk, synchronous=True)
                for chunk in _chunks(tags, BATCH_TAGS):
                    c.log_batch(run_id, tags=chunk, synchronous=True)
            elif kind == "params":
                self._log_params(run_id, op["params"])
            elif kind == "artifact":
                path = Path(op["path"])
                if path.is_dir():
                    c.log_artifacts(run_id, str(path), op.get("artifact_path"))
                elif path.is_file():
                    c.log_artifact(run_id, str(path), op.get("artifact_path"))
                else:
                    log.warning("tracking: %s no longer exists: not uploaded", path)
            elif kind == "text":
                c.log_text(run_id, op["text"], op["artifact_file"])
            elif kind == "status":
                if op["status"] == "RUNNING":
                    c.update_run(run_id, status="RUNNING")
                else:
                    c.set_terminated(run_id, status=op["status"], end_time=op.get("end_time"))
            else:
                raise ValueError(f"unknown tracking operation {kind!r}")

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        """Log params the run lacks; a value that differs from the logged one (a resume with a changed setting)
        becomes a ``resumed_with.KEY`` tag, since MLflow forbids changing a param."""
        from mlflow.entities import Param, RunTag

        c = self.client()
        data = c.get_run(run_id).data
        existing = data.params
        new = [Param(k, v) for k, v in params.items() if k not in existing]
        # a tag left by an earlier resume is updated too, so resumed_with.* always tells the latest values
        changed = [
            RunTag(f"resumed_with.{k}"[:MAX_KEY], v[:MAX_TAG_VALUE])
            for k, v in params.items()
            if k in existing and (existing[k] != v or f"resumed_with.{k}"[:MAX_KEY] in data.tags)
        ]
        for chunk in _chunks(new, BATCH_PARAMS):
            c.log_batch(run_id, params=chunk, synchronous=True)
        for chunk in _chunks(changed, BATCH_TAGS):
            c.log_batch(run_id, tags=chunk, synchronous=True)
        differ = [k for k, v in params.items() if k in existing and existing[k] != v]
        if differ:
            log.info("tracking: resumed with changed settings, kept as resumed_with.* tags: %s", ", ".join(differ))


def _refused(e: Exception) -> bool:
    """The store answered and refused (HTTP 4xx other than 429): no retry can succeed."""
    status = getattr(e, "get_http_status_code", None)
    return status is not None and 400 <= status() < 500 and status() != 429


def _brief(e: Exception) -> str:
    text = str(e).splitlines()[0][:300] if str(e) else ""
    return f"{type(e).__name__}: {text}"


# ------------------------------------------------------------------------------------------------------- spool
class Spool:
    """Operations not yet delivered, one JSON object a line, in the order they happened."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)

    def read(self) -> list[Op]:
        """All spooled operations (a torn last line, from a crash mid-write, is dropped)."""
        if not self.path.is_file():
            return []
        ops = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("tracking: skipping an unreadable line of %s", self.path)
        return ops

    def append(self, ops: list[Op], uri: str) -> None:
        """Add operations meant for the store at ``uri`` at the end, durably."""
        if not ops:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps({**op, "uri": uri}) + "\n" for op in ops))
            f.flush()
            os.fsync(f.fileno())

    def rewrite(self, ops: list[Op]) -> None:
        """Replace the content atomically (after a partial replay); no operations left removes the file."""
        if not ops:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(op) + "\n" for op in ops), encoding="utf-8")
        os.replace(tmp, self.path)

    def uri(self) -> Optional[str]:
        """The store the spooled operations were meant for."""
        ops = self.read()
        return ops[0].get("uri") if ops else None

    def pending_ref(self) -> Optional[str]:
        """The local name of a run whose creation is still waiting here, if any."""
        refs = [op["ref"] for op in self.read() if op["op"] == "create"]
        return refs[-1] if refs else None


def replay(spool: Spool, store: Store) -> int:
    """Apply spooled operations in order; on a failure keep the rest in the spool and raise. Returns how many."""
    ops = spool.read()
    for i, op in enumerate(ops):
        try:
            store.send(op)
        except Exception:
            rest = ops[i:]
            for r in rest:  # runs created during this replay are known by their id from now on
                if "run" in r and r["run"] in store.refs:
                    r["run"] = store.refs[r["run"]]
            spool.rewrite(rest)
            raise
    spool.rewrite([])
    return len(ops)


# ----------------------------------------------------------------------------------------------------- tracker
class Tracker:
    """Records one training run in MLflow; the Trainer calls it like any recorder: ``tracker(kind, stats)``."""

    def __init__(self, cfg: DictConfig):
        t = cfg.tracking
        if t.log_checkpoint not in LOG_CHECKPOINT:
            raise ValueError(
                f"tracking.log_checkpoint: expected one of {', '.join(LOG_CHECKPOINT)}, got {t.log_checkpoint!r}"
            )
        self.cfg = cfg
        self.uri = resolve_uri(t.uri)
        self.store = Store(self.uri, t.http_timeout)
        self.spool = Spool(t.spool_file or run_folder(cfg) / "mlflow_spool.jsonl")
        self.flush_interval = float(t.flush_interval)
        self.retry_interval = float(t.retry_interval)
        self.overhead = 0.0  # seconds spent in tracking, reported at the end
        self._ref: Optional[str] = None  # the run's id, or its pending local name
        self._buffer: list[list[Any]] = []
        self._last_flush = time.monotonic()
        self._down = False
        self._retry_at = 0.0
        self._warned = False
        self._finished = False
        self._waiting: list[Op] = []  # operations held while mlflow is imported in the background
        # import mlflow and open the store in the background: training does not wait for it (2-3 s, more for a new
        # SQLite file); operations wait in memory until it is done
        self._warm = threading.Thread(target=self._prewarm, name="mlflow-prewarm", daemon=True)
        self._warm.start()

    def wait_ready(self) -> None:
        """Block until mlflow is imported and the store opened (finish() and resuming do it themselves)."""
        self._warm.join()

    def _prewarm(self) -> None:
        try:
            with _http_limits(self.store.http_timeout):
                self.store.experiment_id(self.cfg.tracking.experiment, self.cfg.tracking.artifact_location)
        except Exception:  # start() meets the same failure and handles it
            pass

    @property
    def run_id(self) -> Optional[str]:
        """The store's id of this run; None before it exists there."""
        if self._ref is None:
            return None
        ref = self.store.refs.get(self._ref, self._ref)
        return None if ref.startswith(PENDING) else ref

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps so that a resumed run (and generate/score) finds this run: the run is created
        first if it is still waiting for the background import (a checkpoint must name its run)."""
        if self._waiting and self.run_id is None:
            t0 = time.perf_counter()
            self._deliver([], force=True, final=True)
            self.overhead += time.perf_counter() - t0
        return {"run_id": self.run_id, "uri": self.uri, "spool": str(self.spool.path.absolute())}

    def start(self, resume: Optional[Mapping[str, Any]] = None) -> None:
        """Continue the checkpoint's run (``resume``: its ``state()``) or one pending in the spool, else create one."""
        t0 = time.perf_counter()
        t = self.cfg.tracking
        ref = self._resumable(resume or {}) or self.spool.pending_ref()
        tags = run_tags()
        ops: list[Op] = []
        if ref:
            self._ref = ref
            ops.append({"op": "status", "run": ref, "status": "RUNNING"})
            log.info("tracking: continuing MLflow run %s at %s", ref, self.uri)
        else:
            self._ref = PENDING + uuid.uuid4().hex
            parent = parent_run_id(self.uri)
            if parent:
                tags["mlflow.parentRunId"] = parent
            ops.append(
                {
                    "op": "create",
                    "ref": self._ref,
                    "experiment": t.experiment,
                    "artifact_location": t.artifact_location,
                    "run_name": t.run_name or default_run_name(),
                    "start_time": int(time.time() * 1000),
                    "tags": {},
                }
            )
        ops.append({"op": "log", "run": self._ref, "tags": tags})
        ops.append({"op": "params", "run": self._ref, "params": config_params(self.cfg)})
        if HydraConfig.initialized() and HydraConfig.get().output_subdir is not None:
            hydra_dir = Path(HydraConfig.get().runtime.output_dir) / HydraConfig.get().output_subdir
            ops.append({"op": "artifact", "run": self._ref, "path": str(hydra_dir), "artifact_path": "hydra"})
        self._deliver(ops, force=True)  # sent now, or with the first batch once mlflow is imported
        self.overhead += time.perf_counter() - t0

    def _resumable(self, resume: Mapping[str, Any]) -> Optional[str]:
        """The checkpoint's run id if that run can be continued here; None to start a new run."""
        run_id, uri = resume.get("run_id"), resume.get("uri")
        if not run_id:
            return None
        self._warm.join()
        if uri and uri != self.uri:
            log.info(
                "tracking: the checkpoint's MLflow run %s is in %s, not %s: starting a new run", run_id, uri, self.uri
            )
            return None
        stage = self.store.run_state(run_id)
        if stage in ("missing", "deleted"):
            log.warning(
                "tracking: the checkpoint's MLflow run %s is %s in %s: starting a new run", run_id, stage, self.uri
            )
            return None
        return run_id  # active, or the store cannot be asked now (its operations wait in the spool)

    def __call__(self, kind: str, stats: dict[str, Any]) -> None:
        """Buffer one record's numbers as ``KIND/NAME`` metrics at step ``num_updates``; send when due."""
        t0 = time.perf_counter()
        ts = int(time.time() * 1000)
        step = int(stats.get("num_updates", 0))
        for k, v in stats.items():
            if k != "num_updates" and isinstance(v, (int, float)) and not isinstance(v, bool):
                self._buffer.append([f"{kind}/{k}", float(v), ts, step])
        if (
            self._ref is not None
            and not self._finished
            and (len(self._buffer) >= BATCH_METRICS or time.monotonic() - self._last_flush >= self.flush_interval)
        ):
            self.flush()
        self.overhead += time.perf_counter() - t0

    def flush(self, force: bool = False) -> None:
        """Send the buffered metrics as one batch (or spool them while the store is unreachable)."""
        self._last_flush = time.monotonic()
        if self._ref is None or not self._buffer:
            return
        op = {"op": "log", "run": self._ref, "metrics": self._buffer}
        self._buffer = []
        self._deliver([op], force=force)

    def finish(self, status: str = "FINISHED") -> None:
        """Send what is left, upload the artifacts, set the final status; report what stays in the spool."""
        if self._ref is None or self._finished:
            return
        t0 = time.perf_counter()
        self._finished = True
        ops: list[Op] = []
        if self._buffer:
            ops.append({"op": "log", "run": self._ref, "metrics": self._buffer})
            self._buffer = []
        ops += self._artifact_ops()
        ops.append({"op": "status", "run": self._ref, "status": status, "end_time": int(time.time() * 1000)})
        self._deliver(ops, force=True, final=True)
        self.overhead += time.perf_counter() - t0
        left = len(self.spool.read())
        if left:
            log.warning(
                "tracking: %d operations could not be sent to %s; they are kept in %s and sent when this "
                "run resumes, or now with: python -m runner.tracking replay %s",
                left,
                self.uri,
                self.spool.path,
                self.spool.path,
            )
        log.info(
            "tracking: MLflow run %s %s; tracking took %.1fs", self.run_id or self._ref, status.lower(), self.overhead
        )

    def _artifact_ops(self) -> list[Op]:
        """The meters log, the job's log file and, as configured, the best checkpoint's config and weights."""
        cfg, ops = self.cfg, []
        if cfg.common.meters_file:
            ops.append(
                {
                    "op": "artifact",
                    "run": self._ref,
                    "path": str(Path(cfg.common.meters_file).absolute()),
                    "artifact_path": None,
                }
            )
        if HydraConfig.initialized():
            hc = HydraConfig.get()
            job_log = Path(hc.runtime.output_dir) / f"{hc.job.name}.log"
            if job_log.is_file():
                ops.append({"op": "artifact", "run": self._ref, "path": str(job_log), "artifact_path": None})
        best = Path(cfg.checkpoint.save_dir).absolute() / "checkpoint_best.pt"
        mode = cfg.tracking.log_checkpoint
        if mode != "none" and best.is_file():
            ops.append(
                {
                    "op": "text",
                    "run": self._ref,
                    "text": OmegaConf.to_yaml(cfg, resolve=True),
                    "artifact_file": "checkpoint_best/config.yaml",
                }
            )
            if mode == "weights":
                ops.append({"op": "artifact", "run": self._ref, "path": str(best), "artifact_path": "checkpoint_best"})
        return [op for op in ops if op["op"] != "artifact" or Path(op["path"]).exists()]

    def _deliver(self, ops: list[Op], force: bool = False, final: bool = False) -> None:
        """Send the spool's backlog, then ``ops``; whatever fails goes to the spool, and training goes on.

        While mlflow is still being imported in the background, operations wait in memory (training does not);
        ``final`` waits for the import and sends everything.
        """
        if final:
            self._warm.join()
        if self._warm.is_alive():
            self._waiting += ops
            return
        ops, self._waiting = self._waiting + ops, []
        if self._down and not force and time.monotonic() < self._retry_at:
            self.spool.append(ops, self.uri)
            return
        done = 0
        try:
            replayed = replay(self.spool, self.store)
            for op in ops:
                self.store.send(op)
                done += 1
        except Exception as e:  # any failure of the store: keep the rest, never stop training
            self._failed(e)
            rest = ops[done:]
            for op in rest:
                if "run" in op:
                    op["run"] = self.store.refs.get(op["run"], op["run"])
            self.spool.append(rest, self.uri)
            return
        if self._down:
            log.info("tracking: %s answers again; sent %d spooled operations", self.uri, replayed)
        self._down = False
        if self._ref in self.store.refs:
            self._ref = self.store.refs[self._ref]
            log.info("tracking: MLflow run %s at %s", self._ref, self.uri)

    def _failed(self, e: Exception) -> None:
        first_of_outage = not self._down
        self._down = True
        self._retry_at = time.monotonic() + self.retry_interval
        msg = _brief(e)
        if not self._warned:
            self._warned = True
            log.warning(
                "tracking: MLflow at %s failed (%s). Training goes on; what cannot be sent is kept in %s "
                "and sent when the store answers (retried every %gs and at the end).",
                self.uri,
                msg,
                self.spool.path,
                self.retry_interval,
            )
        elif first_of_outage:
            log.info("tracking: MLflow at %s unreachable again (%s); spooling", self.uri, msg)


@contextmanager
def tracked(cfg: DictConfig) -> Iterator[Optional[Tracker]]:
    """A Tracker for the run (None with ``tracking.enabled=false`` or on a worker other than rank 0), finished with
    the run's outcome."""
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0"
    if not cfg.tracking.enabled or rank != "0":
        yield None
        return
    tracker = Tracker(cfg)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SLURM preemption (submitit requeues, then exits)
        status = "KILLED"
        raise
    finally:
        tracker.finish(status)


# ------------------------------------------------------------------------------------------ generate and score
def log_to_checkpoint_run(
    checkpoint: Union[str, Path, Mapping[str, Any]],
    metrics: Mapping[str, float],
    step: Optional[int] = None,
    uri: Optional[str] = None,
) -> Optional[str]:
    """Log evaluation results (BLEU, chrF, sentences/s...) into the MLflow run that trained ``checkpoint``.

    ``checkpoint`` is a checkpoint file or its loaded dict; ``step`` defaults to its update count and ``uri`` to the
    store the run was recorded in. Returns the run id, or None when nothing was logged (no run named, or the store
    refused). If the store cannot be reached, the metrics wait in the training run's spool (replayed when that run
    resumes, or by ``python -m runner.tracking replay``). It never raises for a tracking failure.
    """
    if not isinstance(checkpoint, Mapping):
        from runner import checkpoint as ckpt

        checkpoint = ckpt.load(checkpoint)
    info = checkpoint.get("tracking") or {}
    run_id = info.get("run_id")
    if not run_id:
        log.warning(
            "tracking: the checkpoint names no MLflow run (tracking was off or its store unreachable); "
            "metrics not logged"
        )
        return None
    uri = uri or info.get("uri") or resolve_uri(None)
    if step is None:
        step = int((checkpoint.get("trainer") or {}).get("num_updates", 0))
    ts = int(time.time() * 1000)
    op = {"op": "log", "run": run_id, "metrics": [[k, float(v), ts, step] for k, v in metrics.items()]}
    try:
        Store(uri).apply(op)
    except Exception as e:
        spool = info.get("spool")
        if _refused(e) or not spool:
            log.warning(
                "tracking: MLflow at %s did not take the metrics for run %s (%s); not logged", uri, run_id, _brief(e)
            )
            return None
        Spool(spool).append([op], uri)
        log.warning(
            "tracking: MLflow at %s failed (%s); the metrics are kept in %s: send them with "
            "python -m runner.tracking replay %s",
            uri,
            _brief(e),
            spool,
            spool,
        )
    return run_id


# ------------------------------------------------------------------------------------------------------ sweeps
class SweepCallback(Callback):
    """Hydra callback: a multirun is one parent MLflow run, and each job's run points to it (mlflow.parentRunId).

    The parent's id is written to the sweep folder, so jobs in other processes (submitit, SLURM) find it.
    """

    def __init__(self) -> None:
        self._parent: Optional[tuple[Store, str, Path]] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create the parent run and publish its id in the sweep folder."""
        t = config.get("tracking")
        if t is None or not t.enabled:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        uri = resolve_uri(t.uri)
        store = Store(uri, t.http_timeout)
        ref = PENDING + uuid.uuid4().hex
        tags = {
            "runner.kind": "sweep",
            "runner.sweep_dir": str(sweep_dir),
            "hydra.overrides": " ".join(config.hydra.overrides.task)[:MAX_TAG_VALUE],
            **git_tags(),
        }
        op = {
            "op": "create",
            "ref": ref,
            "experiment": t.experiment,
            "artifact_location": t.artifact_location,
            "run_name": f"sweep {config.hydra.sweep.dir}",
            "start_time": int(time.time() * 1000),
            "tags": tags,
        }
        try:
            store.apply(op)
        except Exception as e:
            log.warning(
                "tracking: cannot create the sweep's parent run at %s (%s: %s); jobs are tagged with "
                "runner.sweep_dir instead",
                uri,
                type(e).__name__,
                e,
            )
            return
        run_id = store.refs[ref]
        sweep_dir.mkdir(parents=True, exist_ok=True)
        info = {"run_id": run_id, "uri": uri, "swept": swept_keys(list(config.hydra.overrides.task))}
        (sweep_dir / PARENT_FILE).write_text(json.dumps(info), encoding="utf-8")
        os.environ[PARENT_ENV] = run_id
        self._parent = (store, run_id, sweep_dir)
        log.info("tracking: sweep parent MLflow run %s at %s", run_id, uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Attach the sweep's multirun.yaml and close the parent run."""
        if self._parent is None:
            return
        store, run_id, sweep_dir = self._parent
        self._parent = None
        os.environ.pop(PARENT_ENV, None)
        try:
            if (sweep_dir / "multirun.yaml").is_file():
                store.apply(
                    {"op": "artifact", "run": run_id, "path": str(sweep_dir / "multirun.yaml"), "artifact_path": None}
                )
            store.apply({"op": "status", "run": run_id, "status": "FINISHED", "end_time": int(time.time() * 1000)})
        except Exception as e:
            log.warning("tracking: cannot close the sweep's parent run %s (%s: %s)", run_id, type(e).__name__, e)


# --------------------------------------------------------------------------------------------------------- CLI
def main(argv: Optional[list[str]] = None) -> int:
    """``python -m runner.tracking replay SPOOL [--uri URI]``: send what a run could not."""
    parser = argparse.ArgumentParser(prog="python -m runner.tracking", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("replay", help="send a run's spooled MLflow operations")
    rp.add_argument("spool", type=Path)
    rp.add_argument("--uri", help="tracking URI (default: the one the operations were meant for)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    spool = Spool(args.spool)
    if not spool.path.is_file():
        print(f"{spool.path}: no spool file (nothing to send)")
        return 0
    try:
        n = replay(spool, Store(args.uri or spool.uri() or resolve_uri(None)))
    except Exception as e:
        print(f"{spool.path}: replay stopped ({type(e).__name__}: {e}); {len(spool.read())} operations remain")
        return 1
    print(f"{spool.path}: sent {n} operations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
