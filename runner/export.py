"""``python -m runner.export path=CHECKPOINT output=FOLDER``: a trained model as a folder that loads on its own.

The folder holds ``model.safetensors`` (tensors only, no pickle; a tied weight is stored once and its other names
are listed in the file's metadata), ``config.yaml`` (the model and task config), ``dict.txt`` (fairseq's format) and
``sentencepiece.model``. :func:`read_exported` turns the folder back into our checkpoint layout, so
``runner.generate``/``runner.interactive`` take ``path=FOLDER`` like a checkpoint file.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Optional

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from runner.cli import bad_input_exits
from runner.config import CONF_DIR, ExportConfig

log = logging.getLogger("runner.export")

WEIGHTS, CONFIG, DICTIONARY, SPM = "model.safetensors", "config.yaml", "dict.txt", "sentencepiece.model"
TIED_KEY = "runner.tied"  # metadata: {alias: stored name} for parameters that share one tensor


def split_tied(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Unique tensors to store, and ``alias -> stored name`` for the names that share storage with one of them."""
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, tuple[int, ...], tuple[int, ...]], str] = {}
    for name, tensor in sd.items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        stored[name] = tensor.contiguous()
    return stored, aliases


def write_dictionary(symbols: list[str], path: Path) -> None:
    """dict.txt without the 4 specials; a repeated symbol carries fairseq's overwrite flag so ids stay put."""
    seen: set[str] = set()
    lines = []
    for sym in symbols[4:]:
        lines.append(f"{sym} 1 #fairseq:overwrite\n" if sym in seen else f"{sym} 1\n")
        seen.add(sym)
    path.write_text("".join(lines), encoding="utf-8")


def export(path: str | Path, output: str | Path, spm_model: Optional[str] = None) -> Path:
    """Write the folder for checkpoint ``path``; returns it."""
    from safetensors.torch import save_file

    from runner import checkpoint as ckpt

    path, out = Path(path), Path(output)
    state = ckpt.load(path)
    if "cfg" not in state or "task_state" not in state:
        raise ckpt.CheckpointError(f"{path}: has no 'cfg'/'task_state': not written by `python -m runner`")
    spm = Path(spm_model or state["task_state"].get("spm_model") or "")
    if not spm.is_file():
        raise ckpt.CheckpointError(f"{path}: its sentencepiece model {spm} not found; pass spm_model=PATH")
    out.mkdir(parents=True, exist_ok=True)
    stored, aliases = split_tied(state["model"])
    save_file(stored, str(out / WEIGHTS), metadata={TIED_KEY: json.dumps(aliases), "format": "pt"})
    cfg = state["cfg"]
    config = {"model": cfg["model"], "task": cfg["task"], "exported_from": str(path)}
    (out / CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(config)), encoding="utf-8")
    write_dictionary(list(state["task_state"]["dictionary"]), out / DICTIONARY)
    shutil.copyfile(spm, out / SPM)
    log.info("exported %s to %s (%d tensors, %d tied names)", path, out, len(stored), len(aliases))
    return out


def read_exported(folder: str | Path) -> dict[str, Any]:
    """An exported folder as a checkpoint dict of ours (cfg, model, task_state), read from the folder alone."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from runner import checkpoint as ckpt
    from runner.dictionary import Dictionary

    folder = Path(folder)
    for name in (WEIGHTS, CONFIG, DICTIONARY, SPM):
        if not (folder / name).is_file():
            raise ckpt.CheckpointError(f"{folder}: not an exported model folder ({name} missing)")
    try:
        sd = load_file(str(folder / WEIGHTS))
        with safe_open(str(folder / WEIGHTS), framework="pt") as f:
            aliases = json.loads((f.metadata() or {}).get(TIED_KEY, "{}"))
    except Exception as e:
        raise ckpt.CheckpointError(f"{folder / WEIGHTS}: cannot be read ({type(e).__name__}: {e})") from None
    for alias, name in aliases.items():
        sd[alias] = sd[name]
    config = OmegaConf.to_container(OmegaConf.load(folder / CONFIG))
    assert isinstance(config, dict)
    dictionary = Dictionary.load(folder / DICTIONARY)
    return {
        "version": ckpt.FORMAT_VERSION,
        "cfg": {"model": config["model"], "task": config["task"]},
        "model": sd,
        "task_state": {"dictionary": list(dictionary.symbols), "spm_model": str(folder / SPM)},
    }


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    """The Hydra entry point; an unreadable checkpoint exits with status 1 and one clear message."""
    from runner.checkpoint import CheckpointError

    c: ExportConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    with bad_input_exits(CheckpointError):
        export(c.path, c.output, c.spm_model)


if __name__ == "__main__":
    main()
