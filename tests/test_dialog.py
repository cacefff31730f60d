"""The dialog task: NTT's context format from real multi-turn dialogs, the input layouts, the NTT vocabulary
convention, bad input, the meta-device build, and training then chatting from the command line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from runner import checkpoint as ckpt
from runner.config import NTT_USER_SYMBOLS, REPO_ROOT, DialogConfig, TransformerConfig
from runner.data.text import DataError
from runner.models.transformer import TransformerModel
from runner.tasks.dialog import DialogTask, conversation_pairs, dialog_context, read_chatterbot

from .conftest import MICRO, compose_train, run_module

CHATTERBOT = REPO_ROOT / "data" / "chatterbot-ja"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> DialogTask:
    task = DialogTask(data=str(CHATTERBOT), data_bin=str(tmp_path_factory.mktemp("dialog-bin")), vocab_size=1000)
    task.prepare()
    return task


def test_context_keeps_the_last_turns_with_speaker_tags_and_a_character_cap():
    cfg = DialogConfig(data="-", context_turns=3, max_context_chars=30)
    turns = ["u0", "s1", "u2", "s3", "u4", "s5"]
    pairs = conversation_pairs(turns, cfg)
    assert pairs[0] == ("[SPK2]u0", "s1")
    assert pairs[1] == ("[SPK1]u0[SEP][SPK2]s1", "u2")  # the turn before the target is always the user's
    # 3 turns: two earlier ones, then the newest user turn without a trailing separator
    assert pairs[4] == ("[SPK2]u2[SEP][SPK1]s3[SEP][SPK2]u4", "s5")
    long = "x" * 20
    # the budget is max_chars - len(utterance): older turns go first, the new utterance always stays
    assert dialog_context([("[SPK2]", "a"), ("[SPK1]", long)], "hello", 3, 30) == "[SPK2]hello"
    assert dialog_context([("[SPK2]", "a"), ("[SPK1]", "b")], "hi", 3, 30) == "[SPK2]a[SEP][SPK1]b[SEP][SPK2]hi"
    assert dialog_context([("[SPK2]", "a"), ("[SPK1]", "b")], "hi", 3, 30, drop=1) == "[SPK1]b[SEP][SPK2]hi"


def test_chatterbot_pairs_are_split_by_conversation(prepared: DialogTask):
    splits = {s: prepared.read_split(s) for s in ("train", "valid", "test")}
    assert sum(len(c) for c, _ in splits.values()) == 825  # every turn after the first of each conversation
    assert all(len(c) == len(r) > 50 for c, r in splits.values())
    ctx, resp = splits["train"]
    i = resp.index("私と話すために使っているのはコンピュータです。")  # third turn of the first computers.yml dialog
    assert ctx[i] == (
        "[SPK1]コンピュータとは何ですか？[SEP][SPK2]コンピュータは、デジタル形式の情報を取り込み、所定の指示に"
        "基づいて一連の操作を実行して何らかの出力を与える電子デバイスです。"
    )
    # every pair of a conversation lands in the split of that conversation, the same on every run
    assert prepared.split_of(8) == "valid" and prepared.split_of(9) == "test" and prepared.split_of(10) == "train"
    assert prepared.read_split("valid") == splits["valid"]
    assert (CHATTERBOT / "LICENSE.md").is_file()


def test_ntt_vocabulary_convention(prepared: DialogTask):
    sp = prepared.tokenizer().sp
    assert [sp.IdToPiece(i) for i in range(2, 7)] == NTT_USER_SYMBOLS  # user symbols at sentencepiece ids 2-6
    d = prepared.source_dictionary
    dict_lines = (Path(prepared.cfg.data_bin) / "dict.txt").read_text(encoding="utf-8").splitlines()
    assert len(dict_lines) == sp.GetPieceSize() - 2 and all(line.endswith(" 100") for line in dict_lines)
    for i in range(2, sp.GetPieceSize()):
        assert d.index(sp.IdToPiece(i)) == i + 2, "fairseq id = sentencepiece id + 2"
    tok = prepared.tokenizer()
    pieces = tok.encode("[SPK2]こんにちは[SEP][SPK1]元気です[SEP][SPK2]ありがとう")
    assert pieces.split()[0] == "[SPK2]" and pieces.split().count("[SEP]") == 2 and "[SPK1]" in pieces.split()
    ids = d.encode_line(pieces)
    assert ids[0].item() == sp.PieceToId("[SPK2]") + 2 == 7
    for text in prepared.read_split("valid")[1]:  # text out: remove spaces, ▁ -> space, strip
        p = tok.encode(text)
        assert tok.decode(p) == p.replace(" ", "").replace("\u2581", " ").strip()


def test_tsv_and_src_dst_layouts(tmp_path: Path):
    rows = [("[SPK2]こんにちは[SEP][SPK1]やあ[SEP][SPK2]元気？", "元気です"), ("おはよう", "おはようございます")]
    tsv, sd = tmp_path / "tsv", tmp_path / "sd"
    tsv.mkdir(), sd.mkdir()
    for split in ("train", "valid"):
        (tsv / f"{split}.tsv").write_text("".join(f"{c}\t{r}\n" for c, r in rows), encoding="utf-8")
        (sd / f"{split}.src").write_text("".join(f"{c}\n" for c, _ in rows), encoding="utf-8")
        (sd / f"{split}.dst").write_text("".join(f"{r}\n" for _, r in rows), encoding="utf-8")
    a = DialogTask(data=str(tsv), splits=["train", "valid"])
    b = DialogTask(data=str(sd), splits=["train", "valid"])
    assert a.data_format == "tsv" and b.data_format == "src_dst"
    expected = ([rows[0][0], "[SPK2]おはよう"], ["元気です", "おはようございます"])  # a plain context is a user turn
    assert a.read_split("train") == b.read_split("train") == expected
    (tsv / "valid.tsv").write_text("a\tb\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"valid\.tsv, line 2: expected 'context<TAB>response'"):
        a.read_split("valid")
    with pytest.raises(DataError, match="task.format must be one of"):
        DialogTask(data=str(tsv), format="json")


def test_bad_yaml_names_file_and_line(tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text("conversations:\n- - hello\n  - [unclosed\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.yml, line \d+, column \d+: invalid YAML"):
        read_chatterbot(bad)
    bad.write_text("conversations:\n- - hello\n  - {a: b}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.yml, line 3: a turn must be a non-empty text"):
        read_chatterbot(bad)
    bad.write_text("categories: [x]\n", encoding="utf-8")
    with pytest.raises(DataError, match="no 'conversations' key"):
        read_chatterbot(bad)
    good = tmp_path / "good.yml"
    good.write_text("conversations:\n- - yes\n  - 42\n", encoding="utf-8")
    assert read_chatterbot(good) == [["yes", "42"]]  # turns as written, no YAML type guessing


def test_1p6b_preset_builds_on_meta_without_memory():
    cfg = compose_train(["task=dialog", "model=dialog_1p6b"])
    model_cfg = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "_target_"}
    with ckpt.parameters_on_meta():
        model = TransformerModel(TransformerConfig(**model_cfg), 32002, 32002)
    assert sum(p.numel() for p in model.parameters()) == 1_566_428_160
    assert all(p.is_meta for p in model.parameters())
    assert not model.encoder.embed_positions.table.is_meta  # non-persistent buffers are computed for real
    assert model.decoder.output_projection.weight is model.encoder.embed_tokens.weight


def test_build_with_weights_keeps_ties_and_names_what_differs(tmp_path: Path):
    tc = TransformerConfig(
        encoder_layers=1, decoder_layers=1, encoder_embed_dim=16, decoder_embed_dim=16, encoder_ffn_embed_dim=32,
        decoder_ffn_embed_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, share_all_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    ref = TransformerModel(tc, 40, 40).eval()
    path = tmp_path / "m.pt"
    ckpt.save_atomic({"model": ref.state_dict()}, [path])
    model = ckpt.build_with_weights(lambda: TransformerModel(tc, 40, 40), ckpt.load(path, mmap=True)["model"], path)
    model.eval()
    assert (
        model.decoder.output_projection.weight is model.encoder.embed_tokens.weight is model.decoder.embed_tokens.weight
    )
    src, prev = torch.tensor([[5, 6, 7, 2]]), torch.tensor([[2, 8, 9]])
    assert torch.equal(model(src, None, prev), ref(src, None, prev))
    sd = dict(ref.state_dict())
    del sd["encoder.layers.0.fc1.bias"]
    with pytest.raises(ckpt.CheckpointError, match=r"m\.pt: .*missing \['encoder\.layers\.0\.fc1\.bias'\]"):
        ckpt.build_with_weights(lambda: TransformerModel(tc, 40, 40), sd, path)
    with pytest.raises(ckpt.CheckpointError, match="has shape"):
        ckpt.build_with_weights(lambda: TransformerModel(tc, 48, 48), ref.state_dict(), path)


def by_id(stdout: str, kind: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in re.finditer(rf"^{kind}-(\d+)\t(.*)$", stdout, re.M)}


def test_train_dialog_then_chat_with_history(tmp_path: Path):
    out = tmp_path / "run"
    overrides = [
        "task=dialog",
        "model=dialog_1p6b",  # the preset's structure, shrunk by the micro overrides below
        f"task.data_bin={tmp_path / 'bin'}",
        f"checkpoint.save_dir={out / 'checkpoints'}",
        f"common.meters_file={out / 'meters.jsonl'}",
        f"hydra.run.dir={out}",
        *MICRO,
        "model.max_source_positions=256",
        "model.max_target_positions=256",
        "tracking.enabled=false",
        "optimizer=adafactor",
        "optimization.max_update=6",
        "common.bf16=true",
    ]
    proc = run_module("runner", overrides, cwd=tmp_path)
    assert "writing checkpoint_best.pt, checkpoint_last.pt in the background" in proc.stderr + proc.stdout
    path = out / "checkpoints" / "checkpoint_last.pt"
    state = ckpt.load(path)
    assert state["cfg"]["task"]["_target_"] == "runner.tasks.dialog.DialogTask"
    assert state["task_state"]["dictionary"][4:9] == NTT_USER_SYMBOLS
    args = [f"path={path}", "generation.beam=2", "generation.max_len_b=5", "common.threads=1"]
    chat = run_module("runner.interactive", args, tmp_path, input="こんにちは\n元気ですか\n")
    assert "dialog mode" in chat.stderr  # switched on by the checkpoint's task, no history.enabled needed
    sources, replies = by_id(chat.stdout, "S"), by_id(chat.stdout, "D")
    assert sources[0] == "[SPK2]こんにちは"
    reply = replies[0].split("\t", 1)[1]
    assert sources[1] == f"[SPK2]こんにちは[SEP][SPK1]{reply}[SEP][SPK2]元気ですか"
