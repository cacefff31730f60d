"""``python -m runner.generate``: translate a split with a checkpoint, print fairseq's lines, score with sacrebleu.

Output (tab-separated, scores in base 2 as fairseq prints them): ``S-i`` source, ``T-i`` reference,
``H-i score pieces``, ``D-i score detokenized``, ``P-i`` per-token scores; then
``Translated N sentences (M tokens) in Xs (… sentences/s, … tokens/s)`` and one line per sacrebleu metric with its
signature. Every input line gets an output (count out = count in): nothing is dropped at batch boundaries, an
over-long source is truncated or skipped with a warning, an empty line is translated as an empty source.
With ``results_path``, ``generate-{split}.txt`` is appended and flushed batch by batch (a crash keeps what was
written), ``generate-{split}.hyp`` holds the best detokenized hypothesis per input line, in input order, and
``generate-{split}.json`` the summary.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TextIO

import hydra
from omegaconf import DictConfig, OmegaConf

from runner.cli import bad_input_exits
from runner.config import CONF_DIR, GenerateConfig

log = logging.getLogger("runner.generate")
LN2 = math.log(2)


@dataclass
class Example:
    """One input line: its raw text, reference, and source ids (None when skipped)."""

    index: int
    source: str
    reference: Optional[str]
    ids: Any  # LongTensor or None


@dataclass
class Output:
    """The printed block of one example and its best detokenized hypothesis."""

    index: int
    lines: list[str]
    best: str
    tokens: int


@dataclass
class GenerateResult:
    """What a generate run produced: outputs by input index, counts, timing and scores."""

    outputs: dict[int, Output] = field(default_factory=dict)
    sentences: int = 0
    tokens: int = 0
    seconds: float = 0.0
    scores: list[Any] = field(default_factory=list)
    references: list[Optional[str]] = field(default_factory=list)


def read_examples(loaded: Any, cfg: GenerateConfig) -> list[Example]:
    """Source (and, when present, reference) lines of ``cfg.gen_subset``, encoded, with the input policies."""
    from runner.data.text import read_lines
    from runner.generation.inputs import fit_source, warn_empty

    data = loaded.data_dir(cfg.data)
    src_path = data / f"{cfg.gen_subset}.{loaded.source_lang}"
    tgt_path = data / f"{cfg.gen_subset}.{loaded.target_lang}"
    sources = read_lines(src_path)
    references: list[Optional[str]] = [None] * len(sources)
    if tgt_path.is_file():
        refs = read_lines(tgt_path)
        if len(refs) != len(sources):
            from runner.data.text import DataError

            raise DataError(
                f"{src_path} has {len(sources)} lines but {tgt_path} has {len(refs)} lines: they must align"
            )
        references = list(refs)
    max_src = int(loaded.model.max_positions()[0])
    eos = loaded.dictionary.eos()
    examples = []
    for i, line in enumerate(sources):
        where = f"{src_path}, line {i + 1}"
        if loaded.source is not None:  # not text (a plug-in task's images, say): the task reads it
            examples.append(Example(i, line, references[i], loaded.source.read(line, data, where)))
            continue
        warn_empty(line, where)
        ids = fit_source(loaded.encode(line), max_src, cfg.long_inputs, where, eos)
        examples.append(Example(i, line, references[i], ids))
    return examples


def format_output(loaded: Any, ex: Example, hyps: list[Any]) -> Output:
    """fairseq's S/T/H/D/P lines for one example (scores in base 2)."""
    i = ex.index
    lines = [f"S-{i}\t{ex.source}"]
    if ex.reference is not None:
        lines.append(f"T-{i}\t{ex.reference}")
    best, ntok = "", 0
    if not hyps:
        lines += [f"H-{i}\t-inf\t", f"D-{i}\t-inf\t", f"P-{i}\t"]
    for rank, h in enumerate(hyps):
        pieces, text = loaded.decode(h.tokens)
        score = h.score / LN2
        pos = " ".join(f"{p / LN2:.4f}" for p in h.positional_scores.tolist())
        lines += [f"H-{i}\t{score:.4f}\t{pieces}", f"D-{i}\t{score:.4f}\t{text}", f"P-{i}\t{pos}"]
        if rank == 0:
            best, ntok = text, h.tokens.numel()
    return Output(i, lines, best, ntok)


def make_batches(examples: list[Example], cfg: GenerateConfig) -> list[list[Example]]:
    """Length-sorted batches under ``max_tokens``/``batch_size``, every example kept (the last batch included)."""
    import numpy as np

    from runner.data.batching import batch_by_size

    todo = [e for e in examples if e.ids is not None]
    sizes = np.array([len(e.ids) for e in todo], dtype=np.int64)
    order = np.argsort(-sizes, kind="stable")
    if not len(todo):
        return []
    batches = batch_by_size(order, sizes, cfg.max_tokens, cfg.batch_size)
    return [[todo[j] for j in b.tolist()] for b in batches]


def generate(loaded: Any, cfg: GenerateConfig, out: TextIO, results: Optional[TextIO] = None) -> GenerateResult:
    """Translate the split; print blocks as batches finish (or all in input order) and append them to ``results``."""
    import torch

    from runner.data.pair_dataset import collate_tokens
    from runner.generation.search import Hypothesis, SequenceGenerator

    d = loaded.dictionary
    generator = SequenceGenerator(loaded.model, cfg.generation, d.pad(), d.eos(), d.unk())
    examples = read_examples(loaded, cfg)
    result = GenerateResult(references=[e.reference for e in examples])
    start = time.perf_counter()

    def emit(outputs: list[Output]) -> None:
        for o in outputs:
            result.outputs[o.index] = o
            result.tokens += o.tokens
            if not cfg.input_order and not cfg.quiet:
                out.write("\n".join(o.lines) + "\n")
        if results is not None:
            results.write("".join("\n".join(o.lines) + "\n" for o in outputs))
            results.flush()
            os.fsync(results.fileno())

    emit([format_output(loaded, e, []) for e in examples if e.ids is None])
    for batch in make_batches(examples, cfg):
        lengths = {}  # a source that is not token ids (loaded.source) states its lengths
        if loaded.source is None:
            src = collate_tokens([e.ids for e in batch], d.pad(), left_pad=True).to(loaded.device)
        else:
            src = loaded.source.collate([e.ids for e in batch]).to(loaded.device)
            lengths["src_lengths"] = torch.tensor([len(e.ids) for e in batch], device=loaded.device)
        prefix = None
        if cfg.generation.prefix_size > 0:
            refs = [loaded.encode(e.reference or "")[: cfg.generation.prefix_size] for e in batch]
            prefix = collate_tokens(refs, d.pad(), left_pad=False)
        hyps: list[list[Hypothesis]] = generator.generate(src, prefix, **lengths)
        emit([format_output(loaded, e, h) for e, h in zip(batch, hyps)])
    if loaded.device.type == "cuda":
        torch.cuda.synchronize()
    result.seconds = time.perf_counter() - start
    result.sentences = len(result.outputs)
    if result.sentences != len(examples):  # the contract of this command; fail loudly if it is ever broken
        raise RuntimeError(f"generated {result.sentences} outputs for {len(examples)} inputs")
    if cfg.input_order and not cfg.quiet:
        for i in range(len(examples)):
            out.write("\n".join(result.outputs[i].lines) + "\n")
    return result


def summary_lines(result: GenerateResult, cfg: GenerateConfig) -> list[str]:
    """The closing lines: throughput, then one line per metric with its sacrebleu signature."""
    secs = max(result.seconds, 1e-9)
    lines = [
        f"Translated {result.sentences:,} sentences ({result.tokens:,} tokens) in {result.seconds:.1f}s "
        f"({result.sentences / secs:.2f} sentences/s, {result.tokens / secs:.2f} tokens/s)"
    ]
    lines += [f"Generate {cfg.gen_subset} with beam={cfg.generation.beam}: {m.line()}" for m in result.scores]
    return lines


def publish_results(loaded: Any, cfg: GenerateConfig, result: GenerateResult, results_dir: Optional[Path]) -> None:
    """The single exit point of generate's results: ``generate-{split}.json`` next to the hypotheses, and the hook
    where tracking logs them into the run that produced the checkpoint (``loaded.state``)."""
    record = {
        "checkpoint": str(loaded.path),
        "gen_subset": cfg.gen_subset,
        "sentences": result.sentences,
        "tokens": result.tokens,
        "seconds": round(result.seconds, 3),
        "sentences_per_second": round(result.sentences / max(result.seconds, 1e-9), 3),
        "generation": OmegaConf.to_container(OmegaConf.structured(cfg.generation)),
        "scores": {m.name: {"score": m.score, "text": m.text, "signature": m.signature} for m in result.scores},
    }
    if results_dir is not None:
        (results_dir / f"generate-{cfg.gen_subset}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False))


def run(cfg: GenerateConfig, out: TextIO = sys.stdout) -> GenerateResult:
    """Load the checkpoint, generate, score, print the summary and publish the results."""
    import torch

    from runner.generation.inputs import check_policy
    from runner.generation.loading import SEQ2SEQ, load_model
    from runner.generation.scoring import score_corpus

    check_policy(cfg.long_inputs)
    if cfg.common.threads > 0:
        torch.set_num_threads(cfg.common.threads)
    loaded = load_model(
        cfg.path, (SEQ2SEQ,), cfg.spm_model, cfg.common.cpu, cfg.common.bf16, "runner.generate", cfg.user_dir
    )
    results_dir = Path(cfg.results_path) if cfg.results_path else None
    results_file = None
    if results_dir is not None:
        results_dir.mkdir(parents=True, exist_ok=True)
        results_file = open(results_dir / f"generate-{cfg.gen_subset}.txt", "w", encoding="utf-8")
    try:
        result = generate(loaded, cfg, out, results_file)
    finally:
        if results_file is not None:
            results_file.close()
    ordered = [result.outputs[i] for i in range(result.sentences)]
    refs = [r for r in result.references if r is not None]
    if results_dir is not None:
        hyp_path = results_dir / f"generate-{cfg.gen_subset}.hyp"
        hyp_path.write_text("".join(o.best + "\n" for o in ordered), encoding="utf-8")
    if cfg.score and len(refs) == len(ordered):
        result.scores = score_corpus([o.best for o in ordered], refs, loaded.target_lang, cfg.scoring)
    for line in summary_lines(result, cfg):
        out.write(line + "\n")
    out.flush()
    publish_results(loaded, cfg, result, results_dir)
    return result


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="generate")
def main(cfg: DictConfig) -> None:
    """The Hydra entry point; bad input exits with status 1 and one clear message."""
    from runner.checkpoint import CheckpointError
    from runner.data.text import DataError
    from runner.generation.scoring import ScoringError
    from runner.plugins import PluginError

    with bad_input_exits(DataError, CheckpointError, ScoringError, PluginError, ValueError):
        run(OmegaConf.to_object(cfg))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
