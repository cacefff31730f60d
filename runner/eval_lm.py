"""``python -m runner.eval_lm``: loss and perplexity of a split under a checkpoint (fairseq-eval-lm / validate).

Losses are reported as fairseq does: in base 2 (bits per token), with ``Perplexity = 2 ** loss``.

- A language model scores the split's token stream (``</s>`` + every line's ids) in ``tokens_per_sample`` blocks;
  ``context_window`` gives each block up to that many preceding tokens as unscored context, as fairseq's
  ``--context-window`` does, so that tokens at the start of a block are not scored blind.
- A translation checkpoint scores the references of the split given their sources (teacher forcing), which is the
  perplexity its validation reports.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import hydra
from omegaconf import DictConfig, OmegaConf

from runner.cli import bad_input_exits
from runner.config import CONF_DIR, EvalLMConfig

log = logging.getLogger("runner.eval_lm")


@dataclass
class EvalResult:
    """Summed natural-log loss over ``tokens`` scored tokens."""

    nll: float
    tokens: int
    seconds: float

    @property
    def loss_base2(self) -> float:
        return self.nll / max(self.tokens, 1) / math.log(2)

    @property
    def perplexity(self) -> float:
        try:
            return float(2**self.loss_base2)
        except OverflowError:
            return float("inf")


def _batches(sizes: Any, cfg: EvalLMConfig) -> list[Any]:
    import numpy as np

    from runner.data.batching import batch_by_size

    order = np.argsort(sizes, kind="stable")
    return batch_by_size(order, sizes, cfg.max_tokens, cfg.batch_size) if len(order) else []


def eval_language_model(loaded: Any, cfg: EvalLMConfig) -> EvalResult:
    """Block-wise next-token loss of the split's stream, every token scored exactly once."""
    import numpy as np
    import torch

    from runner.data.text import DataError, read_lines
    from runner.tasks.language_modeling import BlockDataset, block_spans, ids_stream

    task = loaded.cfg.task
    suffix = task.get("lang") or "txt"
    path = loaded.data_dir(cfg.data) / f"{cfg.gen_subset}.{suffix}"
    ids = [loaded.encode(line).numpy() for line in read_lines(path)]
    block = cfg.tokens_per_sample or int(task.tokens_per_sample)
    spans = block_spans(np.array([len(x) for x in ids], dtype=np.int64), block, task.get("sample_break_mode", "none"))
    eos, pad = loaded.dictionary.eos(), loaded.dictionary.pad()
    ds = BlockDataset(ids_stream(np.concatenate(ids), eos), spans, pad, cfg.context_window)
    limit = int(loaded.model.max_positions()[0])
    if len(ds) and int(ds.sizes.max()) > limit:
        raise DataError(
            f"tokens_per_sample ({block}) + context_window ({cfg.context_window}) = {int(ds.sizes.max())} tokens "
            f"exceed the model's {limit} positions"
        )
    nll, ntok = 0.0, 0
    start = time.perf_counter()
    with torch.inference_mode():
        for idx in _batches(ds.sizes, cfg):
            batch = ds.collate(idx)
            logits = loaded.model(batch["net_input"]["src_tokens"].to(loaded.device))
            nll_sum, n = _nll(loaded.model, logits, batch["target"].to(loaded.device), pad)
            nll, ntok = nll + nll_sum, ntok + n
    return EvalResult(nll, ntok, time.perf_counter() - start)


def eval_translation(loaded: Any, cfg: EvalLMConfig) -> EvalResult:
    """Teacher-forced loss of the split's references given their sources."""
    import numpy as np
    import torch

    from runner.data.pair_dataset import collate_tokens
    from runner.data.text import read_parallel
    from runner.generation.inputs import fit_source

    data = loaded.data_dir(cfg.data)
    src_path = data / f"{cfg.gen_subset}.{loaded.source_lang}"
    tgt_path = data / f"{cfg.gen_subset}.{loaded.target_lang}"
    sources, targets = read_parallel(src_path, tgt_path)
    max_src, max_tgt = (int(x) for x in loaded.model.max_positions())
    eos, pad = loaded.dictionary.eos(), loaded.dictionary.pad()
    pairs = []
    for i, (s, t) in enumerate(zip(sources, targets)):
        src = fit_source(loaded.encode(s), max_src, "truncate", f"{src_path}, line {i + 1}", eos)
        tgt = fit_source(loaded.encode(t), max_tgt, "truncate", f"{tgt_path}, line {i + 1}", eos)
        pairs.append((src, tgt))
    sizes = np.array([max(len(s), len(t)) for s, t in pairs], dtype=np.int64)
    nll, ntok = 0.0, 0
    start = time.perf_counter()
    with torch.inference_mode():
        for idx in _batches(sizes, cfg):
            src = collate_tokens([pairs[i][0] for i in idx], pad, left_pad=True).to(loaded.device)
            tgt = collate_tokens([pairs[i][1] for i in idx], pad, left_pad=False).to(loaded.device)
            prev = collate_tokens([pairs[i][1] for i in idx], pad, left_pad=False, move_eos_to_beginning=True)
            logits = loaded.model(src, src.ne(pad).sum(1), prev.to(loaded.device))
            nll_sum, n = _nll(loaded.model, logits, tgt, pad)
            nll, ntok = nll + nll_sum, ntok + n
    return EvalResult(nll, ntok, time.perf_counter() - start)


def _nll(model: Any, logits: Any, target: Any, pad: int) -> tuple[float, int]:
    lprobs = model.get_normalized_probs(logits, log_probs=True)
    mask = target.ne(pad)
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return float(nll.masked_fill(~mask, 0.0).sum()), int(mask.sum())


def run(cfg: EvalLMConfig, out: TextIO = sys.stdout) -> EvalResult:
    """Load, evaluate and print fairseq's two result lines."""
    import torch

    from runner.generation.loading import LANGUAGE_MODEL, load_model

    if cfg.context_window < 0:
        raise ValueError(f"context_window must be >= 0, got {cfg.context_window}")
    if cfg.common.threads > 0:
        torch.set_num_threads(cfg.common.threads)
    loaded = load_model(
        cfg.path, spm_model=cfg.spm_model, cpu=cfg.common.cpu, bf16=cfg.common.bf16, purpose="runner.eval_lm"
    )
    if loaded.kind == LANGUAGE_MODEL:
        result = eval_language_model(loaded, cfg)
        what = f"{cfg.gen_subset} ({result.tokens:,} tokens"
        what += f", context window {cfg.context_window})" if cfg.context_window else ")"
    else:
        if cfg.context_window:
            raise ValueError(
                "context_window applies to language models; a translation checkpoint scores "
                "each reference given its source"
            )
        result = eval_translation(loaded, cfg)
        what = f"references of {cfg.gen_subset}.{loaded.target_lang} given {cfg.gen_subset}.{loaded.source_lang}"
    secs = max(result.seconds, 1e-9)
    out.write(
        f"Evaluated {result.tokens:,} tokens in {result.seconds:.1f}s ({result.tokens / secs:.2f} tokens/s): {what}\n"
    )
    out.write(f"Loss (base 2): {result.loss_base2:.4f}, Perplexity: {result.perplexity:.2f}\n")
    out.flush()
    return result


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval_lm")
def main(cfg: DictConfig) -> None:
    """The Hydra entry point; bad input exits with status 1 and one clear message."""
    from runner.checkpoint import CheckpointError
    from runner.data.text import DataError

    with bad_input_exits(DataError, CheckpointError, ValueError):
        run(OmegaConf.to_object(cfg))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
