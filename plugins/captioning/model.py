"""CNN encoder + LSTM decoder captioner ("show and tell"): the image feature is the decoder's first input token.

Training: the decoder reads ``prev_output_tokens`` (``</s> w1 .. wn``) with the embedding of the leading ``</s>``
replaced by the image feature, and predicts ``w1 .. wn </s>``. Generation goes through runner's beam search, which
needs only ``model.encoder(src) -> out`` with ``out.reorder(rows)``, ``model.decoder(tokens, out, state)`` returning
logits [R, T, V] (with a state, only for the tokens it has not seen), and ``decoder.new_state(out, max_len)`` with
``reorder_self_attn(rows)`` / ``reorder_encoder(rows)``. Here the state is the LSTM's (h, c).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import CnnLstmConfig


@dataclass
class ImageFeatures:
    """One feature vector [B, E] per image: the encoder's output."""

    features: Tensor

    def reorder(self, order: Tensor) -> ImageFeatures:
        return ImageFeatures(self.features.index_select(0, order))


class LstmState:
    """Incremental decoding state: the LSTM's hidden and cell states and how many positions they have consumed."""

    def __init__(self, h: Tensor, c: Tensor):
        self.h, self.c = h, c  # [layers, R, H]
        self.length = 0

    def reorder_self_attn(self, order: Tensor) -> None:
        """Follow the beam: row ``i`` continues from row ``order[i]`` (the batch may shrink)."""
        self.h, self.c = self.h.index_select(1, order), self.c.index_select(1, order)

    def reorder_encoder(self, order: Tensor) -> None:
        """Nothing to do: the image feature was consumed at the first step and lives on in (h, c)."""


class ImageEncoder(nn.Module):
    """3x3 stride-2 convolutions with ReLU, global average pooling and a projection to the embedding size."""

    def __init__(self, channels: list[int], embed_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for out_ch in channels:
            layers += [nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU()]
            in_ch = out_ch
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(in_ch, embed_dim)

    def forward(self, src_tokens: Tensor) -> ImageFeatures:
        """``src_tokens``: the images [B, 3, H, W] (the batch dictionary's source slot)."""
        x = self.convs(src_tokens.to(self.proj.weight.dtype))
        return ImageFeatures(self.proj(x.mean(dim=(2, 3))))


class LstmDecoder(nn.Module):
    """Token embeddings -> LSTM -> vocabulary logits, with the image feature at position 0."""

    def __init__(self, cfg: CnnLstmConfig, vocab_size: int, padding_idx: int):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=padding_idx)
        self.lstm = nn.LSTM(
            cfg.embed_dim,
            cfg.hidden_dim,
            cfg.layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.output_projection = nn.Linear(cfg.hidden_dim, vocab_size)

    def new_state(self, encoder_out: ImageFeatures, max_len: int, group: int = 1) -> LstmState:
        """An empty state for ``group`` decoder rows per image (a sentence's beams); ``max_len`` is not needed."""
        rows = encoder_out.features.size(0) * group
        zeros = encoder_out.features.new_zeros(self.lstm.num_layers, rows, self.lstm.hidden_size)
        return LstmState(zeros, zeros.clone())

    def forward(
        self, prev_output_tokens: Tensor, encoder_out: ImageFeatures, state: Optional[LstmState] = None
    ) -> Tensor:
        """Logits [B, T, V]; with ``state``, only for the positions after ``state.length``."""
        start = state.length if state is not None else 0
        x = self.embed_tokens(prev_output_tokens[:, start:])
        if start == 0:  # position 0 is the image, not the </s> that starts prev_output_tokens
            features = encoder_out.features
            if features.size(0) != x.size(0):  # beam search: consecutive rows share their sentence's image
                features = features.repeat_interleave(x.size(0) // features.size(0), dim=0)
            x = torch.cat([features.unsqueeze(1).to(x.dtype), x[:, 1:]], dim=1)
        x = self.dropout(x)
        if state is None:
            out, _ = self.lstm(x)
        else:
            out, (state.h, state.c) = self.lstm(x, (state.h, state.c))
            state.length += x.size(1)
        return self.output_projection(self.dropout(out))


class CaptioningModel(nn.Module):
    """The encoder-decoder pair with the interface the criteria, trainer and beam search use."""

    def __init__(self, cfg: CnnLstmConfig, vocab_size: int, padding_idx: int = 1):
        super().__init__()
        self.cfg = cfg
        self.encoder = ImageEncoder(list(cfg.channels), cfg.embed_dim)
        self.decoder = LstmDecoder(cfg, vocab_size, padding_idx)

    @classmethod
    def build(
        cls, tgt_vocab_size: int, padding_idx: int = 1, src_vocab_size: Optional[int] = None, **cfg: Any
    ) -> CaptioningModel:
        """Build from config fields; ``src_vocab_size`` is accepted for the seq2seq signature and unused (pixels)."""
        return cls(CnnLstmConfig(**cfg), tgt_vocab_size, padding_idx)

    def max_positions(self) -> tuple[int, int]:
        """One source position (the image) and the longest caption."""
        return 1, self.cfg.max_target_positions

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, prev_output_tokens: Tensor) -> Tensor:
        return self.decoder(prev_output_tokens, self.encoder(src_tokens))

    @staticmethod
    def get_normalized_probs(logits: Tensor, log_probs: bool = True) -> Tensor:
        return F.log_softmax(logits.float(), dim=-1) if log_probs else F.softmax(logits.float(), dim=-1)
