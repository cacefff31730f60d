"""The encoder-decoder transformer, read top to bottom: positions, attention, layers, encoder, decoder, model.

Parameter names match fairseq's TransformerModel (``encoder.layers.0.self_attn.q_proj.weight``, ...), so a fairseq
state_dict maps onto this module by a plain rename table. Tensors are batch-first ([B, T, C]); fairseq is
time-first, which does not change any parameter. Attention runs through ``F.scaled_dot_product_attention``, except
for a single query position at inference (incremental decoding), which runs as two batched matmuls
(:func:`single_query_attention`): PyTorch's CPU SDPA kernel is slow for one query. Incremental decoding keeps keys
and values in a preallocated :class:`DecoderState` (no per-step concatenation); beam search shares one copy of the
cross-attention keys/values between the beams of a sentence (``group``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runner.config import TransformerConfig


def make_positions(tokens: Tensor, padding_idx: int) -> Tensor:
    """fairseq's position ids: non-pad tokens count up from ``padding_idx + 1``; pads keep ``padding_idx``."""
    mask = tokens.ne(padding_idx).long()
    return torch.cumsum(mask, dim=1) * mask + padding_idx


def sinusoidal_table(num_embeddings: int, dim: int, padding_idx: int) -> Tensor:
    """fairseq's sinusoids: ``[sin | cos]`` halves concatenated (not interleaved), the padding row zero."""
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float) * -step)
    angles = torch.arange(num_embeddings, dtype=torch.float).unsqueeze(1) * freqs.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2 == 1:
        table = torch.cat([table, torch.zeros(num_embeddings, 1)], dim=1)
    table[padding_idx] = 0
    return table


class SinusoidalPositionalEmbedding(nn.Module):
    """Fixed positions; the table is a non-persistent buffer, so it is never saved and never loaded."""

    def __init__(self, max_positions: int, dim: int, padding_idx: int):
        super().__init__()
        self.padding_idx = padding_idx
        self.register_buffer("table", sinusoidal_table(max_positions + padding_idx + 1, dim, padding_idx), False)

    def forward(self, positions: Tensor) -> Tensor:
        return F.embedding(positions, self.table)


class LearnedPositionalEmbedding(nn.Embedding):
    """Learned positions, stored as ``embed_positions.weight`` [max_positions + padding_idx + 1, dim] like fairseq."""

    def __init__(self, max_positions: int, dim: int, padding_idx: int):
        super().__init__(max_positions + padding_idx + 1, dim, padding_idx=padding_idx)
        nn.init.normal_(self.weight, mean=0, std=dim**-0.5)
        nn.init.zeros_(self.weight[padding_idx])


class MultiheadAttention(nn.Module):
    """Attention with separate q/k/v/out projections (fairseq's names) on top of SDPA."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by attention heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(proj.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def split_heads(self, x: Tensor) -> Tensor:
        """[B, T, C] -> [B, H, T, D]."""
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of ``x``, split into heads; cross-attention computes these once per source."""
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def forward(
        self,
        query: Tensor,
        kv: tuple[Tensor, Tensor],
        attn_mask: Optional[Tensor] = None,
        is_causal: bool = False,
    ) -> Tensor:
        """Attend from ``query`` [B, T, C] to heads-split keys/values; ``attn_mask`` is True where allowed.

        Keys/values (and the mask) may hold fewer rows than ``query``: each then serves ``B // rows`` consecutive
        query rows (see :func:`single_query_attention`).
        """
        q = self.split_heads(self.q_proj(query))
        k, v = kv
        dropout = self.dropout if self.training else 0.0
        if q.size(2) == 1 and not is_causal and dropout == 0.0:
            out = single_query_attention(q, k, v, attn_mask)
        else:
            group = q.size(0) // k.size(0)
            if group > 1:
                k, v = k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
                attn_mask = attn_mask.repeat_interleave(group, 0) if attn_mask is not None else None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout, is_causal=is_causal)
        b, _, t, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1))


def single_query_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
    """SDPA's result for one query position per row, as two batched matmuls (faster on CPU than SDPA's kernel).

    ``q`` is [R, H, 1, D]; ``k``/``v`` are [N, H, S, D] with ``R`` a multiple of ``N``: consecutive groups of
    ``R // N`` query rows (a sentence's beams) share one row of keys/values, which then become the group's queries
    instead of being copied per row. ``attn_mask`` [N, 1, 1, S] is True where attention is allowed. Returns
    [R, H, 1, D].
    """
    rows, heads, _, head_dim = q.shape
    n = k.size(0)
    group = rows // n
    q = q.view(n, group, heads, head_dim).transpose(1, 2) * head_dim**-0.5  # [N, H, G, D]
    scores = torch.matmul(q, k.transpose(-1, -2))  # [N, H, G, S]
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, -math.inf)
    out = torch.matmul(torch.softmax(scores, dim=-1), v)  # [N, H, G, D]
    return out.transpose(1, 2).reshape(rows, heads, 1, head_dim)


def _activation(name: str) -> Any:
    if name == "relu":
        return F.relu
    if name == "gelu":
        return F.gelu
    raise ValueError(f"model.activation_fn: unknown activation {name!r} (relu, gelu)")


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each wrapped in residual + LayerNorm (pre- or post-norm)."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, cfg: TransformerConfig, normalize_before: bool):
        super().__init__()
        self.normalize_before = normalize_before
        self.self_attn = MultiheadAttention(dim, heads, cfg.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation = _activation(cfg.activation_fn)
        self.dropout = nn.Dropout(cfg.dropout)
        self.activation_dropout = nn.Dropout(cfg.activation_dropout)

    def residual(self, x: Tensor, norm: nn.LayerNorm, block: Any) -> Tensor:
        """``x + dropout(block(x))`` with the LayerNorm before the block (pre-norm) or after the sum (post-norm)."""
        if self.normalize_before:
            return x + self.dropout(block(norm(x)))
        return norm(x + self.dropout(block(x)))

    def ffn(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation_dropout(self.activation(self.fc1(x))))

    def forward(self, x: Tensor, attn_mask: Optional[Tensor]) -> Tensor:
        x = self.residual(
            x, self.self_attn_layer_norm, lambda h: self.self_attn(h, self.self_attn.project_kv(h), attn_mask)
        )
        return self.residual(x, self.final_layer_norm, self.ffn)


class DecoderLayer(EncoderLayer):
    """Causal self-attention, attention over the encoder output, then feed-forward."""

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        heads: int,
        cfg: TransformerConfig,
        normalize_before: bool,
        no_encoder_attn: bool = False,
    ):
        super().__init__(dim, ffn_dim, heads, cfg, normalize_before)
        # A decoder-only language model (transformer_lm) has no encoder to attend to.
        self.encoder_attn = None if no_encoder_attn else MultiheadAttention(dim, heads, cfg.attention_dropout)
        self.encoder_attn_layer_norm = None if no_encoder_attn else nn.LayerNorm(dim)

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        encoder_kv: Optional[Tensor | tuple[Tensor, Tensor]],
        encoder_mask: Optional[Tensor],
        state: Optional[DecoderState] = None,
        layer: int = 0,
    ) -> Tensor:
        """``encoder_kv`` is the encoder output (projected here, inside this layer's forward, as FSDP's per-layer
        parameter gathering requires) or, when decoding incrementally, its cached keys and values."""

        def self_attention(h: Tensor) -> Tensor:
            if state is None:
                return self.self_attn(h, self.self_attn.project_kv(h), is_causal=h.size(1) > 1)
            return self.self_attn(h, state.append(layer, *self.self_attn.project_kv(h)))

        x = self.residual(x, self.self_attn_layer_norm, self_attention)
        if self.encoder_attn is not None:
            assert encoder_kv is not None
            kv = self.encoder_attn.project_kv(encoder_kv) if isinstance(encoder_kv, Tensor) else encoder_kv
            x = self.residual(x, self.encoder_attn_layer_norm, lambda h: self.encoder_attn(h, kv, encoder_mask))
        return self.residual(x, self.final_layer_norm, self.ffn)


@dataclass
class EncoderOut:
    """Encoder states [B, S, C] and the source padding mask [B, S] (True at pads)."""

    out: Tensor
    padding_mask: Tensor

    def attn_mask(self) -> Tensor:
        """[B, 1, 1, S] boolean mask for SDPA, True where attention is allowed."""
        return ~self.padding_mask[:, None, None, :]

    def reorder(self, order: Tensor) -> EncoderOut:
        return EncoderOut(self.out.index_select(0, order), self.padding_mask.index_select(0, order))


class DecoderState:
    """Incremental decoding state: a self-attention key/value cache preallocated for ``max_len`` steps per layer,
    and the cross-attention keys/values computed once from the encoder output.

    The cache is a flat buffer viewed as [layers, rows, heads, capacity, head_dim], with a spare buffer of the same
    size. A reorder gathers the filled steps into the spare buffer and swaps (one copy, no write-back); it lays them
    out with room for exactly one more step, so that the next step's attention reads each layer's keys/values as one
    contiguous block (batched matmuls over a strided slice are several times slower on CPU). Without reorders
    (greedy search) the capacity stays ``max_len``. With ``group`` > 1 (beam search), the cross-attention
    keys/values hold one row per sentence, shared by its ``group`` consecutive decoder rows.
    """

    def __init__(self, num_layers: int, batch: int, heads: int, head_dim: int, max_len: int, like: Tensor):
        self.layers, self.heads, self.head_dim, self.max_len = num_layers, heads, head_dim, max_len
        size = num_layers * batch * heads * max_len * head_dim
        self._flat = (like.new_empty(size), like.new_empty(size))  # storage of self.k, self.v
        self._spare: Optional[tuple[Tensor, Tensor]] = None  # allocated on the first reorder
        self.k, self.v = (self._view(f, batch, max_len) for f in self._flat)
        self.length = 0  # steps cached so far
        self.encoder_kv: list[tuple[Tensor, Tensor]] = []

    def _view(self, flat: Tensor, rows: int, capacity: int) -> Tensor:
        """[layers, rows, heads, capacity, head_dim] over the start of a flat buffer."""
        shape = (self.layers, rows, self.heads, capacity, self.head_dim)
        return flat[: math.prod(shape)].view(shape)

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store this step's keys/values for ``layer`` and return the cache up to and including it."""
        t = k.size(2)
        end = self.length + t
        if end > self.max_len:
            raise RuntimeError(f"decoder state holds {self.max_len} steps; step {end} does not fit")
        if end > self.k.size(3):
            self._relayout(None, self.max_len)
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, steps: int = 1) -> None:
        self.length += steps

    def reorder(self, order: Tensor) -> None:
        """Follow beam search: row ``i`` of the batch becomes row ``order[i]``."""
        self.reorder_self_attn(order)
        self.reorder_encoder(order)

    def reorder_self_attn(self, order: Tensor) -> None:
        """Reorder (or shrink to ``len(order)`` rows) the self-attention cache, copying only the filled steps.

        The identity order (greedy search, or beams that all kept their rows) copies nothing.
        """
        n = order.size(0)
        if n == self.k.size(1) and torch.equal(order, torch.arange(n, device=order.device)):
            return
        self._relayout(order, min(self.max_len, self.length + 1))

    def _relayout(self, order: Optional[Tensor], capacity: int) -> None:
        """Copy the filled steps (of the rows ``order`` picks, or all rows) into the spare buffer laid out with
        ``capacity`` steps, and make it the cache."""
        rows = order.size(0) if order is not None else self.k.size(1)
        size = self.layers * rows * self.heads * capacity * self.head_dim
        if self._spare is None or self._spare[0].numel() < size:
            self._spare = (self._flat[0].new_empty(size), self._flat[1].new_empty(size))
        filled = self.length
        new = []
        for old, flat in zip((self.k, self.v), self._spare):
            view = self._view(flat, rows, capacity)
            if order is None:
                view[:, :, :, :filled] = old[:, :, :, :filled]
            else:
                torch.index_select(old[:, :, :, :filled], 1, order, out=view[:, :, :, :filled])
            new.append(view)
        self._flat, self._spare = self._spare, self._flat
        self.k, self.v = new

    def reorder_encoder(self, order: Tensor) -> None:
        """Reorder the cross-attention keys/values; beam search needs this only when the batch shrinks."""
        self.encoder_kv = [(k.index_select(0, order), v.index_select(0, order)) for k, v in self.encoder_kv]


class _Stack(nn.Module):
    """Token + position embedding shared by the encoder and decoder."""

    def __init__(
        self, embed_tokens: nn.Embedding, dim: int, learned_pos: bool, max_positions: int, cfg: TransformerConfig
    ):
        super().__init__()
        self.padding_idx = embed_tokens.padding_idx if embed_tokens.padding_idx is not None else 1
        self.embed_tokens = embed_tokens
        self.embed_scale = 1.0 if cfg.no_scale_embedding else math.sqrt(dim)
        pos_cls = LearnedPositionalEmbedding if learned_pos else SinusoidalPositionalEmbedding
        self.embed_positions = pos_cls(max_positions, dim, self.padding_idx)
        self.max_positions = max_positions
        self.dropout = nn.Dropout(cfg.dropout)

    def embed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        return self.dropout(self.embed_scale * self.embed_tokens(tokens) + self.embed_positions(positions))


class TransformerEncoder(_Stack):
    def __init__(self, cfg: TransformerConfig, embed_tokens: nn.Embedding):
        d = cfg.encoder_embed_dim
        super().__init__(embed_tokens, d, cfg.encoder_learned_pos, cfg.max_source_positions, cfg)
        self.layers = nn.ModuleList(
            EncoderLayer(d, cfg.encoder_ffn_embed_dim, cfg.encoder_attention_heads, cfg, cfg.encoder_normalize_before)
            for _ in range(cfg.encoder_layers)
        )
        self.layer_norm = nn.LayerNorm(d) if cfg.encoder_normalize_before else None

    def forward(self, src_tokens: Tensor) -> EncoderOut:
        padding_mask = src_tokens.eq(self.padding_idx)
        x = self.embed(src_tokens, make_positions(src_tokens, self.padding_idx))
        x = x * (~padding_mask).unsqueeze(-1).type_as(x)
        enc = EncoderOut(x, padding_mask)
        mask = enc.attn_mask() if padding_mask.any() else None
        for layer in self.layers:
            x = layer(x, mask)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return EncoderOut(x, padding_mask)


class TransformerDecoder(_Stack):
    def __init__(
        self,
        cfg: TransformerConfig,
        embed_tokens: nn.Embedding,
        output_weight: Optional[nn.Parameter],
        no_encoder_attn: bool = False,
    ):
        d = cfg.decoder_embed_dim
        super().__init__(embed_tokens, d, cfg.decoder_learned_pos, cfg.max_target_positions, cfg)
        self.layers = nn.ModuleList(
            DecoderLayer(
                d,
                cfg.decoder_ffn_embed_dim,
                cfg.decoder_attention_heads,
                cfg,
                cfg.decoder_normalize_before,
                no_encoder_attn,
            )
            for _ in range(cfg.decoder_layers)
        )
        self.layer_norm = nn.LayerNorm(d) if cfg.decoder_normalize_before else None
        self.output_projection = nn.Linear(d, embed_tokens.num_embeddings, bias=False)
        if output_weight is not None:
            self.output_projection.weight = output_weight
        else:
            nn.init.normal_(self.output_projection.weight, mean=0, std=d**-0.5)
        self.num_heads = cfg.decoder_attention_heads
        self.head_dim = d // cfg.decoder_attention_heads

    def new_state(
        self, encoder_out: Optional[EncoderOut], max_len: int, batch_size: int = 0, group: int = 1
    ) -> DecoderState:
        """An empty incremental state for up to ``max_len`` decoding steps over this encoder output.

        Without an encoder (a language model) ``batch_size`` gives the number of rows. With ``group`` > 1 the
        decoder runs ``group`` consecutive rows per encoder row (a sentence's beams), sharing its cross-attention
        keys/values; ``forward`` then takes this un-expanded ``encoder_out``.
        """
        like = encoder_out.out if encoder_out is not None else self.embed_tokens.weight
        batch = encoder_out.out.size(0) * group if encoder_out is not None else batch_size
        state = DecoderState(len(self.layers), batch, self.num_heads, self.head_dim, max_len, like)
        if encoder_out is not None:
            # contiguous, so that every step's matmuls read them in place
            state.encoder_kv = []
            for layer in self.layers:
                k, v = layer.encoder_attn.project_kv(encoder_out.out)
                state.encoder_kv.append((k.contiguous(), v.contiguous()))
        return state

    def forward(
        self, prev_output_tokens: Tensor, encoder_out: Optional[EncoderOut], state: Optional[DecoderState] = None
    ) -> Tensor:
        """Logits [B, T, V]; with ``state``, only the newest token of ``prev_output_tokens`` is computed."""
        positions = make_positions(prev_output_tokens, self.padding_idx)
        tokens = prev_output_tokens
        if state is not None:
            tokens, positions = tokens[:, state.length :], positions[:, state.length :]
        x = self.embed(tokens, positions)
        mask = None
        if encoder_out is not None and encoder_out.padding_mask.any():
            mask = encoder_out.attn_mask()
        for i, layer in enumerate(self.layers):
            kv: Optional[Tensor | tuple[Tensor, Tensor]] = None
            if encoder_out is not None:
                kv = state.encoder_kv[i] if state is not None else encoder_out.out
            x = layer(x, kv, mask, state, i)
        if state is not None:
            state.advance(tokens.size(1))
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.output_projection(x)


def _embedding(num: int, dim: int, padding_idx: int) -> nn.Embedding:
    emb = nn.Embedding(num, dim, padding_idx=padding_idx)
    nn.init.normal_(emb.weight, mean=0, std=dim**-0.5)
    nn.init.zeros_(emb.weight[padding_idx])
    return emb


class TransformerModel(nn.Module):
    """fairseq's ``transformer``: ``model(src_tokens, src_lengths, prev_output_tokens)`` -> logits [B, T, V]."""

    def __init__(self, cfg: TransformerConfig, src_vocab_size: int, tgt_vocab_size: int, padding_idx: int = 1):
        super().__init__()
        self.cfg = cfg
        if cfg.share_all_embeddings:
            if src_vocab_size != tgt_vocab_size:
                raise ValueError(
                    f"model.share_all_embeddings needs one joined dictionary, got sizes {src_vocab_size} and "
                    f"{tgt_vocab_size}"
                )
            if cfg.encoder_embed_dim != cfg.decoder_embed_dim:
                raise ValueError("model.share_all_embeddings needs encoder_embed_dim == decoder_embed_dim")
            enc_emb = dec_emb = _embedding(src_vocab_size, cfg.encoder_embed_dim, padding_idx)
        else:
            enc_emb = _embedding(src_vocab_size, cfg.encoder_embed_dim, padding_idx)
            dec_emb = _embedding(tgt_vocab_size, cfg.decoder_embed_dim, padding_idx)
        shared_out = cfg.share_all_embeddings or cfg.share_decoder_input_output_embed
        self.encoder = TransformerEncoder(cfg, enc_emb)
        self.decoder = TransformerDecoder(cfg, dec_emb, dec_emb.weight if shared_out else None)

    @classmethod
    def build(cls, src_vocab_size: int, tgt_vocab_size: int, padding_idx: int = 1, **cfg: Any) -> TransformerModel:
        """The ``_target_`` of ``model=transformer``: Hydra passes the config's fields, the task the vocab sizes."""
        return cls(TransformerConfig(**cfg), src_vocab_size, tgt_vocab_size, padding_idx)

    def max_positions(self) -> tuple[int, int]:
        return self.cfg.max_source_positions, self.cfg.max_target_positions

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, prev_output_tokens: Tensor) -> Tensor:
        return self.decoder(prev_output_tokens, self.encoder(src_tokens))

    @staticmethod
    def get_normalized_probs(logits: Tensor, log_probs: bool = True) -> Tensor:
        """Log-probabilities (or probabilities) in fp32, whatever precision the logits have."""
        return F.log_softmax(logits.float(), dim=-1) if log_probs else F.softmax(logits.float(), dim=-1)
