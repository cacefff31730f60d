"""Training throughput, peak memory and model FLOPs utilisation (MFU) on the bundled data, run by hand:

    python bench/train_throughput.py [--archs transformer_tiny transformer_iwslt_de_en] [--updates 20] [--profile]

For each arch a fresh process builds the real Trainer (same config path as ``python -m runner``), runs warm-up
updates, then times ``--updates`` real updates (forward, backward, clip, Adam). FLOPs per update are counted by
``torch.utils.flop_counter.FlopCounterMode`` over the very updates that are timed (matmuls, attention, forward and
backward; padding positions included, and their share printed), and MFU
divides achieved FLOP/s by the dense fp32 matmul FLOP/s of this machine measured in the same run (before and after
the models, best of several large ``torch.mm``), so the ratio holds on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def matmul_flops(n: int = 2048, reps: int = 8, trials: int = 5) -> float:
    """Best observed dense fp32 matmul FLOP/s (the machine's practical peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return best


def worker(arch: str, updates: int, max_tokens: int, data_bin: str, profile: bool) -> dict:
    """Time real training updates of one arch in this process; returns the measurements."""
    sys.path.insert(0, str(ROOT))
    from torch.utils.flop_counter import FlopCounterMode

    from runner.tasks.translation import TranslationTask
    from runner.trainer import Trainer
    from tests.conftest import compose_train

    out = Path(tempfile.mkdtemp())
    cfg = compose_train(
        [
            "model=transformer",
            f"arch={arch}",
            f"task.data_bin={data_bin}",
            f"dataset.max_tokens={max_tokens}",
            f"checkpoint.save_dir={out}",
            f"common.meters_file={out / 'm.jsonl'}",
            "model.dropout=0.1",
        ]
    )
    trainer = Trainer(cfg, TranslationTask(**cfg.task))
    ds = trainer.task.dataset("train")
    batches = trainer.task.batches("train", trainer.max_positions, cfg.dataset, 1, train=True)
    # Take batches from the middle of the length distribution, the same ones for every arch.
    mid = len(batches) // 2
    chosen = [ds.collate(b) for b in batches[mid - updates // 2 : mid - updates // 2 + updates + 3]]
    for b in chosen[:3]:
        trainer.train_step([b])
    # FLOPs actually executed (padding included) for exactly the batches that are timed, counted in a separate pass.
    with FlopCounterMode(display=False) as counter:
        for b in chosen[3:]:
            trainer.train_step([b])
    flops = counter.get_total_flops()
    tokens = sum(b["ntokens"] for b in chosen[3:])
    src_tokens = sum(int(b["net_input"]["src_lengths"].sum()) for b in chosen[3:])
    padded = sum(b["target"].numel() + b["net_input"]["src_tokens"].numel() for b in chosen[3:])
    t = time.perf_counter()
    for b in chosen[3:]:
        trainer.train_step([b])
    elapsed = time.perf_counter() - t
    flops_per_token = flops / tokens
    result = {
        "arch": arch,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "updates": updates,
        "tgt_tokens_per_s": tokens / elapsed,
        "src_tokens_per_s": src_tokens / elapsed,
        "s_per_update": elapsed / updates,
        "flops_per_tgt_token": flops_per_token,
        "achieved_flops": flops_per_token * tokens / elapsed,
        "padding_share": 1 - (tokens + src_tokens) / padded,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for b in chosen[3:6]:
                trainer.train_step([b])
        result["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["transformer_tiny", "transformer_iwslt_de_en"])
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--data-bin", default=str(ROOT / "data-bin" / "tatoeba-ja-en"))
    parser.add_argument("--profile", action="store_true", help="print the top operators of 3 updates")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.updates, args.max_tokens, args.data_bin, args.profile)))
        return

    peak_before = matmul_flops()
    results = []
    for arch in args.archs:
        cmd = [sys.executable, __file__, "--worker", arch, "--updates", str(args.updates)]
        cmd += ["--max-tokens", str(args.max_tokens), "--data-bin", args.data_bin]
        cmd += ["--profile"] if args.profile else []
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    peak = max(peak_before, matmul_flops())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, dense fp32 matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    print(
        f"{'arch':28} {'params':>11} {'tgt tok/s':>10} {'s/update':>9} {'GFLOP/s':>8} {'MFU':>6} {'padding':>8} "
        f"{'peak RSS':>9}"
    )
    for r in results:
        mfu = r["achieved_flops"] / peak
        print(
            f"{r['arch']:28} {r['params']:>11,} {r['tgt_tokens_per_s']:>10.0f} {r['s_per_update']:>9.2f} "
            f"{r['achieved_flops'] / 1e9:>8.1f} {mfu:>6.1%} {r['padding_share']:>8.1%} {r['peak_rss_mb']:>7.0f}MB"
        )
        if "profile" in r:
            print(r["profile"])


if __name__ == "__main__":
    main()
