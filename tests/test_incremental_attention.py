"""The incremental-decoding fast paths give the results of the plain ones: single-query attention as batched matmuls
against SDPA, keys/values shared by a group of beams against copies per row, and the relaid-out key/value cache
against a cache gathered step by step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from runner.config import TransformerConfig
from runner.models.transformer import DecoderState, MultiheadAttention, TransformerModel, single_query_attention


def test_single_query_attention_equals_sdpa() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(6, 4, 1, 8), torch.randn(6, 4, 9, 8), torch.randn(6, 4, 9, 8)
    mask = torch.rand(6, 1, 1, 9) > 0.3
    mask[:, :, :, 0] = True  # every row attends somewhere
    torch.testing.assert_close(single_query_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(
        single_query_attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    )


def test_grouped_single_query_attention_equals_copied_keys_and_values() -> None:
    torch.manual_seed(1)
    sentences, beams = 3, 4
    q = torch.randn(sentences * beams, 2, 1, 8)
    k, v = torch.randn(sentences, 2, 7, 8), torch.randn(sentences, 2, 7, 8)
    mask = torch.ones(sentences, 1, 1, 7, dtype=torch.bool)
    mask[1, :, :, :3] = False  # a left-padded source
    expected = F.scaled_dot_product_attention(
        q,
        k.repeat_interleave(beams, 0),
        v.repeat_interleave(beams, 0),
        attn_mask=mask.repeat_interleave(beams, 0),
    )
    torch.testing.assert_close(single_query_attention(q, k, v, mask), expected)


def test_attention_module_takes_the_fast_path_only_where_it_is_exact() -> None:
    torch.manual_seed(2)
    attn = MultiheadAttention(16, 4, dropout=0.0).eval()
    x, memory = torch.randn(5, 1, 16), torch.randn(5, 6, 16)
    kv = attn.project_kv(memory)
    q = attn.split_heads(attn.q_proj(x))
    reference = F.scaled_dot_product_attention(q, *kv).transpose(1, 2).reshape(5, 1, 16)
    torch.testing.assert_close(attn(x, kv), attn.out_proj(reference))
    grouped = attn.project_kv(memory[:1])  # one row of keys/values for all five queries
    shared = F.scaled_dot_product_attention(q, *(t.expand(5, -1, -1, -1) for t in grouped))
    torch.testing.assert_close(attn(x, grouped), attn.out_proj(shared.transpose(1, 2).reshape(5, 1, 16)))


def test_decoder_state_relayout_keeps_the_cache() -> None:
    """Appends, beam reorders (shrinking, growing, the identity) and capacity growth against a naive cache."""
    torch.manual_seed(3)
    layers, rows, heads, dim, max_len = 2, 6, 2, 4, 8
    state = DecoderState(layers, rows, heads, dim, max_len, torch.empty(0))
    naive_k = [torch.empty(rows, heads, 0, dim) for _ in range(layers)]
    naive_v = [torch.empty(rows, heads, 0, dim) for _ in range(layers)]
    orders = [
        torch.tensor([0, 0, 1, 3, 5, 5]),
        torch.arange(6),
        torch.tensor([5, 4, 3, 2, 1, 0]),
        torch.tensor([1, 1, 4]),  # three rows leave
        torch.tensor([2, 0, 1]),
        None,
        torch.tensor([0, 2]),
        torch.tensor([0, 0, 0, 1, 1, 1]),  # grows back, as after beam search's one-row-per-sentence first step
    ]
    for order in orders:
        n = naive_k[0].size(0)
        for layer in range(layers):
            k, v = torch.randn(n, heads, 1, dim), torch.randn(n, heads, 1, dim)
            got_k, got_v = state.append(layer, k, v)
            naive_k[layer] = torch.cat([naive_k[layer], k], 2)
            naive_v[layer] = torch.cat([naive_v[layer], v], 2)
            assert torch.equal(got_k, naive_k[layer]) and torch.equal(got_v, naive_v[layer])
        state.advance()
        if order is not None:
            state.reorder_self_attn(order)
            naive_k = [t.index_select(0, order) for t in naive_k]
            naive_v = [t.index_select(0, order) for t in naive_v]


def test_grouped_decoder_state_equals_expanded_encoder_output() -> None:
    torch.manual_seed(4)
    cfg = TransformerConfig(
        encoder_embed_dim=16,
        decoder_embed_dim=16,
        encoder_ffn_embed_dim=32,
        decoder_ffn_embed_dim=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        dropout=0.0,
        max_source_positions=16,
        max_target_positions=16,
    )
    model = TransformerModel(cfg, 30, 30).eval()
    src = torch.tensor([[1, 1, 5, 6, 2], [7, 8, 9, 10, 2]])
    beams = 3
    prev = torch.randint(4, 30, (2 * beams, 4))
    prev[:, 0] = 2
    with torch.no_grad():
        enc = model.encoder(src)
        expanded = enc.reorder(torch.arange(2).repeat_interleave(beams))
        plain_state = model.decoder.new_state(expanded, 4)
        grouped_state = model.decoder.new_state(enc, 4, group=beams)
        for t in range(4):
            plain = model.decoder(prev[:, : t + 1], expanded, plain_state)
            grouped = model.decoder(prev[:, : t + 1], enc, grouped_state)
            torch.testing.assert_close(grouped, plain, rtol=1e-5, atol=1e-5)
        full = model.decoder(prev, expanded)  # no cache: SDPA over all positions
    torch.testing.assert_close(grouped[:, -1], full[:, -1], rtol=1e-5, atol=1e-5)
