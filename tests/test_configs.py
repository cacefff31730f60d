"""Every config in conf/ composes and instantiates (as lightning-hydra-template's tests do), presets build the sizes
they name, and misspelt keys or choices are errors rather than silent no-ops."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from runner.config import CONF_DIR
from runner.models.transformer import TransformerModel

from .conftest import compose_train, run_module


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


ARCHS = options("arch")
TRANSLATION_MODELS = [m for m in options("model") if m != "transformer_lm"]


@pytest.mark.parametrize("group", ["criterion", "optimizer", "lr_scheduler"])
def test_every_component_option_instantiates(group: str) -> None:
    for name in options(group):
        cfg = compose_train([f"{group}={name}", "optimization.max_update=100"])
        params = [torch.nn.Parameter(torch.zeros(3))]
        if group == "criterion":
            crit = instantiate(cfg.criterion, padding_idx=1)
            assert isinstance(crit, torch.nn.Module)
        else:
            opt = instantiate(cfg.optimizer)(params)
            assert isinstance(opt, torch.optim.Optimizer)
            if group == "lr_scheduler":
                sched = instantiate(cfg.lr_scheduler)(opt)
                assert hasattr(sched, "state_dict")
            else:
                assert type(opt).__module__.startswith("torch.optim"), "optimizers target torch.optim directly"


def test_task_instantiates_without_touching_data() -> None:
    cfg = compose_train([])
    task = instantiate(cfg.task)
    assert task.cfg.source_lang == "ja" and task.cfg.target_lang == "en"
    assert task.prepared is None


def _sizes(model: TransformerModel) -> dict[str, int]:
    enc, dec = model.encoder, model.decoder
    return {
        "encoder_layers": len(enc.layers),
        "decoder_layers": len(dec.layers),
        "encoder_embed_dim": enc.embed_tokens.embedding_dim,
        "decoder_embed_dim": dec.embed_tokens.embedding_dim,
        "encoder_ffn_embed_dim": enc.layers[0].fc1.out_features,
        "decoder_ffn_embed_dim": dec.layers[0].fc1.out_features,
        "encoder_attention_heads": enc.layers[0].self_attn.num_heads,
        "decoder_attention_heads": dec.layers[0].self_attn.num_heads,
    }


def build(overrides: list[str], vocab: int = 32002) -> tuple[TransformerModel, dict]:
    cfg = compose_train(overrides)
    with torch.device("meta"):
        model = instantiate(cfg.model, src_vocab_size=vocab, tgt_vocab_size=vocab, padding_idx=1)
    return model, OmegaConf.to_container(cfg.model)


@pytest.mark.parametrize("arch", ARCHS)
def test_arch_preset_builds_the_sizes_it_names(arch: str) -> None:
    preset = OmegaConf.load(CONF_DIR / "arch" / f"{arch}.yaml")
    model, cfg = build(["model=transformer", f"arch={arch}"])
    sizes = _sizes(model)
    for key, built in sizes.items():
        assert built == cfg[key], f"{arch}: {key} config {cfg[key]} but built {built}"
        if key in preset:
            assert built == preset[key], f"{arch}: preset says {key}={preset[key]}, module has {built}"
    pre = model.encoder.layer_norm is not None
    assert pre == cfg["encoder_normalize_before"]


@pytest.mark.parametrize("model_name", TRANSLATION_MODELS)
def test_named_models_compose(model_name: str) -> None:
    model, cfg = build([f"model={model_name}"])
    if (CONF_DIR / "arch" / f"{model_name}.yaml").exists():
        preset = OmegaConf.load(CONF_DIR / "arch" / f"{model_name}.yaml")
        assert all(cfg[k] == v for k, v in preset.items())


def test_dialog_1p6b_has_exactly_the_published_parameter_count() -> None:
    model, _ = build(["model=dialog_1p6b"])
    assert sum(p.numel() for p in model.parameters()) == 1_566_428_160
    assert _sizes(model) == {
        "encoder_layers": 2,
        "decoder_layers": 24,
        "encoder_embed_dim": 1920,
        "decoder_embed_dim": 1920,
        "encoder_ffn_embed_dim": 7680,
        "decoder_ffn_embed_dim": 7680,
        "encoder_attention_heads": 32,
        "decoder_attention_heads": 32,
    }
    # The same sizes through the generic model plus the preset, and a CLI arch beats a named model's preset.
    same, _ = build(["model=transformer", "arch=dialog_1p6b"])
    assert sum(p.numel() for p in same.parameters()) == 1_566_428_160
    tiny, _ = build(["model=dialog_1p6b", "arch=transformer_tiny"])
    assert _sizes(tiny)["decoder_layers"] == 3


def test_default_is_the_tiny_preset() -> None:
    cfg = compose_train([])
    tiny = OmegaConf.load(CONF_DIR / "arch" / "transformer_tiny.yaml")
    assert all(cfg.model[k] == v for k, v in tiny.items())


@pytest.mark.parametrize(
    "override",
    [
        "model.encoder_layerz=3",
        "task.dataa=x",
        "optimization.max_epochs=3",
        "model.encoder_layers=three",
        "optimizer.lrr=1",
    ],
)
def test_misspelt_keys_are_errors(override: str) -> None:
    with pytest.raises(ConfigCompositionException):
        compose_train([override])


def test_added_unknown_key_fails_when_built() -> None:
    """``+key=`` bypasses Hydra's struct check; building the component still refuses the unknown field."""
    with pytest.raises((TypeError, InstantiationException), match="encoder_layerz"):
        build(["+model.encoder_layerz=3"])
    with pytest.raises((TypeError, InstantiationException), match="dataa"):
        instantiate(compose_train(["+task.dataa=x"]).task)


def test_misspelt_choice_lists_the_options(tmp_path) -> None:
    proc = run_module("runner", ["model=transfomer"], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "transfomer" in proc.stderr and "Available options" in proc.stderr
    assert "transformer_tiny" in proc.stderr


def test_cli_prints_the_composed_job_config_without_training(tmp_path) -> None:
    proc = run_module("runner", ["--cfg", "job", "model=dialog_1p6b"], cwd=tmp_path)
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.model.decoder_layers == 24
    assert not (tmp_path / "data-bin").exists()
