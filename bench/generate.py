"""Benchmark of runner's SequenceGenerator against Hugging Face transformers' ``generate`` on a Marian model of
identical shape (an optional, bench-only dependency: ``pip install transformers``; no weights are downloaded, both
models are randomly initialised from configs).

Measured, for the ``tiny`` and ``iwslt`` presets:
- throughput: sentences/s, beam 5, batch 128, every hypothesis exactly 20 tokens + ``</s>`` (min_len = max_len = 20 for
  runner; ``min_new_tokens = max_new_tokens = 21`` for Hugging Face, i.e. the same 21 decoder steps);
- latency at batch 1 (beam 5): milliseconds per generated token, and its ratio to one incremental decoder forward pass
  over the 5 beam rows (the floor a search loop can reach; the goal is <= 1.5x).

Both systems run in one process with the same thread count, in eval mode under ``torch.inference_mode`` (HF with
``use_cache=True``), and alternate within each timing round, so that load from other jobs on a shared machine falls
on both alike; each figure is the best round.

    python bench/generate.py                     # both presets, runner and Hugging Face
    python bench/generate.py --models tiny --threads 2 --out bench/generate_results.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner.config import GenerationConfig, TransformerConfig  # noqa: E402
from runner.generation.search import SequenceGenerator  # noqa: E402
from runner.models.transformer import TransformerModel  # noqa: E402

PAD, EOS, UNK = 1, 2, 3
VOCAB = 8000
STEPS = 20
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(dim=256, ffn=1024, layers=3, heads=4, normalize_before=True),  # conf/arch/transformer_tiny.yaml
    "iwslt": dict(dim=512, ffn=1024, layers=6, heads=4, normalize_before=False),  # transformer_iwslt_de_en
}


def runner_model(p: dict[str, Any]) -> TransformerModel:
    """Our transformer at a preset's sizes (shared embeddings, sinusoidal positions)."""
    cfg = TransformerConfig(
        encoder_embed_dim=p["dim"],
        decoder_embed_dim=p["dim"],
        encoder_ffn_embed_dim=p["ffn"],
        decoder_ffn_embed_dim=p["ffn"],
        encoder_layers=p["layers"],
        decoder_layers=p["layers"],
        encoder_attention_heads=p["heads"],
        decoder_attention_heads=p["heads"],
        encoder_normalize_before=p["normalize_before"],
        decoder_normalize_before=p["normalize_before"],
        share_all_embeddings=True,
        dropout=0.0,
        max_source_positions=256,
        max_target_positions=256,
    )
    return TransformerModel(cfg, VOCAB, VOCAB, PAD).eval()


def marian_model(p: dict[str, Any]) -> Any:
    """Hugging Face's MarianMTModel with the same shape (post-norm as Marian is; sizes, vocab and sharing equal)."""
    from transformers import MarianConfig, MarianMTModel

    cfg = MarianConfig(
        vocab_size=VOCAB,
        d_model=p["dim"],
        encoder_layers=p["layers"],
        decoder_layers=p["layers"],
        encoder_attention_heads=p["heads"],
        decoder_attention_heads=p["heads"],
        encoder_ffn_dim=p["ffn"],
        decoder_ffn_dim=p["ffn"],
        max_position_embeddings=256,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=EOS,
        forced_eos_token_id=None,
        scale_embedding=True,
        dropout=0.0,
        activation_function="relu",
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
    )
    return MarianMTModel(cfg).eval()


def sources(batch: int, seed: int = 0) -> torch.Tensor:
    """Left-padded random sources of 8-24 tokens + </s>."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(8, 25, (batch,), generator=g)
    src = torch.full((batch, int(lens.max()) + 1), PAD)
    for i, n in enumerate(lens.tolist()):
        src[i, -n - 1 : -1] = torch.randint(4, VOCAB, (n,), generator=g)
        src[i, -1] = EOS
    return src


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest wall time of ``repeats`` runs after one warm-up (the least disturbed by other load)."""
    return best_of_each([fn], repeats)[0]


def best_of_each(fns: list[Callable[[], Any]], repeats: int) -> list[float]:
    """Fastest wall time of each function over ``repeats`` rounds that run them in turn, after one warm-up each:
    on a shared machine, load then disturbs the systems alike instead of whichever happened to run during it."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [min(t) for t in times]


def runner_generate(model: TransformerModel, src: torch.Tensor) -> Callable[[], Any]:
    cfg = GenerationConfig(beam=5, max_len_a=0, max_len_b=STEPS, min_len=STEPS)
    gen = SequenceGenerator(model, cfg, PAD, EOS, UNK)

    def run() -> Any:
        hyps = gen.generate(src)
        assert all(len(h[0].tokens) == STEPS + 1 for h in hyps)
        return hyps

    return run


def hf_generate(model: Any, src: torch.Tensor) -> Callable[[], Any]:
    ids = src.flip(1)  # Marian expects right padding: reverse keeps </s> last among the real tokens after re-padding
    ids = torch.stack([torch.cat([r[r.ne(PAD)].flip(0), r[r.eq(PAD)]]) for r in ids])
    mask = ids.ne(PAD).long()

    def run() -> Any:
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                num_beams=5,
                min_new_tokens=STEPS + 1,
                max_new_tokens=STEPS + 1,
                do_sample=False,
                early_stopping=False,
                use_cache=True,
            )
        assert out.size(1) == STEPS + 2  # decoder start + 21 generated
        return out

    return run


def decoder_step_time(model: TransformerModel, repeats: int) -> float:
    """One incremental decoder forward over 5 rows at step 10 (cache filled with 10 steps), the search's floor."""
    src = sources(1).repeat(5, 1)
    with torch.inference_mode():
        enc = model.encoder(src)
        state = model.decoder.new_state(enc, STEPS + 1)
        prev = torch.randint(4, VOCAB, (5, 11))
        prev[:, 0] = EOS
        model.decoder(prev[:, :10], enc, state)  # fill 10 steps at once
        filled = state.length

        def step() -> None:
            state.length = filled
            model.decoder(prev, enc, state)

        return best_of(step, repeats * 20)


def bench(name: str, repeats: int, with_hf: bool) -> dict[str, Any]:
    p = PRESETS[name]
    torch.manual_seed(0)
    ours = runner_model(p)
    row: dict[str, Any] = {"model": name, "params": sum(x.numel() for x in ours.parameters())}
    big, one = sources(128), sources(1, seed=1)
    hf = None
    if with_hf:
        torch.manual_seed(0)
        hf = marian_model(p)
        row["hf_params"] = sum(x.numel() for x in hf.parameters())
        row["hf_attn_implementation"] = hf.config._attn_implementation
    with torch.inference_mode():
        # runner and HF alternate within each round (same process, same thread count, both in eval mode)
        for batch, src, reps in (("big", big, repeats), ("one", one, repeats * 3)):
            fns = [runner_generate(ours, src)] + ([hf_generate(hf, src)] if hf is not None else [])
            times = best_of_each(fns, reps)
            if batch == "big":
                row["runner_sent_per_s"] = 128 / times[0]
                if hf is not None:
                    row["hf_sent_per_s"] = 128 / times[1]
            else:
                row["runner_ms_per_token_b1"] = 1000 * times[0] / (STEPS + 1)
                if hf is not None:
                    row["hf_ms_per_token_b1"] = 1000 * times[1] / (STEPS + 1)
    row["decoder_step_ms"] = 1000 * decoder_step_time(ours, repeats)
    row["latency_over_step"] = row["runner_ms_per_token_b1"] / row["decoder_step_ms"]
    if hf is not None:
        row["speedup"] = row["runner_sent_per_s"] / row["hf_sent_per_s"]
        row["latency_speedup_b1"] = row["hf_ms_per_token_b1"] / row["runner_ms_per_token_b1"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-hf", action="store_true", help="runner only")
    ap.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with_hf = not args.no_hf
    if with_hf:
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("transformers is not installed: runner only (pip install transformers for the comparison)")
            with_hf = False
    rows = [bench(m, args.repeats, with_hf) for m in args.models]
    print(f"torch {torch.__version__}, {args.threads} thread(s), beam 5, {STEPS} tokens + </s> per hypothesis")
    for r in rows:
        line = (
            f"{r['model']:6s} params {r['params']:,}: runner {r['runner_sent_per_s']:.1f} sent/s (batch 128); "
            f"batch 1: {r['runner_ms_per_token_b1']:.2f} ms/token = {r['latency_over_step']:.2f}x one decoder "
            f"step ({r['decoder_step_ms']:.2f} ms)"
        )
        if "hf_sent_per_s" in r:
            line += (
                f" | HF Marian {r['hf_sent_per_s']:.1f} sent/s, {r['hf_ms_per_token_b1']:.2f} ms/token | "
                f"speedup {r['speedup']:.2f}x throughput, {r['latency_speedup_b1']:.2f}x latency"
            )
        print(line)
    meta: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": args.threads,
        "threads_in_use": torch.get_num_threads(),  # the same setting governs runner and HF (one process)
        "steps": STEPS,
        "beam": 5,
        "repeats": args.repeats,
        "load_average": list(os.getloadavg()),
    }
    if with_hf:
        import transformers

        meta["transformers"] = transformers.__version__
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
