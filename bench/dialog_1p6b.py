"""NTT's 1.6B dialog transformer on this machine: save, load, one chat turn, one fine-tuning update.

Needs about 15 GB of free RAM and 13 GB of disk (check ``free -g`` first). Usage::

    python bench/dialog_1p6b.py [--dir /tmp/dialog-1p6b] [--threads 2]

Phase ``save`` (this process) builds the ``model=dialog_1p6b`` preset with random fp32 weights at NTT's vocabulary
size (32,002) and writes it in our checkpoint format with the trainer's background saver, timing how long training
would wait (the CPU snapshot) and the write itself. Phases ``chat`` and ``update`` each run in a fresh process so
that their peak RSS is their own: ``chat`` loads the checkpoint as ``runner.interactive`` does (meta-device build,
memory-mapped weights, bf16) and answers one turn with beam 10 and top-p 0.9 sampling; ``update`` builds the model
on the meta device with the checkpoint's weights and runs one Adafactor update under bf16 autocast on a batch of
512 target tokens. Results are printed and written to ``bench/dialog_1p6b_results.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner import checkpoint as ckpt  # noqa: E402
from runner.config import CONF_DIR, TransformerConfig  # noqa: E402
from runner.models.transformer import TransformerModel  # noqa: E402

VOCAB = 32002


def peak_rss_gb() -> float:
    """This process's peak RSS: VmHWM (ru_maxrss would carry the parent's peak into a forked phase)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def composed_cfg(bench_dir: Path) -> dict:
    """The training config a real run would record (task=dialog model=dialog_1p6b), resolved."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("train", overrides=["task=dialog", "model=dialog_1p6b", "optimizer=adafactor"])
    cfg.common.meters_file = str(bench_dir / "meters.jsonl")
    cfg.checkpoint.save_dir = str(bench_dir)
    cfg.task.data_bin = str(bench_dir / "bin")
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def model_config(cfg: dict) -> TransformerConfig:
    return TransformerConfig(**{k: v for k, v in cfg["model"].items() if k != "_target_"})


def phase_save(bench_dir: Path) -> dict:
    from runner.tasks.dialog import DialogTask

    cfg = composed_cfg(bench_dir)
    task = DialogTask(**cfg["task"])
    prepared = task.prepare()  # a real NTT-convention spm model for the chat phase
    symbols = list(prepared.dictionary.symbols)
    symbols += [f"madeupword{i:04d}" for i in range(VOCAB - len(symbols))]
    torch.manual_seed(0)
    start = time.perf_counter()
    model = TransformerModel(model_config(cfg), VOCAB, VOCAB)
    build = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    state = {
        "version": ckpt.FORMAT_VERSION,
        "cfg": cfg,
        "model": model.state_dict(),
        "optimizer": None,
        "task_state": {"dictionary": symbols, "spm_model": str(prepared.spm_path)},
    }
    saver = ckpt.BackgroundSaver()
    blocked = saver.save(state, [bench_dir / "checkpoint_last.pt", bench_dir / "checkpoint_best.pt"])
    saver.wait()
    return {
        "parameters": params,
        "random_build_s": round(build, 1),
        "save_training_blocked_s": round(blocked, 1),
        "save_background_write_s": round(saver.last_write_seconds, 1),
        "checkpoint_gb": round((bench_dir / "checkpoint_last.pt").stat().st_size / 1e9, 2),
        "save_peak_rss_gb": round(peak_rss_gb(), 2),
    }


def phase_chat(bench_dir: Path) -> dict:
    from runner.config import InteractiveConfig
    from runner.generation.loading import SEQ2SEQ, load_model
    from runner.interactive import Chat

    start = time.perf_counter()
    loaded = load_model(bench_dir / "checkpoint_last.pt", (SEQ2SEQ,), cpu=True, bf16=True)
    load_s = time.perf_counter() - start
    load_rss = peak_rss_gb()
    cfg = InteractiveConfig(path=str(bench_dir / "checkpoint_last.pt"))
    g = cfg.generation
    g.beam, g.nbest, g.sampling, g.sampling_topp, g.temperature = 10, 10, True, 0.9, 1.0
    g.min_len, g.no_repeat_ngram_size, g.max_len_b = 10, 3, 20
    chat = Chat(loaded, cfg)
    out = io.StringIO()
    chat.respond("こんにちは。今日はいい天気ですね。", "bench", out)
    start = time.perf_counter()
    chat.respond("週末は何をしますか？", "bench", out)  # a second turn: the source carries the history
    turn_s = time.perf_counter() - start
    source = next(line for line in out.getvalue().splitlines() if line.startswith("S-1"))
    return {
        "load_s": round(load_s, 1),
        "load_peak_rss_gb": round(load_rss, 2),
        "chat_turn_s": round(turn_s, 1),
        "chat_settings": "beam 10, nbest 10, sampling top-p 0.9, min_len 10, no_repeat_ngram 3, max_len 20, bf16",
        "chat_source": source,
        "chat_peak_rss_gb": round(peak_rss_gb(), 2),
    }


def phase_update(bench_dir: Path) -> dict:
    path = bench_dir / "checkpoint_last.pt"
    start = time.perf_counter()
    state = ckpt.load(path, mmap=True)
    mc = model_config(state["cfg"])
    model = ckpt.build_with_weights(lambda: TransformerModel(mc, VOCAB, VOCAB), state["model"], path)
    load_s = time.perf_counter() - start
    model.train()
    opt = torch.optim.Adafactor(model.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, VOCAB, (8, 64), generator=g)
    tgt = torch.randint(4, VOCAB, (8, 64), generator=g)
    prev = torch.cat([torch.full((8, 1), 2), tgt[:, :-1]], dim=1)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(src, None, prev)
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, VOCAB), tgt.view(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {
        "update_load_s": round(load_s, 1),
        "update_s": round(time.perf_counter() - start, 1),
        "update_tokens": int(tgt.numel()),
        "update_settings": "adafactor lr 1e-5, bf16 autocast, fp32 master weights, 8 x 64 target tokens",
        "update_loss": round(float(loss), 3),
        "update_peak_rss_gb": round(peak_rss_gb(), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/dialog-1p6b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--phase", choices=["all", "save", "chat", "update"], default="all")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bench_dir = Path(args.dir)
    bench_dir.mkdir(parents=True, exist_ok=True)
    phases = {"save": phase_save, "chat": phase_chat, "update": phase_update}
    if args.phase != "all":
        print(json.dumps(phases[args.phase](bench_dir), ensure_ascii=False))
        return
    results = {"torch": torch.__version__, "threads": args.threads, **phase_save(bench_dir)}
    print(json.dumps(results, ensure_ascii=False), flush=True)
    for name in ("chat", "update"):
        cmd = [sys.executable, __file__, "--dir", str(bench_dir), "--threads", str(args.threads), "--phase", name]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.update(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(results, ensure_ascii=False), flush=True)
    (ROOT / "bench" / "dialog_1p6b_results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
