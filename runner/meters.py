"""What the user sees while training: meters aggregated over log intervals, a tqdm bar on a terminal, plain
lines off one (SLURM logs), and a JSON-lines record of every meter in the run folder."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Optional

from runner.criteria import base2_per_token, perplexity

log = logging.getLogger("runner.train")

Recorder = Callable[[str, dict[str, Any]], None]


class TrainMeters:
    """Sums of one interval's updates, turned into fairseq's meters (loss in bits/token, wps, ups, wpb, ...)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss = self.nll = 0.0
        self.ntokens = self.nsentences = self.updates = self.clipped = 0
        self.gnorm = 0.0
        self.start = time.perf_counter()

    def add(self, logging_outputs: list[dict[str, Any]], gnorm: float, clipped: bool) -> None:
        for o in logging_outputs:
            self.loss += o["loss"]
            self.nll += o["nll_loss"]
            self.ntokens += o["ntokens"]
            self.nsentences += o["nsentences"]
        self.updates += 1
        self.gnorm += gnorm
        self.clipped += int(clipped)

    def loss_per_token(self) -> float:
        """Average loss so far, in bits per target token."""
        return base2_per_token(self.loss, self.ntokens)

    def stats(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        n = max(self.updates, 1)
        nll = base2_per_token(self.nll, self.ntokens)
        return {
            "loss": round(base2_per_token(self.loss, self.ntokens), 4),
            "nll_loss": round(nll, 4),
            "ppl": round(perplexity(nll), 2),
            "wps": round(self.ntokens / elapsed, 1),
            "ups": round(self.updates / elapsed, 3),
            "wpb": round(self.ntokens / n, 1),
            "bsz": round(self.nsentences / n, 1),
            "gnorm": round(self.gnorm / n, 4),
            "clip": round(self.clipped / n, 3),
        }


def valid_stats(loss: float, nll: float, ntokens: int) -> dict[str, float]:
    """Validation meters from summed losses (nats) over all target tokens."""
    nll_b2 = base2_per_token(nll, ntokens)
    return {
        "loss": round(base2_per_token(loss, ntokens), 4),
        "nll_loss": round(nll_b2, 4),
        "ppl": round(perplexity(nll_b2), 2),
        "ntokens": ntokens,
    }


class JsonlRecorder:
    """Appends one JSON object per record (train interval, epoch summary, validation) to the meters file."""

    def __init__(self, path: Optional[str]):
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, kind: str, stats: dict[str, Any]) -> None:
        if self.path:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"type": kind, "time": round(time.time(), 3), **stats}) + "\n")


def _fmt(stats: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items())


class Progress:
    """Iterates batches showing progress: a tqdm bar (``[Epoch 1] [TRAIN]``) or plain log lines."""

    def __init__(self, fmt: str, log_interval: int):
        if fmt == "auto":
            fmt = "tqdm" if sys.stderr.isatty() else "simple"
        if fmt not in ("tqdm", "simple", "none"):
            raise ValueError(f"common.log_format: expected auto, tqdm, simple or none, got {fmt!r}")
        self.fmt = fmt
        self.log_interval = max(log_interval, 1)
        self._bar: Any = None

    def iterate(self, items: Iterable[Any], epoch: int, split: str, total: int, initial: int = 0) -> Iterator[Any]:
        """Yield ``items`` while drawing the bar for this epoch and split."""
        if self.fmt != "tqdm":
            yield from items
            return
        from tqdm import tqdm

        with tqdm(
            items,
            desc=f"[Epoch {epoch}] [{split.upper()}]",
            total=total,
            initial=initial,
            leave=True,
            dynamic_ncols=True,
            file=sys.stderr,
        ) as bar:
            self._bar = bar
            yield from bar
        self._bar = None

    def live(self, loss: float, lr: float) -> None:
        """Keep the bar's ``loss=…, lr=…`` current after every update."""
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.3g}", lr=f"{lr:.2g}", refresh=False)

    def interval(self, epoch: int, done: int, total: int, stats: dict[str, Any]) -> None:
        """Show an interval's meters as a plain line (the bar shows them live)."""
        if self.fmt == "simple":
            log.info("epoch %03d: %5d / %d %s", epoch, done, total, _fmt(stats))

    def summary(self, epoch: int, split: str, stats: dict[str, Any]) -> None:
        if self.fmt != "none":
            log.info("epoch %03d | %s | %s", epoch, split, _fmt(stats))
