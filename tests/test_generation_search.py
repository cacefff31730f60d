"""The sequence generator on tiny random models: beam search against exhaustive search, cached against uncached
decoding, greedy = beam 1, per-sentence length limits, and every search option."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from runner.config import GenerationConfig, TransformerConfig
from runner.generation.search import SequenceGenerator
from runner.models.transformer import TransformerModel

PAD, EOS, UNK = 1, 2, 3


def tiny_model(vocab: int, seed: int = 0, dim: int = 16) -> TransformerModel:
    torch.manual_seed(seed)
    cfg = TransformerConfig(
        encoder_embed_dim=dim,
        decoder_embed_dim=dim,
        encoder_ffn_embed_dim=2 * dim,
        decoder_ffn_embed_dim=2 * dim,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        dropout=0.0,
        max_source_positions=32,
        max_target_positions=32,
    )
    model = TransformerModel(cfg, vocab, vocab).eval()
    with torch.no_grad():  # sharper distributions than the initialisation gives, so that the search matters
        model.decoder.output_projection.weight.mul_(8.0)
    return model


def gen(model: nn.Module, **kw) -> SequenceGenerator:
    return SequenceGenerator(model, GenerationConfig(**kw), PAD, EOS, UNK)


def sequence_logprob(model: TransformerModel, src: torch.Tensor, hyp: list[int]) -> float:
    """Teacher-forced sum of log-probs of ``hyp`` (ending in </s>) given ``src`` [S]."""
    prev = torch.tensor([[EOS, *hyp[:-1]]])
    with torch.no_grad():
        lprobs = torch.log_softmax(model(src.unsqueeze(0), None, prev).float(), -1)[0]
    return float(lprobs.gather(1, torch.tensor(hyp).unsqueeze(1)).sum())


def left_pad(rows: list[list[int]]) -> torch.Tensor:
    width = max(map(len, rows))
    return torch.tensor([[PAD] * (width - len(r)) + r for r in rows])


def test_beam_search_equals_exhaustive_search_when_the_beam_holds_every_prefix():
    vocab = 7  # <s> <pad> </s> <unk> + 3 words: 5 tokens besides </s> and <pad> can follow any prefix
    model = tiny_model(vocab)
    srcs = left_pad([[4, 5, EOS], [6, EOS]])  # lengths 3 and 2: with max_len_a=1, max lengths 3 and 2
    lenpen = 0.7
    # 5 + 25 + 150 candidates at most per step, 155 finished hypotheses: a beam of 160 loses none of them
    hyps = gen(model, beam=160, nbest=6, max_len_a=1.0, max_len_b=0, min_len=1, lenpen=lenpen).generate(srcs)
    words = [0, UNK, 4, 5, 6]
    for b, max_len in ((0, 3), (1, 2)):
        src = srcs[b][srcs[b].ne(PAD)]
        exhaustive = []
        for n in range(1, max_len + 1):  # min_len=1 forbids the empty output
            for seq in itertools.product(words, repeat=n):
                hyp = [*seq, EOS]
                exhaustive.append((sequence_logprob(model, src, hyp) / len(hyp) ** lenpen, hyp))
        exhaustive.sort(key=lambda x: -x[0])
        got = hyps[b]
        assert [h.tokens.tolist() for h in got] == [hyp for _, hyp in exhaustive[:6]]
        for h, (score, _) in zip(got, exhaustive):
            assert h.score == pytest.approx(score, abs=1e-4)
            assert float(h.positional_scores.sum()) == pytest.approx(score * len(h.tokens) ** lenpen, abs=1e-4)
        assert all(len(h.tokens) - 1 <= max_len for h in got)


def test_small_beam_keeps_fairseq_definitions_finished_only_within_top_beam():
    model = tiny_model(30, seed=3)
    src = left_pad([[5, 6, 7, 8, EOS]])
    hyps = gen(model, beam=3, nbest=3, max_len_b=6, lenpen=1.0).generate(src)[0]
    assert len(hyps) == 3
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    for h in hyps:  # the reported score is the length-normalised teacher-forced log-probability
        assert h.tokens[-1] == EOS and EOS not in h.tokens[:-1].tolist() and PAD not in h.tokens.tolist()
        lp = sequence_logprob(model, src[0], h.tokens.tolist())
        assert h.score == pytest.approx(lp / len(h.tokens), abs=1e-4)


def greedy_reference(model: TransformerModel, src: torch.Tensor, max_len: int) -> list[int]:
    out = [EOS]
    for step in range(max_len + 1):
        with torch.no_grad():
            lprobs = torch.log_softmax(model(src.unsqueeze(0), None, torch.tensor([out]))[0, -1], -1)
        lprobs[PAD] = -math.inf
        if step == max_len:
            return out[1:] + [EOS]
        if step < 1:
            lprobs[EOS] = -math.inf
        tok = int(lprobs.argmax())
        out.append(tok)
        if tok == EOS:
            return out[1:]
    raise AssertionError("unreachable")


def test_greedy_is_beam_one():
    model = tiny_model(40, seed=1)
    srcs = left_pad([[4, 9, 11, EOS], [20, EOS], [7, 7, 7, 7, 7, EOS]])
    hyps = gen(model, beam=1, max_len_b=8).generate(srcs)
    for b in range(3):
        assert hyps[b][0].tokens.tolist() == greedy_reference(model, srcs[b][srcs[b].ne(PAD)], 8)


@pytest.mark.parametrize("sampling", [False, True])
def test_cached_and_uncached_decoding_agree(sampling: bool):
    model = tiny_model(60, seed=2)
    srcs = left_pad([[4, 9, 11, 30, EOS], [20, EOS], [7, 8, 9, 7, 8, 9, EOS], [50, 51, EOS]])
    kw = dict(beam=4, nbest=4, max_len_a=1.5, max_len_b=2, sampling=sampling, seed=7, no_repeat_ngram_size=3)
    if sampling:
        kw.update(sampling_topk=10)
    cached = gen(model, use_cache=True, **kw).generate(srcs)
    uncached = gen(model, use_cache=False, **kw).generate(srcs)
    for a, b in zip(cached, uncached):
        assert [h.tokens.tolist() for h in a] == [h.tokens.tolist() for h in b]
        for ha, hb in zip(a, b):
            assert ha.score == pytest.approx(hb.score, abs=1e-5)
            assert torch.allclose(ha.positional_scores, hb.positional_scores, atol=1e-5)


def test_max_len_is_per_sentence_and_min_len_blocks_eos():
    model = tiny_model(40, seed=4)
    srcs = left_pad([[4, EOS], [5, 6, 7, 8, 9, 10, EOS], [11, 12, 13, EOS]])
    # min_len above every max: each sentence runs exactly to its own max_len_a * src_len + max_len_b
    hyps = gen(model, beam=3, nbest=3, min_len=100, max_len_a=1.0, max_len_b=1).generate(srcs)
    for b, src_len in enumerate((2, 7, 4)):
        assert {len(h.tokens) - 1 for h in hyps[b]} == {src_len + 1}
    hyps = gen(model, beam=3, nbest=3, min_len=5, max_len_b=12).generate(srcs)
    assert all(len(h.tokens) - 1 >= 5 for hs in hyps for h in hs)


def repeated_bigram(tokens: list[int]) -> bool:
    grams = list(zip(tokens, tokens[1:]))
    return len(grams) != len(set(grams))


def test_no_repeat_ngram_blocks_repeats():
    model = tiny_model(12, seed=5)
    srcs = left_pad([[4, 5, EOS], [6, EOS], [7, 8, 9, EOS]])
    free = gen(model, beam=2, nbest=2, min_len=10, max_len_b=10).generate(srcs)
    assert any(repeated_bigram([EOS, *h.tokens.tolist()]) for hs in free for h in hs)  # the test can fail
    blocked = gen(model, beam=2, nbest=2, min_len=10, max_len_b=10, no_repeat_ngram_size=2).generate(srcs)
    assert not any(repeated_bigram([EOS, *h.tokens.tolist()]) for hs in blocked for h in hs)


class BiasedLogits(nn.Module):
    """Wraps a model so that one token's logit is raised: a model that loves ``<unk>``."""

    def __init__(self, model: TransformerModel, token: int, bias: float):
        super().__init__()
        self.inner, self.token, self.bias = model, token, bias
        self.encoder = model.encoder
        outer = self

        class Decoder(nn.Module):
            def new_state(self, encoder_out, max_len, **kw):
                return model.decoder.new_state(encoder_out, max_len, **kw)

            def forward(self, prev, encoder_out, state=None):
                logits = model.decoder(prev, encoder_out, state).clone()
                logits[..., outer.token] += outer.bias
                return logits

        self.decoder = Decoder()

    def max_positions(self) -> tuple[int, int]:
        return self.inner.max_positions()


def test_unkpen_and_prefix_tokens():
    model = BiasedLogits(tiny_model(20, seed=6), UNK, 30.0)
    srcs = left_pad([[4, 5, EOS], [6, EOS]])
    loves_unk = gen(model, beam=2, max_len_b=4).generate(srcs)
    assert all(UNK in h.tokens.tolist() for hs in loves_unk for h in hs)
    penalised = gen(model, beam=2, max_len_b=4, unkpen=1000.0).generate(srcs)
    assert not any(UNK in h.tokens.tolist() for hs in penalised for h in hs)
    prefix = torch.tensor([[7, 8], [9, PAD]])
    forced = gen(model, beam=3, nbest=3, max_len_b=5, unkpen=1000.0).generate(srcs, prefix)
    assert all(h.tokens[:2].tolist() == [7, 8] for h in forced[0])
    assert all(h.tokens[0] == 9 for h in forced[1])


def test_sampling_options():
    model = tiny_model(50, seed=8)
    srcs = left_pad([[4, 5, EOS], [6, 7, 8, 9, EOS]])
    greedy = gen(model, beam=1, max_len_b=8).generate(srcs)
    for kw in (dict(sampling_topk=1), dict(sampling_topp=1e-6)):  # a filter keeping one token is greedy
        sampled = gen(model, beam=1, max_len_b=8, sampling=True, **kw).generate(srcs)
        assert [h[0].tokens.tolist() for h in sampled] == [h[0].tokens.tolist() for h in greedy]
    a = gen(model, beam=6, nbest=6, max_len_b=8, sampling=True, seed=3, temperature=1.5).generate(srcs)
    b = gen(model, beam=6, nbest=6, max_len_b=8, sampling=True, seed=3, temperature=1.5).generate(srcs)
    c = gen(model, beam=6, nbest=6, max_len_b=8, sampling=True, seed=4, temperature=1.5).generate(srcs)
    toks = lambda hs: [[h.tokens.tolist() for h in x] for x in hs]  # noqa: E731
    assert toks(a) == toks(b) and toks(a) != toks(c)
    assert all(len(x) == 6 and [h.score for h in x] == sorted((h.score for h in x), reverse=True) for x in a)
    # top-k: every sampled token is among the k most likely at its step
    topk = gen(model, beam=4, nbest=4, max_len_b=6, sampling=True, sampling_topk=3).generate(srcs[:1])[0]
    src = srcs[0][srcs[0].ne(PAD)]
    for h in topk:
        prev = torch.tensor([[EOS, *h.tokens.tolist()[:-1]]])
        with torch.no_grad():
            logits = model(src.unsqueeze(0), None, prev)[0]
        logits[:, PAD] = -math.inf
        logits[0, EOS] = -math.inf  # min_len=1
        ranks = (logits > logits.gather(1, h.tokens.unsqueeze(1))).sum(1)
        assert int(ranks[:-1].max()) < 3 or len(h.tokens) == 7  # the last step at max_len is forced </s>


def test_invalid_options_are_named():
    model = tiny_model(10)
    with pytest.raises(ValueError, match="generation.nbest"):
        gen(model, beam=2, nbest=3)
    with pytest.raises(ValueError, match="generation.temperature"):
        gen(model, temperature=0)
    with pytest.raises(ValueError, match="sampling_topk"):
        gen(model, sampling_topk=5)
