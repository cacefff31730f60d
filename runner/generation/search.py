"""Beam search and sampling over an encoder-decoder model, with fairseq's scoring and stopping rules.

Definitions (shared/notes/fairseq-formats.md), so that scores compare with fairseq's:

- a hypothesis' score is the sum of its token log-probabilities (``</s>`` included) divided by
  ``length ** lenpen``, where the length counts ``</s>``;
- every step keeps ``2 * beam`` candidates per sentence; a candidate ending in ``</s>`` is finished only when it ranks
  within the top ``beam``, and the next step continues the best ``beam`` candidates that did not end;
- a sentence is done when ``beam`` hypotheses finished or it reached its own maximum length
  ``max_len_a * source_length + max_len_b`` (per sentence, not per padded batch); before ``min_len`` tokens ``</s>``
  is blocked, at the maximum only ``</s>`` is allowed, ``<pad>`` is never chosen, ``unkpen`` is subtracted from
  ``<unk>``'s log-probability and logits are divided by ``temperature``.

Sampling draws ``beam`` independent hypotheses per sentence (top-k / top-p filtered), each scored like a beam
hypothesis with its log-probability under the unfiltered distribution. Finished sentences leave the batch, and the
decoder keeps its keys/values in a preallocated cache (``DecoderState``) that is reordered, never concatenated.

Per-step cost (beam search with the cache): the encoder output and its cross-attention keys/values stay at one row
per sentence, shared by the sentence's beams; candidates come from a per-row top-``2 * beam`` of the log-probs
(adding a row's running score does not change its ranking) before the top ``2 * beam`` per sentence, so no
full-vocabulary tensor is built besides the log-probs themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from runner.config import GenerationConfig

NEG_INF = -math.inf


@dataclass
class Hypothesis:
    """One finished output: ids ending in ``</s>``, the normalised score and per-token log-probs (natural log)."""

    tokens: Tensor
    score: float
    positional_scores: Tensor


@dataclass
class BeamChoice:
    """The rows a beam step continues (``rows`` index the current batch), their new tokens and cumulative scores,
    and, when finished sentences leave the batch, the sentences that stay (``alive``, indexing the current
    sentences) and the row order that shrinks a per-row encoder side."""

    rows: Tensor
    tokens: Tensor
    scores: Tensor
    encoder_order: Optional[Tensor]
    alive: Optional[Tensor] = None


def validate(cfg: GenerationConfig) -> None:
    """Reject settings that cannot work, naming the option."""
    if cfg.beam < 1:
        raise ValueError(f"generation.beam must be >= 1, got {cfg.beam}")
    if not 1 <= cfg.nbest <= cfg.beam:
        raise ValueError(f"generation.nbest must be between 1 and generation.beam ({cfg.beam}), got {cfg.nbest}")
    if cfg.temperature <= 0:
        raise ValueError(f"generation.temperature must be > 0, got {cfg.temperature}")
    if cfg.sampling_topp > 1:
        raise ValueError(f"generation.sampling_topp must be <= 1, got {cfg.sampling_topp}")
    if cfg.min_len < 0 or cfg.max_len_b < 0 or cfg.max_len_a < 0:
        raise ValueError("generation.min_len, max_len_a and max_len_b must be >= 0")
    if (cfg.sampling_topk > 0 or cfg.sampling_topp > 0) and not cfg.sampling:
        raise ValueError("generation.sampling_topk/sampling_topp need generation.sampling=true")


class SequenceGenerator:
    """Generates from ``model.encoder(src_tokens)`` and ``model.decoder(prev_output_tokens, encoder_out, state)``."""

    def __init__(self, model: nn.Module, cfg: GenerationConfig, pad: int, eos: int, unk: int):
        validate(cfg)
        self.model = model
        self.cfg = cfg
        self.pad, self.eos, self.unk = pad, eos, unk
        self.max_target_positions = int(model.max_positions()[1])
        self.rng = torch.Generator().manual_seed(cfg.seed)

    def max_lengths(self, src_lengths: Tensor) -> Tensor:
        """Per-sentence cap on generated tokens (``</s>`` excluded), within the decoder's positions."""
        c = self.cfg
        lens = (c.max_len_a * src_lengths.double() + c.max_len_b).floor().long()
        return lens.clamp(min=0, max=self.max_target_positions - 1)

    @torch.inference_mode()
    def generate(
        self, src_tokens: Tensor, prefix_tokens: Optional[Tensor] = None, src_lengths: Optional[Tensor] = None
    ) -> list[list[Hypothesis]]:
        """The ``nbest`` best hypotheses of every row of ``src_tokens`` [B, S] (left-padded), best first.

        A source that is not token ids (e.g. images [B, 3, H, W]) comes with its ``src_lengths`` [B].
        """
        c = self.cfg
        self.model.eval()
        bsz, k = src_tokens.size(0), c.beam
        device = src_tokens.device
        if src_lengths is None:
            src_lengths = src_tokens.ne(self.pad).sum(1)
        max_lens = self.max_lengths(src_lengths).to(device)
        steps = int(max_lens.max())
        rows = torch.arange(bsz, device=device).repeat_interleave(k)  # sentence of each row
        encoder_out = self.model.encoder(src_tokens)
        decoder = self.model.decoder
        # Beam search keeps each sentence's k rows together: they share one row of the encoder side.
        grouped = c.use_cache and not c.sampling and k > 1
        if grouped:
            state: Optional[Any] = decoder.new_state(encoder_out, steps + 1, group=k)
        else:
            encoder_out = encoder_out.reorder(rows)
            state = decoder.new_state(encoder_out, steps + 1) if c.use_cache else None
        tokens = torch.full((bsz * k, steps + 2), self.pad, dtype=torch.long, device=device)
        tokens[:, 0] = self.eos
        scores = torch.zeros(bsz * k, steps + 1, device=device)  # cumulative log-probs after each step
        if prefix_tokens is not None:
            prefix_tokens = prefix_tokens.to(device)
        finalized: list[list[Hypothesis]] = [[] for _ in range(bsz)]
        for step in range(steps + 1):
            # At step 0 a sentence's k rows are identical: the grouped decoder runs one row per sentence
            # (a cache of one row each), and beam_step expands the sentence from it.
            live = slice(None, None, k) if grouped and step == 0 else slice(None)
            if grouped and step == 0:
                state.reorder_self_attn(torch.arange(bsz, device=device))
            logits = decoder(tokens[live, : step + 1], encoder_out, state)[:, -1, :]
            if c.temperature != 1.0:
                logits = logits / c.temperature
            lprobs = torch.log_softmax(logits.float(), dim=-1)
            row_max = max_lens[rows]
            prefix = prefix_tokens[rows[live]] if prefix_tokens is not None else None
            self.constrain(lprobs, tokens[live], step, row_max[live], prefix)
            if c.sampling:
                keep = self.sample_step(lprobs, tokens, scores, rows, step, finalized)
                if keep is None:
                    break
                if keep.numel() == rows.numel():
                    continue  # every row goes on: nothing to reorder
                tokens, scores, rows = tokens[keep], scores[keep], rows[keep]
                encoder_order: Optional[Tensor] = keep
            else:
                chosen = self.beam_step(lprobs, tokens, scores, rows, step, row_max, finalized)
                if chosen is None:
                    break
                keep, encoder_order = chosen.rows, chosen.encoder_order
                tokens, scores, rows = tokens[keep], scores[keep], rows[keep]
                tokens[:, step + 1], scores[:, step] = chosen.tokens, chosen.scores
            if grouped:
                encoder_order = chosen.alive
            if state is not None:
                state.reorder_self_attn(keep // k if grouped and step == 0 else keep)
                if encoder_order is not None:
                    state.reorder_encoder(encoder_order)
            if encoder_order is not None:
                encoder_out = encoder_out.reorder(encoder_order)
        for hyps in finalized:
            hyps.sort(key=lambda h: h.score, reverse=True)
            del hyps[c.nbest :]
        return finalized

    # ------------------------------------------------------------------------------------------- constraints
    def constrain(self, lprobs: Tensor, tokens: Tensor, step: int, row_max: Tensor, prefix: Optional[Tensor]) -> None:
        """Apply pad/unk/min/max-length, prefix and n-gram rules to this step's log-probs, in place."""
        c = self.cfg
        lprobs[:, self.pad] = NEG_INF
        if c.unkpen:
            lprobs[:, self.unk] -= c.unkpen
        at_max = row_max.le(step)
        eos_lprob = lprobs[:, self.eos].clone() if bool(at_max.any()) else None
        if prefix is not None and step < prefix.size(1):
            forced = prefix[:, step]
            rows = forced.ne(self.pad) & ~at_max
            if bool(rows.any()):
                kept = lprobs[rows].gather(1, forced[rows].unsqueeze(1))
                masked = torch.full_like(lprobs[rows], NEG_INF).scatter_(1, forced[rows].unsqueeze(1), kept)
                lprobs[rows] = masked
        if step < c.min_len:
            lprobs[:, self.eos] = NEG_INF
        if c.no_repeat_ngram_size > 0:
            self.block_ngrams(lprobs, tokens, step)
        if eos_lprob is not None:
            lprobs[at_max] = NEG_INF
            lprobs[at_max, self.eos] = eos_lprob[at_max]

    def block_ngrams(self, lprobs: Tensor, tokens: Tensor, step: int) -> None:
        """Forbid any token that would repeat an n-gram already in the hypothesis (``</s>`` start included)."""
        n = self.cfg.no_repeat_ngram_size
        length = step + 1
        if length < n:
            return
        seen = tokens[:, :length].unfold(1, n, 1)  # [R, W, n]
        if n == 1:
            match = torch.ones(seen.shape[:2], dtype=torch.bool, device=tokens.device)
        else:
            match = seen[:, :, :-1].eq(tokens[:, length - n + 1 : length].unsqueeze(1)).all(-1)
        row, window = match.nonzero(as_tuple=True)
        if row.numel():
            lprobs[row, seen[row, window, -1]] = NEG_INF

    # ---------------------------------------------------------------------------------------------- search
    def beam_step(
        self,
        lprobs: Tensor,
        tokens: Tensor,
        scores: Tensor,
        rows: Tensor,
        step: int,
        row_max: Tensor,
        finalized: list[list[Hypothesis]],
    ) -> Optional[BeamChoice]:
        """One beam step: finish top-beam ``</s>`` candidates, pick the rows to continue; None when all are done.

        At step 0 ``lprobs`` may hold one row per sentence instead of ``beam`` identical ones.
        """
        k, vocab = self.cfg.beam, lprobs.size(1)
        n = tokens.size(0) // k
        # A sentence's top 2k candidates are among its rows' own top 2k: rank per row, then per sentence.
        per_row = min(2 * k, vocab)
        row_scores, row_tokens = lprobs.topk(per_row, dim=1)  # [rows, per_row]
        if step == 0:  # all beams are identical at the start: expand only the first
            first_scores, first_tokens = row_scores.view(n, -1, per_row)[:, 0], row_tokens.view(n, -1, per_row)[:, 0]
            row_scores = first_scores.new_full((n, k, per_row), NEG_INF)
            row_scores[:, 0] = first_scores
            row_tokens = first_tokens.unsqueeze(1).expand(n, k, per_row)
        else:
            row_scores += scores[:, step - 1 : step]
        cand_scores, cand_idx = row_scores.reshape(n, k * per_row).topk(2 * k)
        cand_beams = torch.div(cand_idx, per_row, rounding_mode="floor")
        cand_tokens = row_tokens.reshape(n, k * per_row).gather(1, cand_idx)
        cand_rows = cand_beams + torch.arange(n, device=lprobs.device).unsqueeze(1) * k
        ended = cand_tokens.eq(self.eos) & cand_scores.ne(NEG_INF)
        done = row_max.view(n, k)[:, 0].le(step)  # at its max length a sentence finishes this step
        top_ended = ended[:, :k]
        if bool(top_ended.any()):
            for b, col in top_ended.nonzero().tolist():
                sent = int(rows[b * k])
                if len(finalized[sent]) < k:
                    row = int(cand_rows[b, col])
                    finalized[sent].append(self._hypothesis(tokens[row], scores[row], step, float(cand_scores[b, col])))
            counts = torch.tensor([len(finalized[int(rows[b * k])]) for b in range(n)], device=lprobs.device)
            done = done | counts.ge(k)
        if bool(done.all()):
            return None
        # the best k candidates that did not end (ended ones sort last)
        rank = ended.long() * (2 * k) + torch.arange(2 * k, device=lprobs.device)
        pick = rank.topk(k, dim=1, largest=False).indices
        next_rows = cand_rows.gather(1, pick)
        next_tokens, next_scores = cand_tokens.gather(1, pick), cand_scores.gather(1, pick)
        encoder_order = alive = None
        if bool(done.any()):
            alive = (~done).nonzero().squeeze(1)
            next_rows, next_tokens, next_scores = next_rows[alive], next_tokens[alive], next_scores[alive]
            encoder_order = (alive.unsqueeze(1) * k + torch.arange(k, device=lprobs.device)).view(-1)
        return BeamChoice(next_rows.reshape(-1), next_tokens.reshape(-1), next_scores.reshape(-1), encoder_order, alive)

    def sample_step(
        self,
        lprobs: Tensor,
        tokens: Tensor,
        scores: Tensor,
        rows: Tensor,
        step: int,
        finalized: list[list[Hypothesis]],
    ) -> Optional[Tensor]:
        """One sampling step: every row draws its next token; rows that drew ``</s>`` finish and leave the batch."""
        c = self.cfg
        probs = self.filtered_probs(lprobs)
        dead = probs.sum(1).le(0)  # every token forbidden: the hypothesis cannot continue
        probs[dead, self.eos] = 1.0
        drawn = torch.multinomial(probs.cpu(), 1, generator=self.rng).to(lprobs.device).squeeze(1)
        step_scores = lprobs.gather(1, drawn.unsqueeze(1)).squeeze(1)
        cum = step_scores if step == 0 else scores[:, step - 1] + step_scores
        tokens[:, step + 1] = drawn
        scores[:, step] = cum
        ended = drawn.eq(self.eos)
        for row in ended.nonzero().squeeze(1).tolist():
            if math.isfinite(float(cum[row])) and len(finalized[int(rows[row])]) < c.beam:
                finalized[int(rows[row])].append(self._hypothesis(tokens[row], scores[row], step, float(cum[row])))
        keep = (~ended).nonzero().squeeze(1)
        return keep if keep.numel() else None

    def filtered_probs(self, lprobs: Tensor) -> Tensor:
        """Probabilities to sample from: top-k, then top-p (the smallest set reaching p), unnormalised."""
        c = self.cfg
        probs = lprobs.exp()
        if 0 < c.sampling_topk < probs.size(1):
            kth = probs.topk(c.sampling_topk, dim=1).values[:, -1:]
            probs = probs.masked_fill(probs < kth, 0.0)
        if 0 < c.sampling_topp < 1:
            sorted_probs, order = probs.sort(dim=1, descending=True)
            total = sorted_probs.sum(1, keepdim=True).clamp_min(1e-30)
            before = (sorted_probs.cumsum(1) - sorted_probs) / total  # mass of strictly better tokens
            sorted_probs = sorted_probs.masked_fill(before >= c.sampling_topp, 0.0)
            probs = torch.zeros_like(probs).scatter_(1, order, sorted_probs)
        return probs

    def _hypothesis(self, row_tokens: Tensor, row_scores: Tensor, step: int, final_score: float) -> Hypothesis:
        """A finished hypothesis of ``step + 1`` tokens whose last (``</s>``) brings the total to ``final_score``."""
        ids = torch.cat([row_tokens[1 : step + 1], row_tokens.new_tensor([self.eos])]).cpu()
        cum = torch.cat([row_scores[:step].cpu(), torch.tensor([final_score])])
        positional = cum - torch.cat([torch.zeros(1), cum[:-1]])
        return Hypothesis(ids, final_score / (step + 1) ** self.cfg.lenpen, positional)


def strip_pad(ids: Tensor, pad: int) -> Tensor:
    """The non-pad entries of a 1-D id tensor."""
    return ids[ids.ne(pad)]


def describe(cfg: GenerationConfig) -> dict[str, Any]:
    """The settings that shape the output, for logs and result records."""
    return {k: getattr(cfg, k) for k in ("beam", "nbest", "lenpen", "min_len", "max_len_a", "max_len_b", "sampling")}
