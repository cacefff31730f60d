"""MLflow tracking against a real local SQLite store: what a training run records, resume into the same run, sweeps as
parent and child runs (basic launcher and submitit processes), evaluation results logged into the producing run, the
spool that keeps what an unreachable store could not take, and no ``import mlflow`` on paths that track nothing."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from runner import checkpoint as ckpt
from runner import tracking
from runner.tracking import Spool, Store, Tracker, flatten, log_to_checkpoint_run

from .conftest import compose_train, micro_overrides, run_module

TRACK = ["tracking.enabled=true"]


def sqlite_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def runs_of(client: MlflowClient, experiment: str = "runner") -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def meters(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= artifacts(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def dead_uri() -> str:
    """An http URI where nothing listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def trained(corpus, data_bin, tmp_path_factory):
    """One micro training run recorded in the default store (./mlflow.db of the working folder)."""
    cwd = tmp_path_factory.mktemp("tracked")
    out = cwd / "run"
    extra = [
        *TRACK,
        "optimization.max_update=6",
        "common.log_interval=2",
        "dataset.validate_interval_updates=3",
        "tracking.log_checkpoint=weights",
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        proc = run_module("runner", micro_overrides(corpus, data_bin, out, *extra), cwd=cwd)
    return {
        "cwd": cwd,
        "out": out,
        "extra": extra,
        "log": proc.stdout + proc.stderr,
        "client": MlflowClient(sqlite_uri(cwd)),
    }


def test_a_training_run_records_config_tags_metrics_and_artifacts(trained) -> None:
    client, out, cwd = trained["client"], trained["out"], trained["cwd"]
    (run,) = runs_of(client)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((cwd / "mlartifacts").as_uri()), "explicit artifact location by the db"
    state = ckpt.load(out / "checkpoints" / "checkpoint_last.pt")
    assert state["tracking"]["run_id"] == run.info.run_id
    assert state["tracking"]["uri"] == sqlite_uri(cwd)

    # params: the whole composed config, dotted keys
    expected = {k: str(v) for k, v in flatten(state["cfg"]).items()}
    assert run.data.params == expected
    assert run.data.params["model.encoder_embed_dim"] == "32" and run.data.params["optimizer.betas"] == "[0.9, 0.98]"

    tags = run.data.tags
    assert len(tags["git.commit"]) == 40 and tags["git.dirty"] in ("true", "false")
    assert "optimization.max_update=6" in tags["hydra.overrides"].split()
    assert tags["hydra.choice.model"] == "transformer_tiny" and tags["hydra.choice.optimizer"] == "adam"
    assert tags["hydra.job_name"] == "runner" and tags["runner.kind"] == "train"
    assert "mlflow.parentRunId" not in tags

    # metrics: every meter of every record, at step num_updates, exactly as in meters.jsonl
    records = meters(out / "meters.jsonl")
    assert {r["type"] for r in records} >= {"train_inner", "valid"}
    want: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for k, v in r.items():
            if k not in ("type", "time", "num_updates"):
                want.setdefault(f"{r['type']}/{k}", []).append((r["num_updates"], float(v)))
    assert set(run.data.metrics) == set(want)
    for key, points in want.items():
        assert history(client, run.info.run_id, key) == sorted(points), key
    assert [s for s, _ in history(client, run.info.run_id, "valid/loss")] == [3, 6]

    files = artifacts(client, run.info.run_id)
    assert {
        "hydra/config.yaml",
        "hydra/overrides.yaml",
        "meters.jsonl",
        "checkpoint_best/config.yaml",
        "checkpoint_best/checkpoint_best.pt",
        "runner.log",
    } <= files
    assert not (out / "mlflow_spool.jsonl").exists(), "nothing left unsent"


def test_evaluation_results_go_into_the_run_that_made_the_checkpoint(trained) -> None:
    client, out = trained["client"], trained["out"]
    best = out / "checkpoints" / "checkpoint_best.pt"
    state = ckpt.load(best)
    run_id = log_to_checkpoint_run(best, {"test/bleu": 12.5, "test/sentences_per_s": 40.0})
    assert run_id == state["tracking"]["run_id"]
    step = state["trainer"]["num_updates"]
    assert history(client, run_id, "test/bleu") == [(step, 12.5)]
    assert log_to_checkpoint_run(state, {"test/chrf": 30.0}, step=99) == run_id, "a loaded checkpoint works too"
    assert history(client, run_id, "test/chrf") == [(99, 30.0)]
    untracked = {k: v for k, v in state.items() if k != "tracking"}
    assert log_to_checkpoint_run(untracked, {"test/bleu": 1.0}) is None


def test_a_resumed_run_continues_the_same_mlflow_run(trained, corpus, data_bin) -> None:
    client, out, cwd = trained["client"], trained["out"], trained["cwd"]
    (before,) = runs_of(client)
    extra = [x for x in trained["extra"] if not x.startswith("optimization.max_update")]
    proc = run_module(
        "runner",
        micro_overrides(corpus, data_bin, out, *extra, "optimization.max_update=10", "optimizer.lr=0.003"),
        cwd=cwd,
    )
    assert "continuing MLflow run" in proc.stdout + proc.stderr
    (run,) = runs_of(client)
    assert run.info.run_id == before.info.run_id and run.info.status == "FINISHED"
    steps = [s for s, _ in history(client, run.info.run_id, "train_inner/loss")]
    assert steps == [2, 4, 6, 8, 10], "metrics continue at the right step, none logged twice"
    assert run.data.params["optimizer.lr"] == before.data.params["optimizer.lr"], "params are not re-logged"
    assert run.data.tags["resumed_with.optimizer.lr"] == "0.003"
    assert run.data.tags["resumed_with.optimization.max_update"] == "10"
    assert ckpt.load(out / "checkpoints" / "checkpoint_last.pt")["tracking"]["run_id"] == run.info.run_id


def test_tracking_off_records_nothing(corpus, data_bin, tmp_path, monkeypatch) -> None:
    from runner.train import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "off"
    train(compose_train(micro_overrides(corpus, data_bin, out, "tracking.enabled=false", "optimization.max_update=2")))
    assert not (tmp_path / "mlflow.db").exists() and not (out / "mlflow_spool.jsonl").exists()
    assert ckpt.load(out / "checkpoints" / "checkpoint_last.pt")["tracking"] == {}


@pytest.mark.parametrize("args", [["--cfg", "job"], ["--help"]])
def test_printing_the_config_or_help_does_not_import_mlflow(args, tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runner", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert not any(m == "mlflow" or m.startswith("mlflow.") for m in imported)


def test_a_sweep_is_a_parent_run_with_one_child_per_job(corpus, data_bin, tmp_path) -> None:
    args = [
        a
        for a in micro_overrides(corpus, data_bin, tmp_path)
        if not a.startswith(("checkpoint.", "common.meters", "hydra.run"))
    ]
    run_module(
        "runner",
        [
            "-m",
            *args,
            *TRACK,
            "optimizer.lr=0.001,0.002",
            "optimization.max_update=2",
            "hydra/launcher=basic",
            f"tracking.uri={sqlite_uri(tmp_path)}",
            "hydra.sweep.dir=sweep",
        ],
        cwd=tmp_path,
    )
    client = MlflowClient(sqlite_uri(tmp_path))
    runs = runs_of(client)
    (parent,) = [r for r in runs if r.data.tags.get("runner.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("runner.kind") == "train"]
    assert len(runs) == 3 and parent.info.status == "FINISHED"
    assert json.loads((tmp_path / "sweep" / tracking.PARENT_FILE).read_text())["run_id"] == parent.info.run_id
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.info.run_name for c in children) == ["optimizer.lr=0.001", "optimizer.lr=0.002"]
    assert sorted(c.data.params["optimizer.lr"] for c in children) == ["0.001", "0.002"]
    assert {c.data.tags["hydra.job_num"] for c in children} == {"0", "1"}
    assert "multirun.yaml" in artifacts(client, parent.info.run_id)


@pytest.mark.slow  # ~25 s: a submitting process plus one job process, each importing torch and mlflow
def test_submitit_jobs_in_other_processes_join_the_sweep(corpus, data_bin, tmp_path) -> None:
    args = [
        a
        for a in micro_overrides(corpus, data_bin, tmp_path)
        if not a.startswith(("checkpoint.", "common.meters", "hydra.run"))
    ]
    proc = run_module(
        "runner",
        [
            "-m",
            *args,
            *TRACK,
            "optimizer.lr=0.001",
            "optimization.max_update=1",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            f"tracking.uri={sqlite_uri(tmp_path)}",
            "hydra.sweep.dir=sweep",
        ],
        cwd=tmp_path,
    )
    assert "Submitit 'local'" in proc.stdout + proc.stderr
    client = MlflowClient(sqlite_uri(tmp_path))
    runs = runs_of(client)
    (parent,) = [r for r in runs if r.data.tags.get("runner.kind") == "sweep"]
    (child,) = [r for r in runs if r.data.tags.get("runner.kind") == "train"]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.status == "FINISHED" and child.data.metrics
    submitted = list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))
    assert submitted, "the job ran under submitit, in its own process"


# ------------------------------------------------------------------------------------------------ spool and store
def tracker_cfg(corpus: Path, data_bin: Path, out: Path, uri: str, *extra: str):
    return compose_train(
        micro_overrides(corpus, data_bin, out, *TRACK, f"tracking.uri={uri}", "tracking.flush_interval=0", *extra)
    )


def test_an_unreachable_store_spools_everything_and_a_replay_delivers_it(corpus, data_bin, tmp_path, caplog) -> None:
    out = tmp_path / "run"
    down = dead_uri()
    t = Tracker(tracker_cfg(corpus, data_bin, out, down))
    with caplog.at_level(logging.INFO, logger="runner.tracking"):
        t.start({})
        for step in range(1, 6):
            t("train_inner", {"loss": 10.0 - step, "num_updates": step, "epoch": 1})
        t.finish()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "failed" in r.getMessage()]
    assert len(warnings) == 1, "warns once"
    assert t.run_id is None and t.state()["run_id"] is None
    spool = Spool(out / "mlflow_spool.jsonl")
    ops = spool.read()
    assert ops[0]["op"] == "create" and ops[-1]["op"] == "status" and {op["uri"] for op in ops} == {down}

    # a resumed run finds its pending run in the spool instead of creating another one
    t2 = Tracker(tracker_cfg(corpus, data_bin, out, down))
    t2.start({})
    assert t2._ref == ops[0]["ref"]
    t2("train_inner", {"loss": 4.0, "num_updates": 6})
    t2.finish()

    target = sqlite_uri(tmp_path)
    assert tracking.main(["replay", str(spool.path), "--uri", target]) == 0
    assert not spool.path.exists()
    client = MlflowClient(target)
    (run,) = runs_of(client)
    assert history(client, run.info.run_id, "train_inner/loss") == [(s, 10.0 - s) for s in range(1, 7)]
    assert run.data.params["model.encoder_layers"] == "1" and run.info.status == "FINISHED"
    assert run.data.tags["runner.kind"] == "train"


def test_a_refused_operation_does_not_block_the_spool(tmp_path, caplog) -> None:
    uri = sqlite_uri(tmp_path)
    store = Store(uri)
    store.apply(
        {
            "op": "create",
            "ref": "pending-a",
            "experiment": "runner",
            "artifact_location": None,
            "run_name": "a",
            "start_time": 0,
            "tags": {},
        }
    )
    run_id = store.refs["pending-a"]
    spool = Spool(tmp_path / "spool.jsonl")
    spool.append(
        [
            {"op": "log", "run": "0" * 32, "metrics": [["x", 1.0, 0, 1]]},  # no such run: refused
            {"op": "log", "run": run_id, "metrics": [["x", 2.0, 0, 2]]},
        ],
        uri,
    )
    with caplog.at_level(logging.WARNING, logger="runner.tracking"):
        assert tracking.replay(spool, Store(uri)) == 2
    assert "refused" in caplog.text and not spool.path.exists()
    assert history(MlflowClient(uri), run_id, "x") == [(2, 2.0)]


def test_a_checkpoint_run_missing_from_the_store_starts_a_new_run(corpus, data_bin, tmp_path, caplog) -> None:
    uri = sqlite_uri(tmp_path)
    t = Tracker(tracker_cfg(corpus, data_bin, tmp_path / "run", uri))
    with caplog.at_level(logging.WARNING, logger="runner.tracking"):
        t.start({"run_id": "f" * 32, "uri": uri})
    assert "missing" in caplog.text
    assert t.run_id and t.run_id != "f" * 32
    t.finish()
    assert runs_of(MlflowClient(uri))[0].info.run_id == t.run_id


def test_bad_log_checkpoint_value_is_named(corpus, data_bin, tmp_path) -> None:
    with pytest.raises(ValueError, match="tracking.log_checkpoint"):
        Tracker(tracker_cfg(corpus, data_bin, tmp_path, sqlite_uri(tmp_path), "tracking.log_checkpoint=all"))


def test_where_runs_go_and_which_process_records_them(corpus, data_bin, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.resolve_uri(None) == "http://tracking.example:5000"
    assert tracking.resolve_uri("sqlite:////x/m.db") == "sqlite:////x/m.db", "tracking.uri wins"
    assert tracking.default_artifact_location("sqlite:////x/m.db", "my exp") == "file:///x/mlartifacts/my_exp"

    cfg = tracker_cfg(corpus, data_bin, tmp_path, sqlite_uri(tmp_path))
    monkeypatch.setenv("SLURM_PROCID", "1")
    with tracking.tracked(cfg) as t:
        assert t is None, "only rank 0 records"
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    tags = tracking.run_tags()
    assert tags["slurm.job_id"] == "4242" and tags["slurm.restart_count"] == "2"
