"""Plug-ins: both ways onto the search path (user_dir and installed entry points), the two example plug-ins trained,
resumed and used by runner.generate, the focal loss against a hand computation, and broken plug-ins reported with
their file and line."""

from __future__ import annotations

import json
import math
import os
import textwrap
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from torch import nn

from runner import checkpoint as ckpt
from runner import plugins
from runner.config import REPO_ROOT

from .conftest import compose_train, micro_overrides, run_module

CAPTIONING = REPO_ROOT / "plugins" / "captioning"
FOCAL = REPO_ROOT / "plugins" / "focal"
QUIET = ["tracking.enabled=false", "common.log_format=simple", "common.threads=1"]


@pytest.fixture(autouse=True)
def no_env_user_dir(monkeypatch):
    monkeypatch.delenv(plugins.USER_DIR_ENV, raising=False)


def meters(path: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["type"] == kind]


# ------------------------------------------------------------------------------------------------------ focal
class FixedLogits(nn.Module):
    """A stand-in model that returns the same logits for any input."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, **net_input) -> torch.Tensor:
        return self.logits

    @staticmethod
    def get_normalized_probs(logits: torch.Tensor, log_probs: bool = True) -> torch.Tensor:
        return torch.log_softmax(logits, -1)


def test_focal_loss_matches_a_hand_computation() -> None:
    plugins.load_plugins({}, user_dir=str(FOCAL))
    from focal.criterion import FocalLoss

    rows = [[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 3.0], [1.0, 1.0, 1.0, 1.0]]
    target = [3, 0, 1]  # the last position is padding (index 1)
    batch = {"net_input": {}, "target": torch.tensor([target]), "ntokens": 2, "nsentences": 1}
    model = FixedLogits(torch.tensor([rows]))

    def by_hand(gamma: float) -> tuple[float, float]:
        loss = nll = 0.0
        for logits, t in zip(rows[:2], target[:2]):
            p = math.exp(logits[t]) / sum(math.exp(x) for x in logits)
            loss += -((1 - p) ** gamma) * math.log(p)
            nll += -math.log(p)
        return loss, nll

    for gamma in (0.0, 0.5, 2.0):
        loss, size, out = FocalLoss(padding_idx=1, gamma=gamma)(model, batch)
        want_loss, want_nll = by_hand(gamma)
        assert float(loss) == pytest.approx(want_loss, rel=1e-5)
        assert out["nll_loss"] == pytest.approx(want_nll, rel=1e-5), "nll stays the plain likelihood"
        assert size == 2 and out["ntokens"] == 2 and out["sample_size"] == 2
    assert by_hand(2.0)[0] < by_hand(0.0)[0], "the example down-weights what the model already predicts"
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1.0)


# -------------------------------------------------------------------------------------------------- mechanism
def test_plugin_choices_compose_with_their_schemas(monkeypatch) -> None:
    monkeypatch.setenv(plugins.USER_DIR_ENV, os.pathsep.join([str(CAPTIONING), str(FOCAL)]))
    cfg = compose_train(["task=captioning", "model=cnn_lstm", "criterion=focal", "criterion.gamma=0.5"])
    assert cfg.criterion._target_ == "focal.criterion.FocalLoss" and cfg.criterion.gamma == 0.5
    assert cfg.task.data == str(CAPTIONING / "data"), "${plugin_dir:captioning} finds the plug-in's own data"
    assert cfg.model.hidden_dim == 128
    with pytest.raises(ConfigCompositionException, match="gama"):
        compose_train(["criterion=focal", "criterion.gama=1"])
    with pytest.raises(ConfigCompositionException, match="gamma"):
        compose_train(["criterion=focal", "criterion.gamma=strong"])  # typed by the plug-in's schema


def test_without_the_plugin_its_choices_do_not_exist() -> None:
    with pytest.raises(ConfigCompositionException, match="focal"):
        compose_train(["criterion=focal"])


def test_installed_plugin_is_found_through_its_entry_point(tmp_path, monkeypatch) -> None:
    dist = tmp_path / "site" / "runner_focal-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: runner-focal\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\nfocal = focal\n")
    monkeypatch.syspath_prepend(str(FOCAL.parent))  # where an installed package would be importable from
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert [p.name for p in plugins.installed()] == ["focal"]
    cfg = compose_train(["criterion=focal"])
    assert cfg.criterion._target_ == "focal.criterion.FocalLoss"


def test_user_dir_override_parsing_and_bad_folders(tmp_path) -> None:
    assert plugins.user_dirs_from_overrides(["task=x", "user_dir=a/b"]) == ["a/b"]
    assert plugins.user_dirs_from_overrides(["+user_dir=[a,b]"]) == ["a", "b"]
    with pytest.raises(plugins.PluginError, match="cannot be swept"):
        plugins.user_dirs_from_overrides(["user_dir=a,b"])
    with pytest.raises(plugins.PluginError, match="no such folder"):
        plugins.from_user_dir(tmp_path / "missing")
    (tmp_path / "notapackage").mkdir()
    with pytest.raises(plugins.PluginError, match="no __init__.py"):
        plugins.from_user_dir(tmp_path / "notapackage")
    clash = tmp_path / "json"
    clash.mkdir()
    (clash / "__init__.py").write_text("")
    with pytest.raises(plugins.PluginError, match="already taken"):
        plugins.put_on_path(plugins.from_user_dir(clash))
    with pytest.raises(plugins.PluginError, match="no module 'nosuchplugin'.*user_dir"):
        plugins.locate("nosuchplugin.Loss")
    with pytest.raises(plugins.PluginError, match="has no attribute 'NoSuchLoss'"):
        plugins.locate("runner.criteria.NoSuchLoss")


def test_help_lists_plugin_choices(tmp_path) -> None:
    proc = run_module("runner", [f"user_dir=[{CAPTIONING},{FOCAL}]", "--help"], cwd=tmp_path)
    groups = {line.split(":")[0]: line for line in proc.stdout.splitlines() if ": " in line}
    assert "captioning" in groups["task"] and "translation" in groups["task"]
    assert "focal" in groups["criterion"] and "cnn_lstm" in groups["model"]


# ------------------------------------------------------------------------------------------------- examples
def test_captioning_trains_resumes_and_generates_captions(tmp_path) -> None:
    out = tmp_path / "run"
    args = [
        f"user_dir={CAPTIONING}",
        "+experiment=captioning",
        f"task.data_bin={tmp_path / 'bin'}",
        f"hydra.run.dir={out}",
        f"checkpoint.save_dir={out / 'checkpoints'}",
        f"common.meters_file={out / 'meters.jsonl'}",
        "common.log_interval=1",
        *QUIET,
    ]
    run_module("runner", [*args, "optimization.max_update=4"], cwd=tmp_path)
    last = out / "checkpoints" / "checkpoint_last.pt"
    assert ckpt.load(last)["trainer"]["num_updates"] == 4
    resumed = run_module("runner", [*args, "optimization.max_update=8"], cwd=tmp_path)
    assert "resumed from" in resumed.stdout + resumed.stderr
    state = ckpt.load(last)
    assert state["trainer"]["num_updates"] == 8 and state["cfg"]["model"]["_target_"].startswith("captioning.")
    train = meters(out / "meters.jsonl", "train_inner")
    assert [r["num_updates"] for r in train] == list(range(1, 9)), "the second run continued at update 5"
    assert all(math.isfinite(r["loss"]) for r in train)

    # Elsewhere, without user_dir: the checkpoint's config names the plug-in; generate reads images, not text.
    res = tmp_path / "elsewhere"
    res.mkdir()
    gen = run_module(
        "runner.generate", [f"path={last}", "gen_subset=test", f"results_path={res}", "generation.beam=2"], cwd=res
    )
    names = (CAPTIONING / "data" / "test.img").read_text().split()
    assert [line.split("\t")[1] for line in gen.stdout.splitlines() if line.startswith("S-")] == names
    hyps = (res / "generate-test.hyp").read_text().splitlines()
    assert len(hyps) == len(names) and all(h.strip() for h in hyps), "every image gets a caption"
    assert "Translated 16 sentences" in gen.stdout and "BLEU" in gen.stdout
    chat = run_module("runner.interactive", [f"path={last}"], cwd=res, check=False, input="astronaut.png\n")
    assert chat.returncode == 1 and "does not take text input" in chat.stderr, "refused, not captioned as text"


def test_captioning_decoder_state_gives_the_same_beams_as_full_recomputation() -> None:
    plugins.load_plugins({}, user_dir=str(CAPTIONING))
    from captioning.model import CaptioningModel

    from runner.config import GenerationConfig
    from runner.generation.search import SequenceGenerator

    torch.manual_seed(0)
    model = CaptioningModel.build(tgt_vocab_size=12, padding_idx=1, channels=[4, 8], embed_dim=8, hidden_dim=16)
    model.eval()
    images, lengths = torch.randn(3, 3, 16, 16), torch.ones(3, dtype=torch.long)
    runs = {}
    for cache in (True, False):
        cfg = GenerationConfig(beam=3, nbest=3, max_len_b=6, use_cache=cache)
        runs[cache] = SequenceGenerator(model, cfg, pad=1, eos=2, unk=3).generate(images, None, lengths)
    for cached, full in zip(runs[True], runs[False]):
        assert len(cached) == 3
        assert [h.tokens.tolist() for h in cached] == [h.tokens.tolist() for h in full]
        assert [h.score for h in cached] == pytest.approx([h.score for h in full], abs=1e-5)
    # and the logits of one step-by-step pass equal the training-time forward pass
    tokens = torch.tensor([[2, 5, 6, 7]])
    full = model.decoder(tokens, model.encoder(images[:1]))
    enc = model.encoder(images[:1])
    state = model.decoder.new_state(enc, 4)
    steps = [model.decoder(tokens[:, : t + 1], enc, state)[:, -1] for t in range(4)]
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-5)


def test_focal_criterion_trains_resumes_and_generates(corpus, data_bin, tmp_path) -> None:
    out = tmp_path / "run"
    args = micro_overrides(corpus, data_bin, out, f"user_dir={FOCAL}", "criterion=focal", "criterion.gamma=1.0")
    run_module("runner", [*args, "optimization.max_update=3", "tracking.enabled=false"], cwd=tmp_path)
    resumed = run_module("runner", [*args, "optimization.max_update=5", "tracking.enabled=false"], cwd=tmp_path)
    log = resumed.stdout + resumed.stderr
    assert "resumed from" in log and "criterion: FocalLoss" in log
    last = out / "checkpoints" / "checkpoint_last.pt"
    assert ckpt.load(last)["trainer"]["num_updates"] == 5
    for record in meters(out / "meters.jsonl", "train_inner"):
        assert record["loss"] < record["nll_loss"], "focal loss (gamma > 0) is below the plain nll per token"
    gen = run_module(
        "runner.generate",
        [f"path={last}", f"data={corpus}", "gen_subset=valid", "generation.beam=1", "generation.max_len_b=8"],
        cwd=tmp_path,
    )
    assert sum(line.startswith("H-") for line in gen.stdout.splitlines()) == 101


# ---------------------------------------------------------------------------------------------- broken plug-ins
def write_plugin(root: Path, criterion_py: str, config_py: str | None = None) -> Path:
    """A plug-in package ``brokenplug`` offering ``criterion=broken``."""
    pkg = root / "brokenplug"
    (pkg / "conf" / "criterion").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""A plug-in with a bug."""\n')
    (pkg / "config.py").write_text(
        config_py
        or textwrap.dedent(
            """\
            from dataclasses import dataclass


            @dataclass
            class BrokenConfig:
                _target_: str = "brokenplug.criterion.BrokenLoss"


            SCHEMAS = {"criterion": {"broken": BrokenConfig}}
            """
        )
    )
    (pkg / "criterion.py").write_text(criterion_py)
    (pkg / "conf" / "criterion" / "broken.yaml").write_text(
        "defaults:\n  - /schema/criterion/broken@_here_\n  - _self_\n"
    )
    return pkg


def test_import_error_in_a_plugin_module_names_its_file_and_line(tmp_path) -> None:
    pkg = write_plugin(
        tmp_path,
        '"""Loss."""\nfrom runner.criteria import CrossEntropyCriterion\n\nSMOOTHING = undefined_setting * 2\n',
    )
    proc = run_module(
        "runner",
        [f"user_dir={pkg}", "criterion=broken", f"hydra.run.dir={tmp_path / 'run'}", *QUIET],
        cwd=tmp_path,
        check=False,
    )
    err = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert f'{pkg / "criterion.py"}", line 4' in err
    assert "NameError: name 'undefined_setting' is not defined" in err
    assert f"user_dir={pkg}" in err, "the message says where the plug-in came from"
    assert "SMOOTHING = undefined_setting * 2" in err, "the offending line is quoted"
    for vague in ("Error locating target", "invalid choice", "Could not find", "Traceback"):
        assert vague not in err


def test_syntax_error_in_a_plugin_schema_names_its_file_and_line(tmp_path) -> None:
    pkg = write_plugin(tmp_path, "", config_py="from dataclasses import dataclass\n\nSCHEMAS = {'criterion': {\n")
    proc = run_module("runner", [f"user_dir={pkg}", "criterion=broken", "--cfg", "job"], cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert f'{pkg / "config.py"}", line 3' in proc.stderr and "SyntaxError" in proc.stderr
    assert "importing brokenplug.config" in proc.stderr
    for vague in ("Could not find", "invalid choice", "Traceback"):
        assert vague not in proc.stderr
