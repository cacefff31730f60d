"""Dialog: the next turn of a conversation from its last turns, as NTT's Japanese dialog transformer is trained.

A source is up to ``context_turns`` turns, each ``[SPK1]``/``[SPK2]`` + utterance + ``[SEP]``, the newest user turn
last as ``[SPK2]utterance`` without a separator, capped at ``max_context_chars`` characters by dropping the oldest
turns (shared/notes/ntt-dialog-1p6b.md). The turn before the target is the user's (``[SPK2]``), the one before it the
system's (``[SPK1]``), alternating backwards. :func:`dialog_context` is the one place this string is built: the
training pairs here and ``runner.interactive``'s history both use it.

Inputs (``task.format``):

- ``chatterbot``: every ``*.yml`` in ``data`` (``conversations:`` = a list of conversations, each a list of turns);
  every turn after the first is a target. Conversations (numbered over the files in name order) are split
  deterministically: number ``i`` goes to ``valid`` when ``i % split_every == split_every - 2``, to ``test`` when
  ``i % split_every == split_every - 1``, else to ``train``.
- ``tsv``: ``{split}.tsv``, one ``context<TAB>response`` pair per line (JPersonaChat / JEmpatheticDialogues as their
  users prepare them for NTT's fine-tuning).
- ``src_dst``: ``{split}.src`` and ``{split}.dst``, aligned line by line.

In ``tsv``/``src_dst`` a context that already carries speaker tags is used as written; a plain context (no tag) is
one user turn and becomes ``[SPK2]context``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from runner.config import DialogConfig
from runner.data.prepare import Corpus
from runner.data.text import DataError, read_lines, read_parallel
from runner.tasks.translation import TranslationTask

log = logging.getLogger(__name__)
FORMATS = ("auto", "chatterbot", "tsv", "src_dst")
SOURCE, TARGET = "src", "dst"


def dialog_context(
    earlier: Sequence[tuple[str, str]],
    utterance: str,
    turns: int,
    max_chars: int,
    user_tag: str = "[SPK2]",
    separator: str = "[SEP]",
    drop: int = 0,
) -> str:
    """The model's source for the user's ``utterance`` after the ``earlier`` (tag, text) turns, oldest first.

    Keeps the last ``turns - 1`` earlier turns minus the ``drop`` oldest of them, then drops more of the oldest
    until they fit ``max_chars - len(utterance)`` characters.
    """
    window = list(earlier[-(turns - 1) :]) if turns > 1 else []
    parts = [f"{tag}{text}{separator}" for tag, text in window[drop:]]
    budget = max_chars - len(utterance)
    while parts and sum(len(p) for p in parts) > budget:
        parts.pop(0)
    return "".join(parts) + f"{user_tag}{utterance}"


def conversation_pairs(turns: Sequence[str], cfg: DialogConfig) -> list[tuple[str, str]]:
    """(context, response) for every turn after the first: the turn before the response is the user's."""
    pairs = []
    for k in range(1, len(turns)):
        earlier = [(cfg.user_tag if (k - 1 - j) % 2 == 0 else cfg.system_tag, turns[j]) for j in range(k - 1)]
        context = dialog_context(
            earlier, turns[k - 1], cfg.context_turns, cfg.max_context_chars, cfg.user_tag, cfg.separator
        )
        pairs.append((context, turns[k]))
    return pairs


def read_chatterbot(path: Path) -> list[list[str]]:
    """The conversations of a chatterbot YAML file, each turn as written (no YAML type guessing: ``yes`` stays
    ``yes``); bad YAML or a bad layout raises DataError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DataError(f"{path}{where}: invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise DataError(f"{path}: invalid YAML: {e}") from None

    def line(node: yaml.Node) -> str:
        return f"{path}, line {node.start_mark.line + 1}"

    if not isinstance(root, yaml.MappingNode):
        raise DataError(f"{path}: expected a mapping with a 'conversations' list at the top")
    convs = next((v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "conversations"), None)
    if convs is None:
        raise DataError(f"{path}: no 'conversations' key")
    if not isinstance(convs, yaml.SequenceNode):
        raise DataError(f"{line(convs)}: 'conversations' must be a list of conversations")
    out = []
    for conv in convs.value:
        if not isinstance(conv, yaml.SequenceNode):
            raise DataError(f"{line(conv)}: a conversation must be a list of turns")
        turns = []
        for turn in conv.value:
            if not isinstance(turn, yaml.ScalarNode) or not turn.value.strip():
                raise DataError(f"{line(turn)}: a turn must be a non-empty text")
            turns.append(" ".join(turn.value.split("\n")).strip())
        out.append(turns)
    return out


class DialogTask(TranslationTask):
    """Translation from context to response: the batching, model and criterion are the translation task's."""

    def __init__(self, **cfg: Any):
        super().__init__()
        self.cfg = DialogConfig(**cfg)  # type: ignore[assignment]
        if self.cfg.format not in FORMATS:
            raise DataError(f"task.format must be one of {list(FORMATS)}, got {self.cfg.format!r}")
        if self.cfg.context_turns < 1:
            raise DataError(f"task.context_turns must be >= 1, got {self.cfg.context_turns}")
        if self.cfg.split_every < 3:
            raise DataError(f"task.split_every must be >= 3 (train, valid, test), got {self.cfg.split_every}")
        # what dataset() and batches() of the translation task name the two sides
        self.cfg.source_lang, self.cfg.target_lang = SOURCE, TARGET  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------------------------------ data
    @property
    def data_format(self) -> str:
        """The configured format, or the one the files in ``data`` show."""
        fmt, data = self.cfg.format, Path(self.cfg.data)
        if fmt != "auto":
            return fmt
        first = self.cfg.splits[0]
        if (data / f"{first}.tsv").is_file():
            return "tsv"
        if (data / f"{first}.{SOURCE}").is_file():
            return "src_dst"
        if any(data.glob("*.yml")):
            return "chatterbot"
        raise DataError(
            f"{data}: no dialog data found: expected {first}.tsv, {first}.{SOURCE}/{first}.{TARGET} or *.yml files"
        )

    def yaml_files(self) -> list[Path]:
        files = sorted(Path(self.cfg.data).glob("*.yml"))
        if not files:
            raise DataError(f"{self.cfg.data}: no *.yml files (task.format=chatterbot)")
        return files

    def text_path(self, split: str, lang: str) -> Path:
        fmt, data = self.data_format, Path(self.cfg.data)
        if fmt == "tsv":
            return data / f"{split}.tsv"
        if fmt == "src_dst":
            return data / f"{split}.{lang}"
        return data  # chatterbot: pairs of every *.yml file

    def split_of(self, index: int) -> str:
        """The split of chatterbot conversation number ``index``."""
        n = self.cfg.split_every
        return {n - 2: "valid", n - 1: "test"}.get(index % n, "train")

    def read_split(self, split: str) -> tuple[list[str], list[str]]:
        """Contexts and responses of ``split``."""
        fmt = self.data_format
        if fmt == "chatterbot":
            if split not in ("train", "valid", "test"):
                raise DataError(f"task.format=chatterbot splits conversations into train/valid/test, not {split!r}")
            convs = [conv for path in self.yaml_files() for conv in read_chatterbot(path)]
            pairs = [
                p
                for i, conv in enumerate(convs)
                if self.split_of(i) == split
                for p in conversation_pairs(conv, self.cfg)
            ]
            if not pairs:
                raise DataError(f"{self.cfg.data}: split {split} has no context/response pairs")
            contexts, responses = [c for c, _ in pairs], [r for _, r in pairs]
        elif fmt == "tsv":
            path = self.text_path(split, SOURCE)
            contexts, responses = [], []
            for lineno, line in enumerate(read_lines(path), start=1):
                fields = line.split("\t")
                if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
                    raise DataError(
                        f"{path}, line {lineno}: expected 'context<TAB>response' with both non-empty, "
                        f"found {len(fields)} tab-separated field(s)"
                    )
                contexts.append(fields[0])
                responses.append(fields[1])
        else:
            contexts, responses = read_parallel(self.text_path(split, SOURCE), self.text_path(split, TARGET))
        return [self.tagged(c) for c in contexts], responses

    def tagged(self, context: str) -> str:
        """A prepared context as written when it carries speaker tags, else one user turn."""
        c = self.cfg
        return context if c.user_tag in context or c.system_tag in context else f"{c.user_tag}{context}"

    def corpus(self) -> Corpus:
        c, fmt = self.cfg, self.data_format
        if fmt == "chatterbot":
            inputs = self.yaml_files()
        elif fmt == "tsv":
            inputs = [self.text_path(s, SOURCE) for s in c.splits]
        else:
            inputs = [self.text_path(s, side) for s in c.splits for side in (SOURCE, TARGET)]
        settings = {
            "task": "dialog",
            "format": fmt,
            **{k: getattr(c, k) for k in ("split_every", "context_turns", "max_context_chars")},
            **{k: getattr(c, k) for k in ("user_tag", "system_tag", "separator")},
        }
        return Corpus(
            inputs=inputs,
            splits=c.splits,
            sides=(SOURCE, TARGET),
            read_split=self.read_split,
            stem=lambda split, side: f"{split}.{SOURCE}-{TARGET}.{side}",
            settings=settings,
        )

    def user_defined_symbols(self) -> Sequence[str]:
        return list(self.cfg.user_defined_symbols)
