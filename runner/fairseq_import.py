"""fairseq transformer checkpoints at the edge: read one safely, rebuild its architecture, rename its weights.

The model code never knows where weights came from: this module turns a fairseq ``checkpoint*.pt`` (0.10 layout with
an ``args`` Namespace, or 1.0+ with ``cfg["model"]`` as a Namespace or a flat/nested dict) into a
:class:`TransformerConfig`, a state_dict with our parameter names, and its dictionaries. Everything is read from the
checkpoint itself; what cannot be read is an error naming the field, key or file, never a silent guess.

Unpickling is restricted (``torch.load(weights_only=True)``) with an explicit allow-list of what fairseq files
contain besides tensors and plain containers:

- ``argparse.Namespace``: ``args`` (0.10) and ``cfg["model"]`` (1.0+ models registered the argparse way).
- numpy scalars (``numpy.core.multiarray.scalar`` and its numpy 2 name, ``numpy.dtype`` and the numeric dtype
  classes): ``extra_state["val_loss"]``/``best`` and meter values are numpy floats in many files. A scalar is rebuilt
  from a dtype and raw bytes; no code runs.
- Deliberately NOT allowed: numpy arrays (``_reconstruct``) and OmegaConf containers. fairseq saves ``cfg`` as plain
  containers (``OmegaConf.to_container``); unpickling a ``DictConfig`` would run OmegaConf's ``__setstate__`` over
  arbitrary node classes. A file that needs them is refused with the global named, like any other.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from runner.config import TransformerConfig
from runner.dictionary import Dictionary

log = logging.getLogger(__name__)


class FairseqImportError(RuntimeError):
    """A fairseq checkpoint that cannot be read safely or does not describe a model we can build; names the file."""


# ------------------------------------------------------------------------------------------------- safe reading
def _numpy_globals() -> list[Any]:
    """numpy scalar reconstruction under both its numpy 1 and numpy 2 module names, with the numeric dtypes."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    allowed: list[Any] = [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
    ]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
            if hasattr(dtypes, name):
                allowed.append(getattr(dtypes, name))
    return allowed


SAFE_GLOBALS: list[Any] = [argparse.Namespace, *_numpy_globals()]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Unpickle a fairseq (or our) checkpoint with only :data:`SAFE_GLOBALS` beyond tensors and containers."""
    path = Path(path)
    if not path.is_file():
        raise FairseqImportError(f"{path}: checkpoint not found")
    is_zip = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            # mmap: a 1.6B checkpoint is paged in as its tensors are copied, not read into memory twice
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        raise FairseqImportError(_refusal(path, e, is_zip)) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise FairseqImportError(
            f"{path}: truncated or corrupt checkpoint ({path.stat().st_size} bytes; {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise FairseqImportError(f"{path}: not a model checkpoint (no 'model' entry)")
    return state


def _refusal(path: Path, error: Exception, is_zip: bool) -> str:
    """The refusal message for a pickle that asks for something outside the allow-list."""
    offending: list[str] = []
    if is_zip:
        try:
            offending = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path)]
        except Exception:  # noqa: BLE001 - only used to name the globals; the regex below covers the rest
            offending = []
    if not offending:
        offending = re.findall(r"GLOBAL ([\w.]+)", str(error)) or [str(error).splitlines()[0]]
    return (
        f"{path}: refused to unpickle: it asks for {', '.join(sorted(set(offending)))}, which is not on the "
        "allow-list of what fairseq checkpoints contain (argparse.Namespace, numpy scalars). Loading it could run "
        "code from the file; it is not loaded."
    )


def is_fairseq_state(state: Mapping[str, Any]) -> bool:
    """A fairseq checkpoint has ``args`` or ``cfg`` with ``optimizer_history``/``extra_state``; ours has ``trainer``."""
    if "trainer" in state and "task_state" in state:
        return False
    return "args" in state or "optimizer_history" in state or "extra_state" in state


# ------------------------------------------------------------------------------------------------ architecture
TRANSFORMER_ARCHS = {
    "transformer",
    "transformer_tiny",
    "transformer_iwslt_de_en",
    "transformer_wmt_en_de",
    "transformer_vaswani_wmt_en_de_big",
    "transformer_vaswani_wmt_en_fr_big",
    "transformer_wmt_en_de_big",
    "transformer_wmt_en_de_big_t2t",
}
# Options that change the computation in ways our model does not implement, with the value that means "off".
UNSUPPORTED_OPTIONS: dict[str, Any] = {
    "layernorm_embedding": False,
    "adaptive_input": False,
    "adaptive_softmax_cutoff": None,
    "no_token_positional_embeddings": False,
    "cross_self_attention": False,
    "tie_adaptive_weights": False,
    "no_decoder_final_norm": False,
    "encoder_layers_to_keep": None,
    "decoder_layers_to_keep": None,
    "scale_attn": False,
    "scale_fc": False,
    "scale_heads": False,
    "scale_resids": False,
}
REQUIRED = (
    "encoder_embed_dim",
    "encoder_ffn_embed_dim",
    "encoder_layers",
    "encoder_attention_heads",
    "decoder_layers",
    "decoder_attention_heads",
)
# fairseq's base_architecture defaults, used only for options older checkpoints predate (each use is logged).
FAIRSEQ_DEFAULTS: dict[str, Any] = {
    "activation_fn": "relu",
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "no_scale_embedding": False,
    "max_source_positions": 1024,
    "max_target_positions": 1024,
}


def _as_dict(node: Any) -> dict[str, Any]:
    """A Namespace, mapping or OmegaConf node as a plain dict."""
    if node is None:
        return {}
    if isinstance(node, argparse.Namespace):
        return dict(vars(node))
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(node):
            return dict(OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(node, Mapping):
        return dict(node)
    raise TypeError(f"expected a Namespace or a mapping, got {type(node).__name__}")


def model_args(state: Mapping[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model options (flat, fairseq's argparse names) and the task options of a checkpoint, 0.10 or 1.0+."""
    cfg = state.get("cfg")
    if cfg is not None and _as_dict(cfg).get("model") is not None:
        cfg = _as_dict(cfg)
        model = _as_dict(cfg["model"])
        task = _as_dict(cfg.get("task"))
    elif state.get("args") is not None:
        model = _as_dict(state["args"])
        task = model
    else:
        raise FairseqImportError(f"{path}: neither 'args' nor 'cfg[\"model\"]' holds the model's configuration")
    flat: dict[str, Any] = {}
    for key, value in model.items():
        if key in ("encoder", "decoder") and isinstance(value, Mapping):  # 1.0 dataclass: encoder.embed_dim, ...
            for sub, v in value.items():
                flat[f"{key}_{sub}"] = v
        else:
            flat[key] = value
    if "arch" not in flat and "_name" in flat:
        flat["arch"] = flat["_name"]
    return flat, task


def _embedding_tied(a: Optional[Tensor], b: Optional[Tensor]) -> bool:
    """Two stored embeddings are one tied parameter: same storage or equal values."""
    if a is None or b is None or a.shape != b.shape:
        return False
    if a.data_ptr() == b.data_ptr():
        return True
    return bool(torch.equal(a, b))


def architecture(args: Mapping[str, Any], sd: Mapping[str, Tensor], path: Path) -> TransformerConfig:
    """Our TransformerConfig from the checkpoint's options, checked against what its (renamed) weights show."""
    arch = args.get("arch")
    if arch not in TRANSFORMER_ARCHS:
        raise FairseqImportError(
            f"{path}: fairseq arch {arch!r} is not an encoder-decoder transformer this loader supports "
            f"(supported: {', '.join(sorted(TRANSFORMER_ARCHS))})"
        )
    missing = [k for k in REQUIRED if args.get(k) is None]
    if missing:
        raise FairseqImportError(f"{path}: the checkpoint's model options lack {', '.join(missing)}")
    for key, off in UNSUPPORTED_OPTIONS.items():
        value = args.get(key, off)
        if value not in (off, None, False, 0, "", []):
            raise FairseqImportError(f"{path}: model option {key}={value!r} is not supported by runner's transformer")
    decoder_dim = args.get("decoder_embed_dim", args["encoder_embed_dim"])
    for key in ("decoder_output_dim", "decoder_input_dim"):
        if args.get(key) not in (None, decoder_dim):
            raise FairseqImportError(
                f"{path}: {key}={args[key]} differs from decoder_embed_dim={decoder_dim} (an output projection "
                "between them is not supported)"
            )

    activation = args.get("activation_fn", "relu")
    if activation not in ("relu", "gelu"):
        raise FairseqImportError(f"{path}: activation_fn={activation!r} is not supported (relu, gelu)")
    values: dict[str, Any] = {}
    for key, default in FAIRSEQ_DEFAULTS.items():
        value = args.get(key)
        if key == "activation_dropout" and value is None:
            value = args.get("relu_dropout")  # its name before fairseq 0.7
        if value is None:
            log.warning("%s: model option %s not in the checkpoint; using fairseq's default %r", path, key, default)
            value = default
        values[key] = value

    learned = {side: f"{side}.embed_positions.weight" in sd for side in ("encoder", "decoder")}
    norm_before = {side: f"{side}.layer_norm.weight" in sd for side in ("encoder", "decoder")}
    for side in ("encoder", "decoder"):
        for option, shown in (("learned_pos", learned[side]), ("normalize_before", norm_before[side])):
            stated = args.get(f"{side}_{option}")
            if stated is None:
                log.warning("%s: %s_%s not in the checkpoint; the weights show %s", path, side, option, shown)
            elif bool(stated) != shown:
                what = "embed_positions.weight" if option == "learned_pos" else "layer_norm.weight"
                raise FairseqImportError(
                    f"{path}: {side}_{option}={stated} but {side}.{what} is {'present' if shown else 'missing'}"
                )
        if learned[side]:
            rows = sd[f"{side}.embed_positions.weight"].shape[0]
            key = "max_source_positions" if side == "encoder" else "max_target_positions"
            pad = 1
            if args.get(key) is not None and rows != args[key] + pad + 1:
                raise FairseqImportError(
                    f"{path}: {side}.embed_positions.weight has {rows} rows but {key}={args[key]} needs "
                    f"{args[key] + pad + 1} (max positions + padding_idx + 1)"
                )
            values[key] = rows - pad - 1

    enc_emb, dec_emb = sd.get("encoder.embed_tokens.weight"), sd.get("decoder.embed_tokens.weight")
    out_proj = sd.get("decoder.output_projection.weight")
    share_all = _sharing(args, "share_all_embeddings", _embedding_tied(enc_emb, dec_emb), path)
    if share_all and enc_emb is not None and dec_emb is not None and not _embedding_tied(enc_emb, dec_emb):
        raise FairseqImportError(
            f"{path}: share_all_embeddings=True but encoder.embed_tokens.weight and decoder.embed_tokens.weight differ"
        )
    share_out = _sharing(
        args, "share_decoder_input_output_embed", out_proj is None or _embedding_tied(dec_emb, out_proj), path
    )
    if (share_out or share_all) and out_proj is not None and not _embedding_tied(dec_emb, out_proj):
        raise FairseqImportError(
            f"{path}: embeddings are shared but decoder.output_projection.weight differs from "
            "decoder.embed_tokens.weight"
        )

    return TransformerConfig(
        encoder_embed_dim=int(args["encoder_embed_dim"]),
        encoder_ffn_embed_dim=int(args["encoder_ffn_embed_dim"]),
        encoder_layers=int(args["encoder_layers"]),
        encoder_attention_heads=int(args["encoder_attention_heads"]),
        encoder_normalize_before=norm_before["encoder"],
        encoder_learned_pos=learned["encoder"],
        decoder_embed_dim=int(decoder_dim),
        decoder_ffn_embed_dim=int(args.get("decoder_ffn_embed_dim") or args["encoder_ffn_embed_dim"]),
        decoder_layers=int(args["decoder_layers"]),
        decoder_attention_heads=int(args["decoder_attention_heads"]),
        decoder_normalize_before=norm_before["decoder"],
        decoder_learned_pos=learned["decoder"],
        activation_fn=str(values["activation_fn"]),
        dropout=float(values["dropout"]),
        attention_dropout=float(values["attention_dropout"]),
        activation_dropout=float(values["activation_dropout"]),
        share_decoder_input_output_embed=bool(share_out),
        share_all_embeddings=bool(share_all),
        no_scale_embedding=bool(values["no_scale_embedding"]),
        max_source_positions=int(values["max_source_positions"]),
        max_target_positions=int(values["max_target_positions"]),
    )


def _sharing(args: Mapping[str, Any], key: str, tied_in_weights: bool, path: Path) -> bool:
    """A sharing option as stated; when the checkpoint predates it, what the weights show (logged)."""
    stated = args.get(key)
    if stated is None:
        log.warning("%s: %s not in the checkpoint; the weights show %s", path, key, tied_in_weights)
        return tied_in_weights
    if not stated and tied_in_weights:
        log.info("%s: %s=False although the stored weights are equal; loading them untied", path, key)
    return bool(stated)


# ---------------------------------------------------------------------------------------------------- weights
# fairseq name (regex) -> ours. Applied in order to every key; a key no rule matches keeps its name.
RENAMES: list[tuple[str, str]] = [
    (r"^(encoder\.layers\.\d+)\.layer_norms\.0\.", r"\1.self_attn_layer_norm."),
    (r"^(encoder\.layers\.\d+)\.layer_norms\.1\.", r"\1.final_layer_norm."),
    (r"^(decoder\.layers\.\d+)\.layer_norms\.0\.", r"\1.self_attn_layer_norm."),
    (r"^(decoder\.layers\.\d+)\.layer_norms\.1\.", r"\1.encoder_attn_layer_norm."),
    (r"^(decoder\.layers\.\d+)\.layer_norms\.2\.", r"\1.final_layer_norm."),
    (r"^decoder\.embed_out$", "decoder.output_projection.weight"),
]
IGNORED = re.compile(r"(^|\.)(_float_tensor|version)$")
IN_PROJ = re.compile(r"^(.*\.(?:self_attn|encoder_attn))\.in_proj_(weight|bias)$")


def convert_state_dict(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """fairseq parameter names (current and legacy) to ours; buffers fairseq keeps but we do not are dropped."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if IGNORED.search(key):
            continue
        m = IN_PROJ.match(key)
        if m:  # q, k, v stacked along the output dimension
            q, k, v = value.chunk(3, dim=0)
            for name, part in zip(("q", "k", "v"), (q, k, v)):
                out[f"{m.group(1)}.{name}_proj.{m.group(2)}"] = part
            continue
        for pattern, repl in RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def check_weights(model: torch.nn.Module, sd: Mapping[str, Tensor], path: Path) -> None:
    """Missing, unexpected and mis-shaped keys, each named (at most 8 of each)."""
    expected = model.state_dict()
    optional = set()
    cfg = getattr(model, "cfg", None)
    if cfg is not None and (cfg.share_all_embeddings or cfg.share_decoder_input_output_embed):
        optional.add("decoder.output_projection.weight")  # old checkpoints store tied weights only once
    if cfg is not None and cfg.share_all_embeddings:
        optional.add("decoder.embed_tokens.weight")
    missing = [k for k in expected if k not in sd and k not in optional]
    unexpected = [k for k in sd if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}")
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)}"
        for k, v in sd.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:8])}")
    if problems:
        raise FairseqImportError(
            f"{path}: weights do not fit the architecture its options describe: {' | '.join(problems)}"
        )


# ------------------------------------------------------------------------------------------------ dictionaries
def find_dictionaries(
    path: Path, dict_path: Optional[str | Path], source_lang: Optional[str], target_lang: Optional[str]
) -> tuple[Path, Path]:
    """The source and target dict.txt: the given file (for both), else ``dict.txt`` or ``dict.{lang}.txt`` beside."""
    if dict_path:
        p = Path(dict_path)
        if not p.is_file():
            raise FairseqImportError(f"dictionary {p} (given for {path}) not found")
        return p, p
    joined = path.parent / "dict.txt"
    if joined.is_file():
        return joined, joined
    tried = [str(joined)]
    if source_lang and target_lang:
        src, tgt = path.parent / f"dict.{source_lang}.txt", path.parent / f"dict.{target_lang}.txt"
        if src.is_file() and tgt.is_file():
            return src, tgt
        tried += [str(src), str(tgt)]
    raise FairseqImportError(f"{path}: no dictionary found (tried {', '.join(tried)}); pass its dict.txt explicitly")


def check_vocab(dictionary: Dictionary, dict_file: Path, sd: Mapping[str, Tensor], key: str, path: Path) -> None:
    """The dictionary has exactly as many symbols as the embedding has rows."""
    rows = sd[key].shape[0]
    if len(dictionary) != rows:
        raise FairseqImportError(
            f"dictionary {dict_file} has {len(dictionary)} symbols ({dictionary.nspecial} specials + "
            f"{len(dictionary) - dictionary.nspecial} lines) but {path} has {rows} rows in {key}"
        )


# ------------------------------------------------------------------------------------------------------ loading
@dataclass
class FairseqCheckpoint:
    """A fairseq transformer checkpoint, converted: our config, our state_dict, its dictionaries and languages."""

    path: Path
    arch: str
    config: TransformerConfig
    state_dict: dict[str, Tensor]
    src_dict: Optional[Dictionary]
    tgt_dict: Optional[Dictionary]
    source_lang: Optional[str]
    target_lang: Optional[str]

    def vocab_sizes(self) -> tuple[int, int]:
        """Source and target vocabulary sizes, from the embeddings."""
        sd = self.state_dict
        return sd["encoder.embed_tokens.weight"].shape[0], sd["decoder.embed_tokens.weight"].shape[0]

    def build_model(self) -> torch.nn.Module:
        """Our TransformerModel carrying these weights (eval mode)."""
        from runner.models.transformer import TransformerModel

        src, tgt = self.vocab_sizes()
        model = TransformerModel(self.config, src, tgt, padding_idx=1)
        check_weights(model, self.state_dict, self.path)
        model.load_state_dict(self.state_dict, strict=False)
        return model.eval()


def convert(
    state: Mapping[str, Any],
    path: str | Path,
    dict_path: Optional[str | Path] = None,
    with_dictionaries: bool = True,
) -> FairseqCheckpoint:
    """Convert an already read fairseq checkpoint ``state`` (read from ``path``, named in errors)."""
    path = Path(path)
    if not is_fairseq_state(state):
        raise FairseqImportError(f"{path}: not a fairseq checkpoint (no 'args', 'cfg' or 'optimizer_history')")
    args, task = model_args(state, path)
    sd = convert_state_dict(state["model"])
    if "decoder.embed_tokens.weight" not in sd and args.get("share_all_embeddings"):
        sd["decoder.embed_tokens.weight"] = sd.get("encoder.embed_tokens.weight")  # type: ignore[assignment]
    for key in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        if sd.get(key) is None:
            raise FairseqImportError(f"{path}: missing keys: {key}")
    config = architecture(args, sd, path)
    if (config.share_all_embeddings or config.share_decoder_input_output_embed) and (
        "decoder.output_projection.weight" not in sd
    ):
        sd["decoder.output_projection.weight"] = sd["decoder.embed_tokens.weight"]
    source_lang, target_lang = task.get("source_lang"), task.get("target_lang")
    src_dict = tgt_dict = None
    if with_dictionaries:
        src_file, tgt_file = find_dictionaries(path, dict_path, source_lang, target_lang)
        src_dict = Dictionary.load(src_file)
        tgt_dict = src_dict if tgt_file == src_file else Dictionary.load(tgt_file)
        check_vocab(src_dict, src_file, sd, "encoder.embed_tokens.weight", path)
        check_vocab(tgt_dict, tgt_file, sd, "decoder.embed_tokens.weight", path)
    return FairseqCheckpoint(path, str(args["arch"]), config, sd, src_dict, tgt_dict, source_lang, target_lang)


def load(path: str | Path, dict_path: Optional[str | Path] = None, with_dictionaries: bool = True) -> FairseqCheckpoint:
    """Read and convert a fairseq transformer checkpoint file and its dictionaries."""
    return convert(read_checkpoint(path), path, dict_path, with_dictionaries)


# ------------------------------------------------------------------------------------------------- fine-tuning
ARCH_FIELDS = [
    f.name
    for f in fields(TransformerConfig)
    if f.name not in ("_target_", "dropout", "attention_dropout", "activation_dropout")
]


def architecture_differences(run_model: Mapping[str, Any], ckpt: TransformerConfig) -> list[str]:
    """``field: run X, checkpoint Y`` for every architecture field that differs (dropouts may differ)."""
    theirs = asdict(ckpt)
    diffs = []
    for name in ARCH_FIELDS:
        if name in ("max_source_positions", "max_target_positions"):
            side = "encoder" if name.startswith("max_source") else "decoder"
            if not theirs[f"{side}_learned_pos"]:
                continue  # sinusoidal tables are computed, not loaded: any length works
        ours = run_model.get(name)
        if ours != theirs[name]:
            diffs.append(f"{name}: run {ours!r}, checkpoint {theirs[name]!r}")
    return diffs


def finetune_weights(
    path: str | Path, run_model: Mapping[str, Any], dictionary: Optional[Dictionary]
) -> dict[str, Tensor]:
    """The initial weights for ``checkpoint.finetune_from_model=path``: ours as saved, or a fairseq file converted.

    A fairseq file must match the run's model config field by field, and its dictionary (beside it) the run's.
    """
    path = Path(path)
    state = read_checkpoint(path)
    if not is_fairseq_state(state):
        return state["model"]
    target = str(run_model.get("_target_", ""))
    if not target.endswith("TransformerModel.build"):
        raise FairseqImportError(
            f"{path} is a fairseq transformer checkpoint; the run's model {target} cannot take its weights"
        )
    has_dict = (path.parent / "dict.txt").is_file()
    fc = convert(state, path, with_dictionaries=has_dict)
    diffs = architecture_differences(run_model, fc.config)
    if diffs:
        raise FairseqImportError(
            f"checkpoint.finetune_from_model={path}: the run's model config differs from the checkpoint's "
            f"architecture: {'; '.join(diffs)}"
        )
    if dictionary is None:
        raise FairseqImportError(f"{path}: a fairseq checkpoint needs a task with a dictionary to fine-tune")
    for side, size in zip(("source", "target"), fc.vocab_sizes()):
        if size != len(dictionary):
            raise FairseqImportError(
                f"{path}: its {side} embeddings have {size} rows but the run's dictionary has {len(dictionary)} "
                "symbols; train with the checkpoint's dict.txt (task.dict_path=...)"
            )
    if fc.src_dict is not None:
        for d in {id(fc.src_dict): fc.src_dict, id(fc.tgt_dict): fc.tgt_dict}.values():
            if d is not None and d.symbols != dictionary.symbols:
                i = next(i for i, (a, b) in enumerate(zip(d.symbols, dictionary.symbols)) if a != b)
                dict_file = path.parent / "dict.txt"
                raise FairseqImportError(
                    f"{dict_file} differs from the run's dictionary at id {i}: {d.symbols[i]!r} vs "
                    f"{dictionary.symbols[i]!r}; train with task.dict_path={dict_file}"
                )
    log.info("converted fairseq checkpoint %s (arch %s) for fine-tuning", path, fc.arch)
    return fc.state_dict
