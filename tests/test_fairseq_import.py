"""fairseq checkpoints: built here with fairseq's exact key layout and tensor conventions (fairseq does not install on
Python 3.11), loaded into our model, and checked against an independent time-first reference forward written from
fairseq's formulas. Also: unsafe pickles, truncated files, bad dictionaries, unknown archs, missing keys, fine-tuning
from a fairseq file and converting one for generate."""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from runner import fairseq_import as fi
from runner.dictionary import Dictionary
from runner.tasks.translation import TranslationTask
from runner.trainer import Trainer

from .conftest import compose_train, micro_overrides, run_module

PAD = 1


# ------------------------------------------------------------------------------------- fairseq-format checkpoints
@dataclass
class Spec:
    """One fairseq transformer variant to write."""

    normalize_before: bool = False
    activation_fn: str = "relu"
    share: str = "none"  # none | decoder (share_decoder_input_output_embed) | all (share_all_embeddings)
    learned_pos: bool = False
    legacy: bool = False  # in_proj_weight, layer_norms.{0,1,2}, embed_out
    layout: str = "args"  # args (0.10) | cfg_namespace | cfg_dict (1.0 nested dataclass dict)
    no_scale_embedding: bool = False
    vocab: int = 24
    dim: int = 16
    ffn: int = 32
    heads: int = 2
    enc_layers: int = 2
    dec_layers: int = 2
    max_positions: int = 40
    arch: str = "transformer"


def _ln(g: torch.Generator, d: int) -> tuple[Tensor, Tensor]:
    return 1 + 0.1 * torch.randn(d, generator=g), 0.1 * torch.randn(d, generator=g)


def fairseq_state_dict(spec: Spec, seed: int = 0) -> dict[str, Tensor]:
    """Random weights under fairseq's TransformerModel key names (tied weights: one tensor under every name)."""
    g = torch.Generator().manual_seed(seed)
    d, f = spec.dim, spec.ffn
    sd: dict[str, Tensor] = {}

    def rnd(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g) * 0.3

    def embedding() -> Tensor:
        w = rnd(spec.vocab, d)
        w[PAD] = 0
        return w

    def attention(prefix: str) -> None:
        if spec.legacy:
            sd[f"{prefix}.in_proj_weight"] = rnd(3 * d, d)
            sd[f"{prefix}.in_proj_bias"] = rnd(3 * d)
        else:
            for p in ("q", "k", "v"):
                sd[f"{prefix}.{p}_proj.weight"], sd[f"{prefix}.{p}_proj.bias"] = rnd(d, d), rnd(d)
        sd[f"{prefix}.out_proj.weight"], sd[f"{prefix}.out_proj.bias"] = rnd(d, d), rnd(d)

    def norm(prefix: str) -> None:
        sd[f"{prefix}.weight"], sd[f"{prefix}.bias"] = _ln(g, d)

    def positions(side: str) -> None:
        if spec.learned_pos:
            w = rnd(spec.max_positions + PAD + 1, d)
            w[PAD] = 0
            sd[f"{side}.embed_positions.weight"] = w
        else:
            sd[f"{side}.embed_positions._float_tensor"] = torch.FloatTensor(1)

    enc_emb = embedding()
    sd["encoder.embed_tokens.weight"] = enc_emb
    positions("encoder")
    for i in range(spec.enc_layers):
        p = f"encoder.layers.{i}"
        attention(f"{p}.self_attn")
        names = ("layer_norms.0", "layer_norms.1") if spec.legacy else ("self_attn_layer_norm", "final_layer_norm")
        norm(f"{p}.{names[0]}")
        sd[f"{p}.fc1.weight"], sd[f"{p}.fc1.bias"] = rnd(f, d), rnd(f)
        sd[f"{p}.fc2.weight"], sd[f"{p}.fc2.bias"] = rnd(d, f), rnd(d)
        norm(f"{p}.{names[1]}")
    if spec.normalize_before:
        norm("encoder.layer_norm")
    sd["encoder.version"] = torch.Tensor([3])

    dec_emb = enc_emb if spec.share == "all" else embedding()
    sd["decoder.embed_tokens.weight"] = dec_emb
    positions("decoder")
    for i in range(spec.dec_layers):
        p = f"decoder.layers.{i}"
        attention(f"{p}.self_attn")
        attention(f"{p}.encoder_attn")
        names = (
            ("layer_norms.0", "layer_norms.1", "layer_norms.2")
            if spec.legacy
            else ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm")
        )
        for n in names:
            norm(f"{p}.{n}")
        sd[f"{p}.fc1.weight"], sd[f"{p}.fc1.bias"] = rnd(f, d), rnd(f)
        sd[f"{p}.fc2.weight"], sd[f"{p}.fc2.bias"] = rnd(d, f), rnd(d)
    if spec.normalize_before:
        norm("decoder.layer_norm")
    if spec.share == "none":
        sd["decoder.embed_out" if spec.legacy else "decoder.output_projection.weight"] = rnd(spec.vocab, d)
    elif not spec.legacy:  # tied: the same tensor under both names (legacy files stored it once)
        sd["decoder.output_projection.weight"] = dec_emb
    sd["decoder.version"] = torch.Tensor([3])
    return sd


def model_options(spec: Spec) -> dict[str, Any]:
    """What fairseq's argparse path records for a transformer (after base_architecture filled the defaults)."""
    return {
        "arch": spec.arch,
        "encoder_embed_dim": spec.dim,
        "encoder_ffn_embed_dim": spec.ffn,
        "encoder_layers": spec.enc_layers,
        "encoder_attention_heads": spec.heads,
        "encoder_normalize_before": spec.normalize_before,
        "encoder_learned_pos": spec.learned_pos,
        "decoder_embed_dim": spec.dim,
        "decoder_ffn_embed_dim": spec.ffn,
        "decoder_layers": spec.dec_layers,
        "decoder_attention_heads": spec.heads,
        "decoder_normalize_before": spec.normalize_before,
        "decoder_learned_pos": spec.learned_pos,
        "decoder_output_dim": spec.dim,
        "decoder_input_dim": spec.dim,
        "activation_fn": spec.activation_fn,
        "dropout": 0.1,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "share_decoder_input_output_embed": spec.share == "decoder",
        "share_all_embeddings": spec.share == "all",
        "no_scale_embedding": spec.no_scale_embedding,
        "max_source_positions": spec.max_positions,
        "max_target_positions": spec.max_positions,
        "adaptive_softmax_cutoff": None,
        "no_token_positional_embeddings": False,
        "layernorm_embedding": False,
        "cross_self_attention": False,
    }


def nested_model_cfg(opts: dict[str, Any]) -> dict[str, Any]:
    """fairseq 1.0's dataclass layout: ``encoder``/``decoder`` sub-dicts (``encoder.embed_dim``...), ``_name``."""
    out: dict[str, Any] = {"_name": opts["arch"], "encoder": {}, "decoder": {}}
    for key, value in opts.items():
        side, _, rest = key.partition("_")
        if side in ("encoder", "decoder"):
            out[side][rest] = value
        elif key != "arch":
            out[key] = value
    return out


def write_fairseq_checkpoint(
    path: Path, spec: Spec, seed: int = 0, dictionary: Optional[Dictionary] = None, legacy_format: bool = False
) -> dict[str, Tensor]:
    """A fairseq checkpoint file (and dict.txt beside it) in ``spec``'s layout; returns the fairseq state_dict."""
    sd = fairseq_state_dict(spec, seed)
    opts = model_options(spec)
    task = {"_name": "translation", "task": "translation", "source_lang": "ja", "target_lang": "en"}
    extra = {"train_iterator": {"epoch": 3}, "val_loss": np.float64(3.25), "previous_training_time": 12.5}
    history = [
        {
            "criterion_name": "LabelSmoothedCrossEntropyCriterion",
            "optimizer_name": "FairseqAdam",
            "lr_scheduler_state": {"best": np.float64(3.25)},
            "num_updates": 100,
        }
    ]
    if spec.layout == "args":
        state: dict[str, Any] = {"args": argparse.Namespace(**opts, **task), "model": sd}
    else:
        model_cfg: Any = (
            argparse.Namespace(**opts, **task) if spec.layout == "cfg_namespace" else nested_model_cfg(opts)
        )
        cfg = {"_name": None, "common": {"seed": 1}, "model": model_cfg, "task": task}
        state = {"args": None, "cfg": cfg, "model": sd, "criterion": {}, "task_state": {}}
    state.update(optimizer_history=history, extra_state=extra, last_optimizer_state={})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path, _use_new_zipfile_serialization=not legacy_format)
    if dictionary is None:
        dictionary = Dictionary()
        for i in range(spec.vocab - dictionary.nspecial):
            dictionary.add_symbol(f"▁w{i}", 100)
    dictionary.save(path.parent / "dict.txt")
    return sd


# -------------------------------------------------------------------------------- independent reference forward
def reference_sinusoids(rows: int, dim: int) -> Tensor:
    """fairseq: half = dim/2, step = log(10000)/(half-1), [sin | cos], padding row zero."""
    half = dim // 2
    table = torch.zeros(rows, dim, dtype=torch.float64)
    for pos in range(rows):
        for i in range(half):
            angle = pos * math.exp(-i * math.log(10000) / (half - 1))
            table[pos, i], table[pos, half + i] = math.sin(angle), math.cos(angle)
    table[PAD] = 0
    return table.float()


def reference_forward(sd: dict[str, Tensor], spec: Spec, src: Tensor, prev: Tensor) -> Tensor:
    """fairseq's encoder-decoder computation, time-first ([T, B, C]), from its own state_dict; logits [B, T, V]."""
    d, h = spec.dim, spec.heads
    hd = d // h
    act = F.relu if spec.activation_fn == "relu" else F.gelu

    def lin(x: Tensor, prefix: str) -> Tensor:
        return x @ sd[f"{prefix}.weight"].t() + sd[f"{prefix}.bias"]

    def ln(x: Tensor, prefix: str) -> Tensor:
        return F.layer_norm(x, (d,), sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps=1e-5)

    def qkv(prefix: str) -> list[tuple[Tensor, Tensor]]:
        if f"{prefix}.in_proj_weight" in sd:
            w, b = sd[f"{prefix}.in_proj_weight"], sd[f"{prefix}.in_proj_bias"]
            return [(w[i * d : (i + 1) * d], b[i * d : (i + 1) * d]) for i in range(3)]
        return [(sd[f"{prefix}.{p}_proj.weight"], sd[f"{prefix}.{p}_proj.bias"]) for p in "qkv"]

    def attention(prefix: str, query: Tensor, key: Tensor, key_pad: Optional[Tensor], causal: bool) -> Tensor:
        (wq, bq), (wk, bk), (wv, bv) = qkv(prefix)
        tq, b, _ = query.shape
        tk = key.shape[0]
        q = (query @ wq.t() + bq) * hd**-0.5
        k, v = key @ wk.t() + bk, key @ wv.t() + bv
        q = q.reshape(tq, b * h, hd).transpose(0, 1)
        k = k.reshape(tk, b * h, hd).transpose(0, 1)
        v = v.reshape(tk, b * h, hd).transpose(0, 1)
        scores = torch.bmm(q, k.transpose(1, 2)).view(b, h, tq, tk)
        if key_pad is not None:
            scores = scores.masked_fill(key_pad[:, None, None, :], float("-inf"))
        if causal:
            scores = scores + torch.triu(torch.full((tq, tk), float("-inf")), 1)
        probs = torch.softmax(scores, dim=-1).view(b * h, tq, tk)
        out = torch.bmm(probs, v).transpose(0, 1).reshape(tq, b, d)
        return lin(out, f"{prefix}.out_proj")

    def sublayer(x: Tensor, norm: str, block: Any) -> Tensor:
        residual = x
        if spec.normalize_before:
            x = ln(x, norm)
        x = residual + block(x)
        return x if spec.normalize_before else ln(x, norm)

    def embed(side: str, tokens: Tensor) -> Tensor:
        mask = tokens.ne(PAD).long()
        pos = torch.cumsum(mask, dim=1) * mask + PAD
        if spec.learned_pos:
            table = sd[f"{side}.embed_positions.weight"]
        else:
            table = reference_sinusoids(spec.max_positions + PAD + 1, d)
        scale = 1.0 if spec.no_scale_embedding else math.sqrt(d)
        x = scale * sd[f"{side}.embed_tokens.weight"][tokens] + table[pos]
        return x.transpose(0, 1)

    legacy = spec.legacy
    enc_pad = src.eq(PAD)
    x = embed("encoder", src) * (~enc_pad).t().unsqueeze(-1).float()
    for i in range(spec.enc_layers):
        p = f"encoder.layers.{i}"
        n0, n1 = (f"{p}.layer_norms.0", f"{p}.layer_norms.1")
        if not legacy:
            n0, n1 = (f"{p}.self_attn_layer_norm", f"{p}.final_layer_norm")
        x = sublayer(x, n0, lambda y, p=p: attention(f"{p}.self_attn", y, y, enc_pad, False))
        x = sublayer(x, n1, lambda y, p=p: lin(act(lin(y, f"{p}.fc1")), f"{p}.fc2"))
    if spec.normalize_before:
        x = ln(x, "encoder.layer_norm")
    enc = x

    y = embed("decoder", prev)
    for i in range(spec.dec_layers):
        p = f"decoder.layers.{i}"
        if legacy:
            n0, n1, n2 = (f"{p}.layer_norms.{j}" for j in range(3))
        else:
            n0, n1, n2 = (f"{p}.self_attn_layer_norm", f"{p}.encoder_attn_layer_norm", f"{p}.final_layer_norm")
        y = sublayer(y, n0, lambda z, p=p: attention(f"{p}.self_attn", z, z, None, True))
        y = sublayer(y, n1, lambda z, p=p: attention(f"{p}.encoder_attn", z, enc, enc_pad, False))
        y = sublayer(y, n2, lambda z, p=p: lin(act(lin(z, f"{p}.fc1")), f"{p}.fc2"))
    if spec.normalize_before:
        y = ln(y, "decoder.layer_norm")
    out_w = sd.get("decoder.output_projection.weight", sd.get("decoder.embed_out"))
    if out_w is None:
        out_w = sd["decoder.embed_tokens.weight"]
    return (y @ out_w.t()).transpose(0, 1)


def batch(vocab: int) -> tuple[Tensor, Tensor]:
    """A left-padded source (fairseq's convention) and an unpadded decoder input starting with </s>."""
    g = torch.Generator().manual_seed(7)
    src = torch.randint(4, vocab, (3, 7), generator=g)
    src[0, :3] = PAD
    src[1, :1] = PAD
    src[:, -1] = 2
    prev = torch.randint(4, vocab, (3, 5), generator=g)
    prev[:, 0] = 2
    return src, prev


VARIANTS = {
    "postnorm-relu-unshared-sinusoidal-args": Spec(),
    "prenorm-gelu-shareall-learned-cfgns": Spec(
        normalize_before=True, activation_fn="gelu", share="all", learned_pos=True, layout="cfg_namespace"
    ),
    "prenorm-relu-sharedecoder-sinusoidal-cfgdict-legacy": Spec(
        normalize_before=True, share="decoder", legacy=True, layout="cfg_dict"
    ),
    "postnorm-gelu-unshared-learned-legacy-noscale-args": Spec(
        activation_fn="gelu", learned_pos=True, legacy=True, no_scale_embedding=True
    ),
    "postnorm-relu-shareall-legacy-args": Spec(share="all", legacy=True, arch="transformer_iwslt_de_en"),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_our_model_computes_what_fairseq_defines(name: str, tmp_path: Path) -> None:
    spec = VARIANTS[name]
    path = tmp_path / "checkpoint_best.pt"
    sd = write_fairseq_checkpoint(path, spec, legacy_format=name.endswith("-args"))
    fc = fi.load(path)
    cfg = fc.config
    assert cfg.encoder_normalize_before == cfg.decoder_normalize_before == spec.normalize_before
    assert cfg.activation_fn == spec.activation_fn
    assert cfg.encoder_learned_pos == cfg.decoder_learned_pos == spec.learned_pos
    assert cfg.share_all_embeddings == (spec.share == "all")
    assert cfg.share_decoder_input_output_embed == (spec.share == "decoder")
    assert cfg.no_scale_embedding == spec.no_scale_embedding
    assert (cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_embed_dim) == (2, 2, spec.dim)
    assert len(fc.src_dict) == spec.vocab and fc.source_lang == "ja" and fc.target_lang == "en"
    model = fc.build_model()
    if spec.share != "none":
        assert model.decoder.output_projection.weight is model.decoder.embed_tokens.weight, "tied after loading"
    src, prev = batch(spec.vocab)
    with torch.no_grad():
        ours = model(src, src.ne(PAD).sum(1), prev)
    expected = reference_forward(sd, spec, src, prev)
    assert ours.shape == (3, 5, spec.vocab)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_the_reference_is_sensitive_to_the_conventions() -> None:
    """The comparison can fail: the other norm order, activation or embedding scale gives other logits."""
    spec = Spec(normalize_before=True)
    sd = fairseq_state_dict(spec)
    src, prev = batch(spec.vocab)
    base = reference_forward(sd, spec, src, prev)
    for other in (
        Spec(normalize_before=False),  # the final layer_norm weights are then unused
        Spec(normalize_before=True, activation_fn="gelu"),
        Spec(normalize_before=True, no_scale_embedding=True),
    ):
        assert not torch.allclose(base, reference_forward(sd, other, src, prev), atol=1e-3)


# --------------------------------------------------------------------------------------------------- bad input
class RunsCode:
    """Unpickles by calling os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"args": None, "model": {}, "extra_state": RunsCode(marker)}, path)
    with pytest.raises(fi.FairseqImportError) as e:
        fi.load(path)
    assert str(path) in str(e.value) and "system" in str(e.value) and "refused" in str(e.value)
    assert not marker.exists(), "no code ran"


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_last.pt"
    write_fairseq_checkpoint(path, Spec())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(fi.FairseqImportError, match=r"checkpoint_last\.pt: truncated or corrupt"):
        fi.load(path)


def test_dictionary_size_must_match_the_embeddings(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    write_fairseq_checkpoint(path, Spec(vocab=24))
    small = Dictionary()
    for i in range(10):
        small.add_symbol(f"x{i}")
    small.save(tmp_path / "small.txt")
    with pytest.raises(fi.FairseqImportError, match=r"small\.txt has 14 symbols .* 24 rows in encoder\.embed_tokens"):
        fi.load(path, dict_path=tmp_path / "small.txt")
    (tmp_path / "dict.txt").unlink()
    with pytest.raises(fi.FairseqImportError, match="no dictionary found"):
        fi.load(path)


def test_unknown_arch_missing_keys_and_unsupported_options(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    write_fairseq_checkpoint(path, Spec(arch="bart_base"))
    with pytest.raises(fi.FairseqImportError, match="arch 'bart_base' is not an encoder-decoder transformer"):
        fi.load(path)

    write_fairseq_checkpoint(path, Spec())
    state = fi.read_checkpoint(path)
    del state["model"]["decoder.layers.1.fc2.weight"]
    state["model"]["encoder.layernorm_embedding.weight"] = torch.ones(16)
    with pytest.raises(fi.FairseqImportError) as e:
        fi.convert(state, path).build_model()
    assert "missing keys (1): decoder.layers.1.fc2.weight" in str(e.value)
    assert "unexpected keys (1): encoder.layernorm_embedding.weight" in str(e.value)

    state = fi.read_checkpoint(path)
    state["args"].layernorm_embedding = True
    with pytest.raises(fi.FairseqImportError, match="layernorm_embedding=True is not supported"):
        fi.convert(state, path)

    state = fi.read_checkpoint(path)
    state["args"].encoder_normalize_before = True  # says pre-norm, but no encoder.layer_norm weights
    with pytest.raises(fi.FairseqImportError, match="encoder_normalize_before=True but encoder.layer_norm.weight"):
        fi.convert(state, path)

    state = fi.read_checkpoint(path)
    state["args"].share_decoder_input_output_embed = True  # says tied, but the stored weights differ
    with pytest.raises(fi.FairseqImportError, match="output_projection.weight differs"):
        fi.convert(state, path)


def test_tying_detected_from_values_when_the_option_is_absent(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    write_fairseq_checkpoint(path, Spec(share="decoder"))
    state = fi.read_checkpoint(path)
    del state["args"].share_decoder_input_output_embed
    # a copy, not the same storage: equal values still mean tied
    state["model"]["decoder.output_projection.weight"] = state["model"]["decoder.embed_tokens.weight"].clone()
    assert fi.convert(state, path).config.share_decoder_input_output_embed


# -------------------------------------------------------------------------------- fine-tuning and convert
def run_spec(dictionary: Dictionary) -> Spec:
    """The fairseq twin of the micro run config (transformer_tiny preset + conftest.MICRO)."""
    return Spec(
        normalize_before=True,
        share="all",
        vocab=len(dictionary),
        dim=32,
        ffn=64,
        heads=2,
        enc_layers=1,
        dec_layers=1,
        max_positions=64,
    )


def micro_trainer(corpus: Path, data_bin: Path, out: Path, *extra: str) -> Trainer:
    cfg = compose_train(micro_overrides(corpus, data_bin, out, *extra))
    return Trainer(cfg, TranslationTask(**cfg.task))


def test_finetune_from_a_fairseq_checkpoint(corpus, data_bin, tmp_path) -> None:
    probe = micro_trainer(corpus, data_bin, tmp_path / "probe")
    dictionary = probe.task.source_dictionary
    fairseq_file = tmp_path / "fairseq" / "checkpoint_best.pt"
    sd = write_fairseq_checkpoint(fairseq_file, run_spec(dictionary), dictionary=dictionary)

    ft = micro_trainer(
        corpus, data_bin, tmp_path / "ft", "optimization.max_update=3", f"checkpoint.finetune_from_model={fairseq_file}"
    )
    ft.restore()
    ours = ft.model.state_dict()
    assert torch.equal(ours["encoder.layers.0.fc1.weight"], sd["encoder.layers.0.fc1.weight"])
    assert torch.equal(ours["decoder.output_projection.weight"], sd["decoder.embed_tokens.weight"])
    state = ft.train()
    assert state["num_updates"] == 3

    with pytest.raises(fi.FairseqImportError, match=r"encoder_layers: run 2, checkpoint 1"):
        micro_trainer(
            corpus,
            data_bin,
            tmp_path / "bad",
            "model.encoder_layers=2",
            f"checkpoint.finetune_from_model={fairseq_file}",
        ).restore()


def test_convert_then_generate(corpus, data_bin, tmp_path) -> None:
    probe = micro_trainer(corpus, data_bin, tmp_path / "probe")
    dictionary = probe.task.source_dictionary
    spm = probe.task.state()["spm_model"]
    fairseq_file = tmp_path / "fairseq" / "checkpoint_best.pt"
    write_fairseq_checkpoint(fairseq_file, run_spec(dictionary), dictionary=dictionary)
    out = tmp_path / "converted.pt"
    run_module("runner.convert", [f"path={fairseq_file}", f"output={out}", f"spm_model={spm}"], cwd=tmp_path)
    converted = torch.load(out, weights_only=True)
    assert converted["task_state"]["dictionary"] == dictionary.symbols
    assert converted["cfg"]["model"]["share_all_embeddings"] is True

    data = tmp_path / "data"
    data.mkdir()
    for lang in ("ja", "en"):
        lines = (corpus / f"test.{lang}").read_text(encoding="utf-8").splitlines()[:3]
        (data / f"test.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = run_module(
        "runner.generate",
        [f"path={out}", f"data={data}", "generation.beam=2", "generation.max_len_b=6", "common.threads=1"],
        cwd=tmp_path,
    )
    assert sum(line.startswith("H-") for line in proc.stdout.splitlines()) == 3
    assert "Translated 3 sentences" in proc.stdout + proc.stderr
