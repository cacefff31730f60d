"""sacrebleu BLEU, chrF and TER on detokenized text, offline: local files only, no test-set downloads, no spm.

The BLEU tokenizer follows the target language when ``tokenize=auto``: ``ja-mecab`` for Japanese (sacrebleu[ja]),
``zh`` for Chinese, ``ko-mecab`` for Korean, ``13a`` otherwise. Every result carries sacrebleu's signature, the
string that makes a score reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from runner.config import ScoringConfig

OFFLINE_TOKENIZERS = ("13a", "intl", "zh", "ja-mecab", "ko-mecab", "char", "none")
METRICS = ("bleu", "chrf", "ter")
_AUTO = {"ja": "ja-mecab", "zh": "zh", "ko": "ko-mecab"}


class ScoringError(ValueError):
    """Inputs or settings that cannot be scored; the message names the file or option."""


@dataclass
class MetricResult:
    """One corpus-level score with its sacrebleu signature."""

    name: str  # bleu | chrf | ter
    score: float
    text: str  # sacrebleu's summary, e.g. "BLEU = 23.1 55.0/29.1/17.2/10.8 (BP = ...)"
    signature: str

    def line(self) -> str:
        return f"{self.text} [{self.signature}]"


def bleu_tokenizer(tokenize: str, target_lang: Optional[str]) -> str:
    """The sacrebleu tokenizer to use: ``tokenize`` itself, or the target language's when it is ``auto``."""
    if tokenize == "auto":
        return _AUTO.get((target_lang or "").lower().split("_")[0].split("-")[0], "13a")
    if tokenize not in OFFLINE_TOKENIZERS:
        raise ScoringError(
            f"scoring.tokenize={tokenize!r} is not available offline; choose auto or one of {list(OFFLINE_TOKENIZERS)}"
        )
    return tokenize


def score_corpus(
    hypotheses: Sequence[str], references: Sequence[str], target_lang: Optional[str], cfg: ScoringConfig
) -> list[MetricResult]:
    """Score aligned hypothesis/reference lines with the metrics of ``cfg``."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    if len(hypotheses) != len(references):
        raise ScoringError(f"{len(hypotheses)} hypotheses but {len(references)} references: they must align")
    unknown = [m for m in cfg.metrics if m not in METRICS]
    if unknown:
        raise ScoringError(f"scoring.metrics: unknown metric(s) {unknown}; choose from {list(METRICS)}")
    tok = bleu_tokenizer(cfg.tokenize, target_lang)
    asian = tok in ("ja-mecab", "zh", "ko-mecab")
    refs = [list(references)]
    results = []
    for name in cfg.metrics:
        if name == "bleu":
            metric = BLEU(tokenize=tok, lowercase=cfg.lowercase)
        elif name == "chrf":
            metric = CHRF(lowercase=cfg.lowercase)
        else:
            metric = TER(asian_support=asian)  # sacrebleu's default: case-insensitive
        try:
            result = metric.corpus_score(list(hypotheses), refs)
        except (SystemExit, ImportError, RuntimeError) as e:  # sacrebleu exits when an optional tokenizer is missing
            raise ScoringError(f"sacrebleu {name} with tokenize={tok} failed: {e}") from None
        results.append(MetricResult(name, float(result.score), str(result), str(metric.get_signature())))
    return results
