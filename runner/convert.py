"""``python -m runner.convert path=FAIRSEQ.pt output=OURS.pt``: a fairseq transformer checkpoint as one of ours.

The result holds the converted weights, a composed-style config (``model`` with the checkpoint's architecture,
``task`` a translation task with its languages) and ``task_state`` (the dictionary's symbols and the sentencepiece
model), so ``runner.generate``, ``runner.interactive`` and ``runner.export`` read it like a trained checkpoint of ours.
Our tasks use one joined dictionary: separate source and target dictionaries must be identical.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from runner.cli import bad_input_exits
from runner.config import CONF_DIR, ConvertConfig

log = logging.getLogger("runner.convert")


def converted_state(cfg: ConvertConfig) -> dict[str, Any]:
    """Our checkpoint dict for the fairseq checkpoint ``cfg.path`` (read safely, checked, renamed)."""
    from runner import checkpoint as ckpt
    from runner import fairseq_import as fi

    fc = fi.load(cfg.path, cfg.dict_path)
    assert fc.src_dict is not None and fc.tgt_dict is not None
    if fc.src_dict.symbols != fc.tgt_dict.symbols:
        raise fi.FairseqImportError(
            f"{cfg.path}: its source and target dictionaries differ ({len(fc.src_dict)} and {len(fc.tgt_dict)} "
            "symbols); runner's translation task needs one joined dictionary"
        )
    source_lang = cfg.source_lang or fc.source_lang
    target_lang = cfg.target_lang or fc.target_lang
    if not source_lang or not target_lang:
        raise fi.FairseqImportError(f"{cfg.path}: records no source/target language; pass source_lang= target_lang=")
    spm_model = str(Path(cfg.spm_model).resolve()) if cfg.spm_model else None
    if spm_model is None:
        log.warning("no spm_model given: generate/interactive will need spm_model=PATH")
    model_cfg = asdict(fc.config)
    task_cfg = {
        "_target_": "runner.tasks.translation.TranslationTask",
        "data": cfg.data,
        "source_lang": source_lang,
        "target_lang": target_lang,
        "spm_model": spm_model,
        "dict_path": None,
    }
    return {
        "version": ckpt.FORMAT_VERSION,
        "cfg": {"task": task_cfg, "model": model_cfg, "converted_from": {"path": str(cfg.path), "arch": fc.arch}},
        "model": fc.state_dict,
        "task_state": {"dictionary": list(fc.src_dict.symbols), "spm_model": spm_model or ""},
    }


def run(cfg: ConvertConfig) -> Path:
    """Convert and write atomically; returns the written path."""
    from runner import checkpoint as ckpt

    state = converted_state(cfg)
    out = Path(cfg.output)
    ckpt.save_atomic(state, [out])
    model = state["cfg"]["model"]
    log.info(
        "wrote %s: %d+%d layers, dim %d, %d symbols (from %s)",
        out,
        model["encoder_layers"],
        model["decoder_layers"],
        model["encoder_embed_dim"],
        len(state["task_state"]["dictionary"]),
        cfg.path,
    )
    return out


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="convert")
def main(cfg: DictConfig) -> None:
    """The Hydra entry point; a checkpoint that cannot be converted exits with status 1 and one clear message."""
    from runner.dictionary import DictionaryFormatError
    from runner.fairseq_import import FairseqImportError

    with bad_input_exits(FairseqImportError, DictionaryFormatError, FileNotFoundError):
        run(OmegaConf.to_object(cfg))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
