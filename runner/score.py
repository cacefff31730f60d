"""``python -m runner.score sys=HYP ref=REF``: sacrebleu BLEU, chrF and TER of a system file (fairseq-score).

Both files hold detokenized text, one segment per line, aligned. Offline only: local files, no test-set downloads and
no sentencepiece-based tokenizers. With ``scoring.tokenize=auto`` the BLEU tokenizer follows the target language
(``target_lang``, or the reference file's suffix: ``test.ja`` -> ``ja-mecab``). Each metric prints on one line with its
sacrebleu signature.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, TextIO

import hydra
from omegaconf import DictConfig, OmegaConf

from runner.cli import bad_input_exits
from runner.config import CONF_DIR, ScoreConfig

log = logging.getLogger("runner.score")


def language_of(path: str) -> Optional[str]:
    """The language a file's suffix names (``test.ja`` -> ``ja``), if it looks like a language code."""
    suffix = Path(path).suffix.lstrip(".")
    return suffix if 2 <= len(suffix) <= 3 and suffix.isalpha() else None


def run(cfg: ScoreConfig, out: TextIO = sys.stdout) -> list:
    """Read, check alignment, score, print one line per metric; returns the MetricResults."""
    from runner.data.text import DataError, read_lines
    from runner.generation.scoring import bleu_tokenizer, score_corpus

    hyps, refs = read_lines(cfg.sys), read_lines(cfg.ref)
    if len(hyps) != len(refs):
        raise DataError(f"{cfg.sys} has {len(hyps)} lines but {cfg.ref} has {len(refs)} lines: they must align")
    lang = cfg.target_lang or language_of(cfg.ref)
    log.info(
        "scoring %d segments; target language %s, BLEU tokenizer %s",
        len(hyps),
        lang or "unknown",
        bleu_tokenizer(cfg.scoring.tokenize, lang),
    )
    results = score_corpus(hyps, refs, lang, cfg.scoring)
    for r in results:
        out.write(r.line() + "\n")
    out.flush()
    return results


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="score")
def main(cfg: DictConfig) -> None:
    """The Hydra entry point; bad input exits with status 1 and one clear message."""
    from runner.data.text import DataError
    from runner.generation.scoring import ScoringError

    with bad_input_exits(DataError, ScoringError):
        run(OmegaConf.to_object(cfg))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
