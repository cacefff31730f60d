"""``python -m runner.compare``: the runs of an experiment or a sweep side by side, read from MLflow (not log files).

Prints a table (chosen params, the final and best value of chosen metrics) sorted by the best value of one metric,
selects runs with MLflow's search syntax, and can draw one metric over updates for every listed run (PNG).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import hydra
from omegaconf import DictConfig

from runner.cli import bad_input_exits
from runner.config import CONF_DIR
from runner.tracking import PARENT_FILE, resolve_uri

log = logging.getLogger("runner.compare")

HIGHER_IS_BETTER = ("bleu", "chrf", "acc")  # metric names (last part) where larger wins, besides cfg.maximize


class CompareError(RuntimeError):
    """The runs cannot be selected (no such experiment, a bad filter); the message says which setting."""


@dataclass
class RunRow:
    """One run of the table: its identity, chosen params, and final/best value per metric."""

    run_id: str
    name: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)


def maximized(metric: str, maximize: list[str]) -> bool:
    """Whether a larger value of ``metric`` is better (listed in ``maximize``, or named like BLEU/chrF/accuracy)."""
    last = metric.rsplit("/", 1)[-1].lower()
    return metric in maximize or any(last.startswith(name) for name in HIGHER_IS_BETTER)


def sweep_filter(sweep: str) -> str:
    """The search clause selecting a sweep's jobs: by its parent run (from the sweep folder or given as an id)."""
    folder = Path(sweep)
    if (folder / PARENT_FILE).is_file():
        parent = json.loads((folder / PARENT_FILE).read_text(encoding="utf-8"))["run_id"]
        return f"tags.mlflow.parentRunId = '{parent}'"
    if folder.is_dir():  # the parent run could not be created: the jobs still carry their sweep folder
        return f"tags.runner.sweep_dir = '{folder.absolute()}'"
    return f"tags.mlflow.parentRunId = '{sweep}'"


def select_runs(client: Any, cfg: DictConfig) -> list[Any]:
    """The experiment's training runs matching ``cfg.sweep`` and ``cfg.filter`` (sweep parents left out)."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is None:
        names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise CompareError(f"experiment={cfg.experiment!r}: no such experiment in {client.tracking_uri} ({names})")
    clauses = [c for c in (cfg.filter, sweep_filter(cfg.sweep) if cfg.sweep else "") if c]
    try:
        runs = client.search_runs([exp.experiment_id], " and ".join(clauses), max_results=cfg.max_runs)
    except MlflowException as e:
        raise CompareError(f"filter={cfg.filter!r}: {e.message}") from None
    return [r for r in runs if r.data.tags.get("runner.kind") != "sweep"]


def varying_params(runs: list[Any]) -> list[str]:
    """Params whose values differ between runs, leaving out per-run paths (values inside the run's folder)."""
    keys = sorted({k for r in runs for k in r.data.params})
    out = []
    for k in keys:
        values = [r.data.params.get(k) for r in runs]
        if len(set(values)) < 2:
            continue
        per_run = any(
            (folder := r.data.tags.get("hydra.output_dir")) and folder in (r.data.params.get(k) or "") for r in runs
        )
        if not per_run:
            out.append(k)
    return out


def history(client: Any, run_id: str, metric: str) -> list[tuple[int, float]]:
    """(update, value) points of one metric, one per step (a step logged again after a resume keeps the last)."""
    points: dict[int, tuple[int, float]] = {}
    for m in client.get_metric_history(run_id, metric):
        if m.step not in points or m.timestamp >= points[m.step][0]:
            points[m.step] = (m.timestamp, m.value)
    return [(step, v) for step, (_, v) in sorted(points.items())]


def build_rows(client: Any, runs: list[Any], cfg: DictConfig) -> tuple[list[RunRow], list[str]]:
    """Table rows sorted by the best ``cfg.sort`` (runs without it last), and the param columns."""
    columns = list(cfg.params) if cfg.params is not None else varying_params(runs)
    metrics = list(dict.fromkeys([*cfg.metrics, cfg.sort]))
    rows = []
    for r in runs:
        row = RunRow(
            r.info.run_id,
            r.info.run_name or r.info.run_id[:8],
            r.info.status,
            {k: r.data.params.get(k, "") for k in columns},
            dict(r.data.tags),
        )
        for m in metrics:
            if m not in r.data.metrics:
                continue
            row.final[m] = r.data.metrics[m]
            values = [v for _, v in history(client, r.info.run_id, m) if not math.isnan(v)]
            if values:
                row.best[m] = max(values) if maximized(m, list(cfg.maximize)) else min(values)
        rows.append(row)
    sign = -1.0 if maximized(cfg.sort, list(cfg.maximize)) else 1.0
    rows.sort(key=lambda row: (cfg.sort not in row.best, sign * row.best.get(cfg.sort, 0.0), row.name))
    return rows, columns


def _num(v: Optional[float]) -> str:
    return "" if v is None else f"{v:.4g}"


def format_table(rows: list[RunRow], columns: list[str], metrics: list[str]) -> str:
    """Plain-text table: run, id, status, the param columns, then final and best of each metric."""
    header = ["run", "id", "status", *columns]
    for m in metrics:
        header += [f"{m} final", f"{m} best"]
    body = [
        [row.name[:40], row.run_id[:8], row.status.lower(), *(row.params[c] for c in columns)]
        + [x for m in metrics for x in (_num(row.final.get(m)), _num(row.best.get(m)))]
        for row in rows
    ]
    widths = [max(len(str(cell)) for cell in col) for col in zip(header, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(client: Any, rows: list[RunRow], metric: str, path: str) -> Path:
    """A PNG of ``metric`` over updates, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = 0
    for row in rows:
        points = history(client, row.run_id, metric)
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o" if len(points) < 30 else None, label=row.name[:40])
            drawn += 1
    if not drawn:
        plt.close(fig)
        raise CompareError(f"plot_metric={metric!r}: none of the {len(rows)} runs has this metric")
    ax.set_xlabel("updates")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} over updates ({drawn} runs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def compare(cfg: DictConfig) -> tuple[list[RunRow], str]:
    """Select, tabulate (and plot) runs; returns the rows and the table text."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=resolve_uri(cfg.uri))
    runs = select_runs(client, cfg)
    rows, columns = build_rows(client, runs, cfg)
    table = format_table(rows, columns, list(dict.fromkeys([*cfg.metrics, cfg.sort])))
    if cfg.plot and rows:
        log.info("wrote %s", plot(client, rows, cfg.plot_metric, cfg.plot))
    return rows, table


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="compare")
def main(cfg: DictConfig) -> None:
    """The Hydra entry point: print the table on stdout."""
    with bad_input_exits(CompareError):
        rows, table = compare(cfg)
    print(table if rows else "no runs match")
    print(f"\n{len(rows)} runs; best {cfg.sort} first")


if __name__ == "__main__":
    main()
