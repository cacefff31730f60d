"""Tracking against a real ``mlflow server`` on 127.0.0.1: a server killed mid-run and restarted loses nothing, and
training never waits for it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from runner.tracking import Tracker

from .conftest import compose_train, micro_overrides


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` with a SQLite store in ``root``; killed with SIGKILL (its whole process group) and restarted
    on the same port and store."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> None:
        cmd = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--default-artifact-root",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job workers
        log = (self.root / "server.log").open("a")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"mlflow server not healthy after {timeout}s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server's own session: it and its uvicorn worker
            self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    srv.start()
    yield srv
    srv.kill()


def test_a_server_killed_mid_run_loses_nothing(server, corpus, data_bin, tmp_path, caplog) -> None:
    out = tmp_path / "run"
    cfg = compose_train(
        micro_overrides(
            corpus,
            data_bin,
            out,
            "tracking.enabled=true",
            f"tracking.uri={server.uri}",
            "tracking.flush_interval=0",
            "tracking.retry_interval=0",
        )
    )
    t = Tracker(cfg)
    spool = out / "mlflow_spool.jsonl"
    with caplog.at_level(logging.INFO, logger="runner.tracking"):
        t.start({})
        t.wait_ready()  # from here on, with flush_interval=0, every record is sent at once
        for step in range(1, 11):
            t("train_inner", {"loss": 100.0 - step, "lr": 1e-3, "num_updates": step})
        run_id = t.run_id
        assert run_id, "created on the server"
        assert not spool.exists()

        server.kill()
        start = time.perf_counter()
        for step in range(11, 31):
            t("train_inner", {"loss": 100.0 - step, "lr": 1e-3, "num_updates": step})
        t("valid", {"loss": 5.0, "num_updates": 30})
        assert time.perf_counter() - start < 10, "training does not wait for a dead server"
        assert spool.exists() and len(spool.read_text().splitlines()) == 21

        server.start()
        t("train_inner", {"loss": 60.0, "lr": 1e-3, "num_updates": 31})  # the next batch replays the spool first
        assert not spool.exists(), "replayed once the server answers"
        t("train_inner", {"loss": 59.0, "lr": 1e-3, "num_updates": 32})
        t.finish()

    failures = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failures) == 1 and "Training goes on" in failures[0].getMessage(), "warns once"
    assert "answers again" in caplog.text
    client = MlflowClient(server.uri)
    loss = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train_inner/loss"))
    assert loss == [(s, 100.0 - s) for s in range(1, 31)] + [(31, 60.0), (32, 59.0)], "every metric arrived"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "valid/loss")] == [(30, 5.0)]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["model.encoder_layers"] == "1"
