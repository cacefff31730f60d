"""fairseq's ``transformer_lm``: the transformer decoder without cross-attention, predicting the next token.

Parameter names match fairseq's (``decoder.layers.0.self_attn.q_proj.weight``, ``decoder.output_projection.weight``).
The forward signature follows the translation model's batch contract: ``net_input`` holds ``src_tokens`` (the
input block) and ``src_lengths``; the target is the same block shifted by one token.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from runner.config import TransformerConfig, TransformerLMConfig
from runner.models.transformer import DecoderState, TransformerDecoder, _embedding


def _decoder_config(cfg: TransformerLMConfig) -> TransformerConfig:
    """The decoder half of a TransformerConfig carrying the LM's settings (every field the two schemas share)."""
    shared = {f.name for f in fields(TransformerConfig)} & {f.name for f in fields(TransformerLMConfig)}
    return TransformerConfig(**{name: getattr(cfg, name) for name in shared - {"_target_"}})


class TransformerLanguageModel(nn.Module):
    """``model(src_tokens, src_lengths)`` -> next-token logits [B, T, V]."""

    def __init__(self, cfg: TransformerLMConfig, vocab_size: int, padding_idx: int = 1):
        super().__init__()
        self.cfg = cfg
        emb = _embedding(vocab_size, cfg.decoder_embed_dim, padding_idx)
        shared = emb.weight if cfg.share_decoder_input_output_embed else None
        self.decoder = TransformerDecoder(_decoder_config(cfg), emb, shared, no_encoder_attn=True)

    @classmethod
    def build(cls, vocab_size: int, padding_idx: int = 1, **cfg: Any) -> TransformerLanguageModel:
        """The ``_target_`` of ``model=transformer_lm``: Hydra passes the config's fields, the task the vocab size."""
        return cls(TransformerLMConfig(**cfg), vocab_size, padding_idx)

    def max_positions(self) -> tuple[int, int]:
        """(input, target) lengths the model can take: both the decoder's positions."""
        return self.cfg.max_target_positions, self.cfg.max_target_positions

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None) -> Tensor:
        return self.decoder(src_tokens, None)

    def new_state(self, batch_size: int, max_len: int) -> DecoderState:
        """An empty key/value cache for incremental scoring or sampling."""
        return self.decoder.new_state(None, max_len, batch_size)

    @staticmethod
    def get_normalized_probs(logits: Tensor, log_probs: bool = True) -> Tensor:
        """Log-probabilities (or probabilities) in fp32, whatever precision the logits have."""
        return F.log_softmax(logits.float(), dim=-1) if log_probs else F.softmax(logits.float(), dim=-1)
