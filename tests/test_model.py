"""The transformer's options do what they say, and its parameters carry fairseq's names and conventions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from runner.config import TransformerConfig
from runner.models.transformer import TransformerModel, make_positions

SMALL = dict(
    encoder_embed_dim=16,
    decoder_embed_dim=16,
    encoder_ffn_embed_dim=32,
    decoder_ffn_embed_dim=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    max_source_positions=20,
    max_target_positions=20,
    dropout=0.0,
)


def small(**kw: object) -> TransformerModel:
    torch.manual_seed(0)
    return TransformerModel.build(50, 50, 1, **{**SMALL, **kw}).eval()


def fairseq_keys(layers_enc: int, layers_dec: int, pre_norm: bool) -> set[str]:
    """The state_dict keys of a fairseq TransformerModel (shared/notes/fairseq-formats.md), minus buffers."""
    keys = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.output_projection.weight"}
    attn = [f"{p}_proj.{w}" for p in "qkv" for w in ("weight", "bias")] + ["out_proj.weight", "out_proj.bias"]
    norm = ["weight", "bias"]
    for side, n in (("encoder", layers_enc), ("decoder", layers_dec)):
        for i in range(n):
            pre = f"{side}.layers.{i}."
            keys |= {pre + "self_attn." + a for a in attn}
            keys |= {pre + f"{ln}.{w}" for ln in ("self_attn_layer_norm", "final_layer_norm") for w in norm}
            keys |= {pre + f"{fc}.{w}" for fc in ("fc1", "fc2") for w in norm}
            if side == "decoder":
                keys |= {pre + "encoder_attn." + a for a in attn}
                keys |= {pre + f"encoder_attn_layer_norm.{w}" for w in norm}
        if pre_norm:
            keys |= {f"{side}.layer_norm.{w}" for w in norm}
    return keys


@pytest.mark.parametrize("pre_norm", [False, True])
def test_state_dict_keys_are_fairseqs(pre_norm: bool) -> None:
    m = small(encoder_normalize_before=pre_norm, decoder_normalize_before=pre_norm)
    assert set(m.state_dict()) == fairseq_keys(2, 2, pre_norm)


def test_learned_positions_have_fairseqs_shape() -> None:
    m = small(encoder_learned_pos=True, decoder_learned_pos=True)
    w = m.state_dict()["encoder.embed_positions.weight"]
    assert w.shape == (20 + 1 + 1, 16) and torch.all(w[1] == 0)


def test_sinusoids_and_positions_follow_fairseq() -> None:
    tokens = torch.tensor([[1, 1, 7, 8, 2], [5, 6, 7, 8, 2]])
    assert make_positions(tokens, 1).tolist() == [[1, 1, 2, 3, 4], [2, 3, 4, 5, 6]]
    table = small().encoder.embed_positions.table
    half = 8
    step = math.log(10000) / (half - 1)
    pos = 5
    expect = [math.sin(pos * math.exp(-i * step)) for i in range(half)]
    expect += [math.cos(pos * math.exp(-i * step)) for i in range(half)]
    torch.testing.assert_close(table[pos], torch.tensor(expect), rtol=1e-5, atol=1e-6)
    assert torch.all(table[1] == 0)


def test_embedding_sharing_options_tie_the_weights() -> None:
    m = small(share_all_embeddings=True)
    assert m.encoder.embed_tokens.weight is m.decoder.embed_tokens.weight is m.decoder.output_projection.weight
    m = small(share_decoder_input_output_embed=True)
    assert m.decoder.embed_tokens.weight is m.decoder.output_projection.weight
    assert m.encoder.embed_tokens.weight is not m.decoder.embed_tokens.weight
    m = small()
    n_shared = sum(p.numel() for p in small(share_all_embeddings=True).parameters())
    assert sum(p.numel() for p in m.parameters()) - n_shared == 2 * 50 * 16
    with pytest.raises(ValueError, match="share_all_embeddings needs one joined dictionary"):
        TransformerModel(TransformerConfig(**{**SMALL, "share_all_embeddings": True}), 50, 60)


def test_pre_and_post_norm_compute_different_functions() -> None:
    src = torch.tensor([[5, 6, 7, 2]])
    prev = torch.tensor([[2, 8, 9]])
    post, pre = small(), small(encoder_normalize_before=True, decoder_normalize_before=True)
    pre.load_state_dict({k: v for k, v in post.state_dict().items()}, strict=False)
    assert not torch.allclose(post(src, None, prev), pre(src, None, prev))


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {
            "encoder_normalize_before": True,
            "decoder_normalize_before": True,
            "activation_fn": "gelu",
            "encoder_learned_pos": True,
        },
    ],
)
def test_left_padding_does_not_change_the_result(kw: dict) -> None:
    m = small(**kw)
    src = torch.tensor([[5, 6, 7, 2]])
    padded = torch.tensor([[1, 1, 5, 6, 7, 2], [9, 9, 9, 9, 9, 2]])
    prev = torch.tensor([[2, 8, 9], [2, 8, 9]])
    alone = m(src, None, prev[:1])
    batched = m(padded, None, prev)[:1]
    torch.testing.assert_close(alone, batched, rtol=1e-5, atol=1e-5)


def test_decoder_is_causal_and_incremental_decoding_matches() -> None:
    m = small(encoder_normalize_before=True, decoder_normalize_before=True)
    src = torch.tensor([[5, 6, 7, 2], [1, 8, 9, 2]])
    prev = torch.tensor([[2, 10, 11, 12], [2, 13, 14, 15]])
    full = m(src, None, prev)
    changed = prev.clone()
    changed[:, 3] = 20
    torch.testing.assert_close(m(src, None, changed)[:, :3], full[:, :3])
    enc = m.encoder(src)
    state = m.decoder.new_state(enc, max_len=8)
    steps = [m.decoder(prev[:, : t + 1], enc, state) for t in range(4)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_dropout_is_active_in_training_only() -> None:
    m = small(dropout=0.5, attention_dropout=0.5)
    src, prev = torch.tensor([[5, 6, 7, 2]]), torch.tensor([[2, 8, 9]])
    assert torch.equal(m(src, None, prev), m(src, None, prev))
    m.train()
    assert not torch.equal(m(src, None, prev), m(src, None, prev))


def test_normalized_probs_are_fp32_log_softmax() -> None:
    logits = torch.randn(2, 3, 7, dtype=torch.bfloat16)
    out = TransformerModel.get_normalized_probs(logits)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.log_softmax(logits.float(), -1))
