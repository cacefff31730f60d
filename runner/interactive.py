"""``python -m runner.interactive``: read lines (stdin, a terminal prompt, or a file), print hypotheses and latency.

For each input it prints fairseq-interactive's lines: ``S-i`` the source the model saw, ``W-i`` the generation time,
then ``H-i``/``D-i``/``P-i`` for each of the ``nbest`` hypotheses, best first after reranking (scores in base 2).

Dialog checkpoints (or ``history.enabled=true``) keep the conversation: the source is the last ``history.turns``
turns with speaker tags and separators, as NTT's dialog scripts build it (shared/notes/ntt-dialog-1p6b.md), e.g.
``[SPK2]hello[SEP][SPK1]hi there[SEP][SPK2]how are you?``. The reply is chosen among the nbest hypotheses by score
minus ``rerank.unk_penalty`` per ``<unk>``, and joins the history. ``/reset`` clears the history; an empty line is
reported and skipped.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

import hydra
from omegaconf import DictConfig, OmegaConf

from runner.cli import bad_input_exits
from runner.config import CONF_DIR, DialogHistoryConfig, InteractiveConfig

log = logging.getLogger("runner.interactive")
LN2 = math.log(2)
RESET = "/reset"


class DialogHistory:
    """The turns so far, rendered as the model's source for the next user utterance."""

    def __init__(self, cfg: DialogHistoryConfig):
        if cfg.turns < 1:
            raise ValueError(f"history.turns must be >= 1, got {cfg.turns}")
        self.cfg = cfg
        self.turns: list[tuple[str, str]] = []  # (speaker tag, utterance), oldest first

    def reset(self) -> None:
        self.turns.clear()

    def context(self, utterance: str, drop: int = 0) -> str:
        """The source for ``utterance``: up to ``turns - 1`` earlier turns (minus the ``drop`` oldest) that fit
        ``max_chars - len(utterance)`` characters, then the new user turn."""
        from runner.tasks.dialog import dialog_context  # the format the dialog task trains on

        c = self.cfg
        return dialog_context(self.turns, utterance, c.turns, c.max_chars, c.user_tag, c.separator, drop)

    def add(self, utterance: str, reply: str) -> None:
        """Record the user's turn and the system's reply."""
        self.turns += [(self.cfg.user_tag, utterance), (self.cfg.system_tag, reply)]


def rerank(hyps: list[Any], unk: int, unk_penalty: float) -> list[Any]:
    """Hypotheses ordered by score minus ``unk_penalty`` per ``<unk>`` (stable for equal values)."""
    return sorted(hyps, key=lambda h: h.score - unk_penalty * int(h.tokens.eq(unk).sum()), reverse=True)


def input_lines(path: str) -> Iterator[tuple[str, str]]:
    """(where, line) pairs from stdin (with a prompt on a terminal) or a file."""
    if path == "-":
        tty = sys.stdin.isatty()
        lineno = 0
        while True:
            if tty:
                sys.stderr.write("> ")
                sys.stderr.flush()
            line = sys.stdin.readline()
            if not line:
                return
            lineno += 1
            yield f"stdin, line {lineno}", line.rstrip("\r\n")
    else:
        from runner.data.text import read_lines

        for i, line in enumerate(read_lines(path), start=1):
            yield f"{path}, line {i}", line


class Chat:
    """One interactive session: a loaded model, its generator, and (for dialog) the history."""

    def __init__(self, loaded: Any, cfg: InteractiveConfig):
        from runner.generation.search import SequenceGenerator

        self.loaded, self.cfg = loaded, cfg
        d = loaded.dictionary
        self.generator = SequenceGenerator(loaded.model, cfg.generation, d.pad(), d.eos(), d.unk())
        enabled = cfg.history.enabled
        if enabled is None:
            enabled = "dialog" in loaded.task_name.lower()
        self.history = DialogHistory(cfg.history) if enabled else None
        self.count = 0

    def source_ids(self, text: str, where: str) -> tuple[str, Any]:
        """The source text and ids for ``text``; a dialog context sheds its oldest turns before any truncation."""
        from runner.generation.inputs import fit_source

        limit = int(self.loaded.model.max_positions()[0])
        eos = self.loaded.dictionary.eos()
        if self.history is not None:
            for drop in range(len(self.history.turns) + 1):
                source = self.history.context(text, drop)
                ids = self.loaded.encode(source)
                if ids.numel() <= limit:
                    return source, ids
        else:
            source = text
        return source, fit_source(self.loaded.encode(source), limit, self.cfg.long_inputs, where, eos)

    def respond(self, text: str, where: str, out: TextIO) -> str | None:
        """Handle one input line, print its block, return the chosen reply (None when nothing was generated)."""
        if text.strip() == RESET:
            if self.history is not None:
                self.history.reset()
            log.info("history cleared")
            return None
        if not text.strip():
            log.warning("%s: empty input skipped; type a sentence%s", where, " or /reset" if self.history else "")
            return None
        source, ids = self.source_ids(text, where)
        i = self.count
        self.count += 1
        lines = [f"S-{i}\t{source}"]
        if ids is None:
            out.write("\n".join(lines) + f"\nW-{i}\t0.000\tseconds\n")
            out.flush()
            return None
        start = time.perf_counter()
        hyps = self.generator.generate(ids.unsqueeze(0).to(self.loaded.device))[0]
        elapsed = time.perf_counter() - start
        hyps = rerank(hyps, self.loaded.dictionary.unk(), self.cfg.rerank.unk_penalty)
        lines.append(f"W-{i}\t{elapsed:.3f}\tseconds")
        reply = ""
        for rank, h in enumerate(hyps):
            pieces, detok = self.loaded.decode(h.tokens)
            score = h.score / LN2
            pos = " ".join(f"{p / LN2:.4f}" for p in h.positional_scores.tolist())
            lines += [f"H-{i}\t{score:.4f}\t{pieces}", f"D-{i}\t{score:.4f}\t{detok}", f"P-{i}\t{pos}"]
            if rank == 0:
                reply = detok
        out.write("\n".join(lines) + "\n")
        out.flush()
        if self.history is not None:
            self.history.add(text, reply)
        return reply

    def run(self, lines: Iterable[tuple[str, str]], out: TextIO) -> None:
        for where, text in lines:
            self.respond(text, where, out)


def run(cfg: InteractiveConfig, out: TextIO = sys.stdout) -> Chat:
    """Load the checkpoint and answer every input line."""
    import torch

    from runner.generation.inputs import check_policy
    from runner.generation.loading import SEQ2SEQ, load_model

    check_policy(cfg.long_inputs)
    if cfg.common.threads > 0:
        torch.set_num_threads(cfg.common.threads)
    loaded = load_model(cfg.path, (SEQ2SEQ,), cfg.spm_model, cfg.common.cpu, cfg.common.bf16, "runner.interactive")
    if loaded.source is not None:  # a plug-in task whose inputs are not text (images, say)
        from runner.checkpoint import CheckpointError

        raise CheckpointError(
            f"{cfg.path}: task {loaded.task_name} does not take text input; runner.interactive reads text "
            "(use runner.generate with the task's own input files)"
        )
    chat = Chat(loaded, cfg)
    if chat.history is not None:
        log.info("dialog mode: keeping the last %d turns (type %s to clear them)", cfg.history.turns, RESET)
    chat.run(input_lines(cfg.input), out)
    return chat


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="interactive")
def main(cfg: DictConfig) -> None:
    """The Hydra entry point; bad input exits with status 1 and one clear message."""
    from runner.checkpoint import CheckpointError
    from runner.data.text import DataError

    with bad_input_exits(DataError, CheckpointError, ValueError):
        run(OmegaConf.to_object(cfg))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
