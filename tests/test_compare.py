"""``python -m runner.compare`` reads runs from a real MLflow store: sorted table, MLflow filters, sweeps, PNG plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from runner.compare import CompareError, compare
from runner.config import CONF_DIR
from runner.tracking import PARENT_FILE

from .conftest import run_module

# name: (lr, valid/loss per step 10, 20, 30, test/bleu)
RUNS = {
    "a": ("0.001", [9.0, 7.0, 7.5], 20.0),
    "b": ("0.002", [8.0, 6.0, 6.5], 18.0),  # best valid/loss (6.0), though its final (6.5) is not the lowest
    "c": ("0.003", [8.5, 6.8, 6.4], 25.0),  # lowest final valid/loss, best BLEU
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("runner", artifact_location=(root / "art").as_uri())
    sweep_dir = root / "multirun" / "sweep1"
    sweep_dir.mkdir(parents=True)
    parent = client.create_run(exp, run_name="sweep", tags={"runner.kind": "sweep"}).info.run_id
    (sweep_dir / PARENT_FILE).write_text(json.dumps({"run_id": parent, "uri": uri}))
    for name, (lr, losses, bleu) in RUNS.items():
        out = root / "outputs" / name
        tags = {"runner.kind": "train", "hydra.output_dir": str(out)}
        if name != "a":
            tags["mlflow.parentRunId"] = parent
        run_id = client.create_run(exp, run_name=name, tags=tags).info.run_id
        params = [
            Param("optimizer.lr", lr),
            Param("common.meters_file", f"{out}/meters.jsonl"),
            Param("model.encoder_layers", "1"),
        ]
        metrics = [Metric("valid/loss", v, 1000 + i, 10 * (i + 1)) for i, v in enumerate(losses)]
        metrics += [Metric("test/bleu", bleu, 2000, 30)]
        client.log_batch(run_id, metrics=metrics, params=params, tags=[RunTag("x", "y")])
        client.set_terminated(run_id)
    return {"uri": uri, "root": root, "sweep": sweep_dir}


def cfg_for(store, *overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose("compare", overrides=[f"uri={store['uri']}", *overrides])


def test_table_is_sorted_by_best_value_with_the_params_that_differ(store) -> None:
    rows, table = compare(cfg_for(store))
    assert [r.name for r in rows] == ["b", "c", "a"], "sorted by best valid/loss, not final"
    assert [r.best["valid/loss"] for r in rows] == [6.0, 6.4, 7.0]
    assert [r.final["valid/loss"] for r in rows] == [6.5, 6.4, 7.5]
    lines = table.splitlines()
    header = lines[0].split()
    assert "optimizer.lr" in header, "the swept param is a column"
    assert "common.meters_file" not in header, "per-run paths are not"
    assert "model.encoder_layers" not in header, "params equal everywhere are not"
    assert "sweep" not in table, "sweep parents are not listed"
    assert lines[2].split()[:2] == ["b", rows[0].run_id[:8]]


def test_filter_uses_mlflow_search_syntax(store) -> None:
    rows, _ = compare(cfg_for(store, "filter=\"params.optimizer.lr = '0.002'\""))
    assert [r.name for r in rows] == ["b"]
    rows, _ = compare(cfg_for(store, "filter='metrics.`valid/loss` < 7'"))
    assert sorted(r.name for r in rows) == ["b", "c"]
    with pytest.raises(CompareError, match="filter="):
        compare(cfg_for(store, "filter='params.optimizer.lr === 3'"))


def test_a_sweep_selects_its_jobs_and_bleu_sorts_descending(store) -> None:
    rows, _ = compare(cfg_for(store, f"sweep={store['sweep']}", "sort=test/bleu", "metrics=[test/bleu]"))
    assert [r.name for r in rows] == ["c", "b"], "only the sweep's jobs, the highest BLEU first"


def test_plot_writes_a_png_of_one_metric_over_updates(store, tmp_path) -> None:
    png = tmp_path / "plots" / "loss.png"
    rows, _ = compare(cfg_for(store, f"plot={png}"))
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(CompareError, match="plot_metric"):
        compare(cfg_for(store, f"plot={tmp_path / 'x.png'}", "plot_metric=nope"))


def test_unknown_experiment_is_named(store) -> None:
    with pytest.raises(CompareError, match="experiment='nope'.*runner"):
        compare(cfg_for(store, "experiment=nope"))


def test_command_line(store, tmp_path) -> None:
    png = tmp_path / "valid.png"
    proc = run_module(
        "runner.compare",
        [f"uri={store['uri']}", "filter=\"params.optimizer.lr != '0.003'\"", f"plot={png}"],
        cwd=tmp_path,
    )
    names = [line.split()[0] for line in proc.stdout.splitlines()[2:] if line.strip()][:2]
    assert names == ["b", "a"] and "2 runs" in proc.stdout
    assert png.is_file()
    assert not list(Path(tmp_path).glob("outputs")), "compare leaves no output folders behind"


def test_command_line_error_exits_1(store, tmp_path, monkeypatch, capsys) -> None:
    from runner import compare as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["compare", f"uri={store['uri']}", "experiment=nope"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    assert "no such experiment" in capsys.readouterr().err
