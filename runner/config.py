"""Typed schemas for every config group, registered in Hydra's ConfigStore.

The YAML files in conf/ extend these dataclasses (``defaults: [/schema/GROUP/NAME@_here_, _self_]``), so a misspelt
key is rejected by OmegaConf instead of being silently ignored, which is the fairseq failure this project exists to fix.
Field names follow fairseq's so that its users recognise them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"


# --------------------------------------------------------------------------------------------------------- trainer
@dataclass
class CommonConfig:
    """Process-wide settings: seeding, precision, logging."""

    seed: int = 1
    bf16: bool = False  # bf16 autocast for forward/backward; master weights stay fp32
    cpu: bool = False  # force the CPU even when a GPU is present
    threads: int = 0  # torch.set_num_threads; 0 keeps torch's default
    log_interval: int = 100  # updates between plain log lines (and JSON-lines records)
    log_format: str = "auto"  # auto (tqdm on a terminal, plain otherwise) | tqdm | simple | none
    meters_file: str = "${hydra:runtime.output_dir}/meters.jsonl"


@dataclass
class DatasetConfig:
    """Batching and validation cadence (fairseq's dataset section)."""

    max_tokens: Optional[int] = 4096  # batch size x longest example in the batch stays under this
    batch_size: Optional[int] = None  # at most this many sentences per batch
    required_batch_size_multiple: int = 1  # batch sizes rounded down to a multiple; a remainder batch is kept
    train_subset: str = "train"
    valid_subset: str = "valid"
    skip_invalid_size_inputs_valid_test: bool = False  # skip over-long valid/test examples instead of failing
    validate_interval: int = 1  # validate every N epochs
    validate_interval_updates: int = 0  # and every N updates (0: off)
    disable_validation: bool = False


@dataclass
class OptimizationConfig:
    """When to stop and how to turn gradients into updates."""

    max_epoch: int = 0  # 0: no limit
    max_update: int = 0  # 0: no limit
    stop_time_hours: float = 0.0  # cumulative training wall time, across resumes; 0: no limit
    update_freq: int = 1  # micro-batches accumulated per update
    clip_norm: float = 0.0  # 0: no clipping
    max_nonfinite_updates: int = 5  # consecutive NaN/inf updates skipped before training stops


@dataclass
class CheckpointConfig:
    """Where and when checkpoints are written, and how a run starts from one."""

    save_dir: str = "${hydra:runtime.output_dir}/checkpoints"
    restore_file: str = "checkpoint_last.pt"  # relative to save_dir, or a path
    finetune_from_model: Optional[str] = None  # initial weights, used only when no restore_file exists
    reset_optimizer: bool = False
    reset_lr_scheduler: bool = False
    reset_dataloader: bool = False
    reset_meters: bool = False
    save_interval: int = 1  # epochs between epoch checkpoints
    save_interval_updates: int = 0  # updates between mid-epoch checkpoints (0: off)
    keep_interval_updates: int = -1  # keep the last N update checkpoints (-1: all)
    keep_last_epochs: int = -1  # keep the last N epoch checkpoints (-1: all)
    no_epoch_checkpoints: bool = False  # only checkpoint_best/last at epoch ends
    no_save: bool = False
    background_save: bool = True  # write checkpoints in a thread from a CPU snapshot; training waits only for the copy
    save_optimizer_state: bool = True  # false: smaller, faster checkpoints; a resume then restarts the optimizer
    best_checkpoint_metric: str = "loss"
    maximize_best_checkpoint_metric: bool = False
    patience: int = -1  # stop after N validations without improvement (-1: never)


@dataclass
class TrackingConfig:
    """Where MLflow records the run and what goes with it (runner/tracking.py)."""

    enabled: bool = True
    uri: Optional[str] = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db
    experiment: str = "runner"
    run_name: Optional[str] = None  # null: the job's overrides (the run folder's name)
    # For a new experiment; null: <folder of the SQLite file>/mlartifacts/<experiment>, or the server's default.
    artifact_location: Optional[str] = None
    log_checkpoint: str = "config"  # none | config (the best checkpoint's config) | weights (also checkpoint_best.pt)
    flush_interval: float = 30.0  # seconds between metric batches (one request each)
    retry_interval: float = 60.0  # seconds before trying an unreachable store again (meanwhile: the spool)
    http_timeout: int = 10  # seconds per request to a tracking server
    spool_file: Optional[str] = None  # what could not be sent yet; null: mlflow_spool.jsonl in the run folder


@dataclass
class DistributedConfig:
    """Several processes (torchrun, or a SLURM job with several tasks); ignored in a single process."""

    strategy: str = "ddp"  # ddp: a replica per process | fsdp: parameters, grads and optimizer state sharded
    backend: str = "auto"  # gloo on CPU, nccl on GPU
    timeout_s: int = 900  # a collective waiting this long (a rank died without its launcher noticing) fails


# ------------------------------------------------------------------------------------------------------------ task
@dataclass
class VocabularyConfig:
    """How raw text becomes ids, shared by every text task: sentencepiece, a fairseq dictionary, <unk> limits."""

    spm_model: Optional[str] = None  # an existing sentencepiece model; trained on the train split when null
    vocab_size: int = 8000  # for a trained sentencepiece model
    spm_model_type: str = "unigram"
    character_coverage: float = 0.9995
    dict_path: Optional[str] = None  # an existing fairseq dict.txt; built from the train split when null
    # dict.txt = the sentencepiece pieces in id order, count 100 each (NTT's sp_oall_32k.txt), instead of counts
    dict_from_spm: bool = False
    spm_options: dict[str, Any] = field(default_factory=dict)  # further sentencepiece trainer flags, e.g. unk_id
    unk_warn_rate: float = 0.02  # warn loudly above this share of <unk> tokens in a split
    max_unk_rate: float = 0.2  # above this the dictionary does not fit the data: error


@dataclass
class TranslationConfig(VocabularyConfig):
    """Parallel text in ``{data}/{split}.{lang}``, tokenized with sentencepiece, binarized into ``data_bin``."""

    _target_: str = "runner.tasks.translation.TranslationTask"
    data: str = MISSING
    source_lang: str = MISSING
    target_lang: str = MISSING
    data_bin: str = "data-bin/${path_name:${task.data}}"
    splits: list[str] = field(default_factory=lambda: ["train", "valid", "test"])


@dataclass
class LanguageModelingConfig(VocabularyConfig):
    """Monolingual text ``{data}/{split}.{lang}`` (``{split}.txt`` when lang is null), as one token stream cut into
    fixed-length blocks (fairseq's language_modeling task)."""

    _target_: str = "runner.tasks.language_modeling.LanguageModelingTask"
    data: str = MISSING
    lang: Optional[str] = None
    data_bin: str = "data-bin/${path_name:${task.data}}-lm"
    splits: list[str] = field(default_factory=lambda: ["train", "valid", "test"])
    tokens_per_sample: int = 128  # block length
    sample_break_mode: str = "none"  # none: fixed blocks across sentences | eos: one sentence per sample


# NTT's vocabulary (shared/notes/ntt-dialog-1p6b.md): speaker tags kept whole at sentencepiece ids 2-6 behind <unk>
# and </s>, no dummy prefix, NFKC + case folding; with dict_from_spm, fairseq id = sentencepiece id + 2.
NTT_USER_SYMBOLS = ["[CLS]", "[SEP]", "[SPK1]", "[SPK2]", "<mask>"]
NTT_SPM_OPTIONS: dict[str, Any] = {
    "unk_id": 0,
    "eos_id": 1,
    "bos_id": -1,
    "pad_id": -1,
    "add_dummy_prefix": False,
    "normalization_rule_name": "nmt_nfkc_cf",
    "hard_vocab_limit": False,  # vocab_size is an upper bound: small dialog corpora have fewer pieces
}


@dataclass
class DialogConfig(VocabularyConfig):
    """Context -> next turn pairs from multi-turn dialogs (runner/tasks/dialog.py), in NTT's format and vocabulary.

    ``format``: ``chatterbot`` (every ``*.yml`` in ``data``, split by conversation), ``tsv`` (``{split}.tsv`` lines
    ``context<TAB>response``) or ``src_dst`` (``{split}.src`` / ``{split}.dst``); ``auto`` picks by the files present.
    """

    _target_: str = "runner.tasks.dialog.DialogTask"
    data: str = MISSING
    format: str = "auto"  # auto | chatterbot | tsv | src_dst
    data_bin: str = "data-bin/${path_name:${task.data}}-dialog"
    splits: list[str] = field(default_factory=lambda: ["train", "valid", "test"])
    split_every: int = 10  # chatterbot: conversation i is valid when i % N == N - 2, test when i % N == N - 1
    context_turns: int = 4  # turns in the source, the newest user turn included
    max_context_chars: int = 512  # source characters; the oldest turns go first
    user_tag: str = "[SPK2]"
    system_tag: str = "[SPK1]"
    separator: str = "[SEP]"
    user_defined_symbols: list[str] = field(default_factory=lambda: list(NTT_USER_SYMBOLS))
    vocab_size: int = 4000
    dict_from_spm: bool = True
    spm_options: dict[str, Any] = field(default_factory=lambda: dict(NTT_SPM_OPTIONS))


# ----------------------------------------------------------------------------------------------------------- model
@dataclass
class TransformerConfig:
    """Encoder-decoder transformer; defaults are fairseq's ``transformer`` (base) architecture."""

    _target_: str = "runner.models.transformer.TransformerModel.build"
    encoder_embed_dim: int = 512
    encoder_ffn_embed_dim: int = 2048
    encoder_layers: int = 6
    encoder_attention_heads: int = 8
    encoder_normalize_before: bool = False
    encoder_learned_pos: bool = False
    decoder_embed_dim: int = 512
    decoder_ffn_embed_dim: int = 2048
    decoder_layers: int = 6
    decoder_attention_heads: int = 8
    decoder_normalize_before: bool = False
    decoder_learned_pos: bool = False
    activation_fn: str = "relu"  # relu | gelu
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    share_decoder_input_output_embed: bool = False
    share_all_embeddings: bool = False
    no_scale_embedding: bool = False
    max_source_positions: int = 1024
    max_target_positions: int = 1024


@dataclass
class TransformerLMConfig:
    """Decoder-only transformer language model; defaults are fairseq's ``transformer_lm`` architecture."""

    _target_: str = "runner.models.transformer_lm.TransformerLanguageModel.build"
    decoder_embed_dim: int = 512
    decoder_ffn_embed_dim: int = 2048
    decoder_layers: int = 6
    decoder_attention_heads: int = 8
    decoder_normalize_before: bool = False
    decoder_learned_pos: bool = False
    activation_fn: str = "relu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    share_decoder_input_output_embed: bool = False
    no_scale_embedding: bool = False
    max_target_positions: int = 1024  # must cover task.tokens_per_sample (+ eval_lm's context_window)


# -------------------------------------------------------------------------------------------------------- criteria
@dataclass
class CrossEntropyConfig:
    _target_: str = "runner.criteria.CrossEntropyCriterion"


@dataclass
class LabelSmoothedCrossEntropyConfig:
    _target_: str = "runner.criteria.LabelSmoothedCrossEntropyCriterion"
    label_smoothing: float = 0.1


# ------------------------------------------------------------------------------------------------------ optimizers
@dataclass
class AdamConfig:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class AdamWConfig(AdamConfig):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = 0.01


@dataclass
class AdafactorConfig:
    """torch.optim.Adafactor: relative step sizes are off; ``lr`` is used as given (as fine-tuning scripts do)."""

    _target_: str = "torch.optim.Adafactor"
    _partial_: bool = True
    _convert_: str = "all"  # eps as a plain list: a ListConfig in param_groups would not load with weights_only
    lr: float = 1e-3
    beta2_decay: float = -0.8
    eps: list[Optional[float]] = field(default_factory=lambda: [None, 1e-3])
    d: float = 1.0
    weight_decay: float = 0.0


@dataclass
class SGDConfig:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False


# --------------------------------------------------------------------------------------------------- lr schedulers
@dataclass
class FixedLRConfig:
    _target_: str = "runner.lr_scheduler.FixedLR"
    _partial_: bool = True
    lr_shrink: float = 1.0  # multiply the lr by this when validation does not improve (1.0: never)


@dataclass
class InverseSqrtConfig:
    _target_: str = "runner.lr_scheduler.InverseSquareRootLR"
    _partial_: bool = True
    warmup_updates: int = 4000
    warmup_init_lr: float = 0.0


@dataclass
class CosineConfig:
    """torch's CosineAnnealingLR stepped per update; ``T_max`` defaults to ``optimization.max_update``."""

    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    _partial_: bool = True
    T_max: int = "${optimization.max_update}"  # type: ignore[assignment]
    eta_min: float = 0.0


@dataclass
class PolynomialDecayConfig:
    """torch's PolynomialLR stepped per update, reaching 0 at ``total_iters`` (default ``optimization.max_update``)."""

    _target_: str = "torch.optim.lr_scheduler.PolynomialLR"
    _partial_: bool = True
    total_iters: int = "${optimization.max_update}"  # type: ignore[assignment]
    power: float = 1.0


@dataclass
class ReduceLROnPlateauConfig:
    """torch's ReduceLROnPlateau stepped after each validation with the validation loss."""

    _target_: str = "torch.optim.lr_scheduler.ReduceLROnPlateau"
    _partial_: bool = True
    mode: str = "min"
    factor: float = 0.1
    patience: int = 0
    threshold: float = 1e-4
    min_lr: float = 0.0


# --------------------------------------------------------------------------------------------------------- primary
@dataclass
class TrainConfig:
    """The primary config of ``python -m runner``: one node per group plus the trainer's sections."""

    task: Any = MISSING
    model: Any = MISSING
    criterion: Any = MISSING
    optimizer: Any = MISSING
    lr_scheduler: Any = MISSING
    common: CommonConfig = field(default_factory=CommonConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    # Plug-in package folder(s), fairseq's --user-dir: conf/ joins the search path, _target_ imports (runner/plugins.py)
    user_dir: Any = None


@dataclass
class PreprocessConfig:
    """The primary config of ``python -m runner.preprocess``."""

    task: Any = MISSING
    force: bool = False  # rebuild even when the cached data is up to date


# ------------------------------------------------------------------------------------- generate, score, eval-lm
@dataclass
class GenerationConfig:
    """Search settings, with fairseq's names and defaults; greedy decoding is ``beam=1``."""

    beam: int = 5
    nbest: int = 1  # hypotheses returned per input (<= beam)
    max_len_a: float = 0.0  # max length = max_len_a * source length + max_len_b, per sentence
    max_len_b: int = 200
    min_len: int = 1  # </s> is blocked before this many tokens
    lenpen: float = 1.0  # score = sum log-probs / length ** lenpen
    unkpen: float = 0.0  # subtracted from <unk>'s log-probability
    no_repeat_ngram_size: int = 0  # 0: off
    prefix_size: int = 0  # force the first N reference tokens (runner.generate)
    sampling: bool = False  # sample beam hypotheses instead of beam search
    sampling_topk: int = -1  # sample among the k most likely tokens (-1: all)
    sampling_topp: float = -1.0  # sample from the smallest set whose probability reaches p (-1: off)
    temperature: float = 1.0
    seed: int = 1  # for sampling
    use_cache: bool = True  # incremental key/value cache; false recomputes the whole prefix every step


@dataclass
class InferenceConfig:
    """Device and precision for the inference commands."""

    cpu: bool = False
    threads: int = 0  # torch.set_num_threads; 0 keeps torch's default
    bf16: bool = False


@dataclass
class ScoringConfig:
    """sacrebleu metrics on detokenized text (offline: local files only)."""

    metrics: list[str] = field(default_factory=lambda: ["bleu", "chrf", "ter"])
    tokenize: str = "auto"  # auto: ja-mecab for Japanese targets, zh for Chinese, ko-mecab for Korean, else 13a
    lowercase: bool = False


@dataclass
class GenerateConfig:
    """The primary config of ``python -m runner.generate`` (fairseq-generate)."""

    path: str = MISSING  # checkpoint
    gen_subset: str = "test"
    data: Optional[str] = None  # folder of {split}.{src}/{split}.{tgt}; default: the checkpoint's task.data
    spm_model: Optional[str] = None  # default: the sentencepiece model recorded in the checkpoint
    max_tokens: Optional[int] = 12000  # source tokens x beam per batch
    batch_size: Optional[int] = 128
    long_inputs: str = "truncate"  # over-long source: truncate | skip (empty hypothesis) | error (all warn)
    input_order: bool = False  # print in input order instead of batch order
    results_path: Optional[str] = None  # folder for generate-{split}.txt (written as it goes) and hypotheses
    quiet: bool = False  # only the summary lines
    score: bool = True  # sacrebleu against the reference side, when it exists
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    common: InferenceConfig = field(default_factory=InferenceConfig)
    user_dir: Any = None  # plug-in folder(s) the model needs; default: the checkpoint's own user_dir


@dataclass
class DialogHistoryConfig:
    """Multi-turn context as NTT's dialog scripts build it (shared/notes/ntt-dialog-1p6b.md)."""

    enabled: Optional[bool] = None  # null: on when the checkpoint's task is a dialog task
    turns: int = 4  # turns in the context, the new user utterance included
    user_tag: str = "[SPK2]"
    system_tag: str = "[SPK1]"
    separator: str = "[SEP]"
    max_chars: int = 512  # context characters; the oldest turns go first


@dataclass
class RerankConfig:
    """Choose the reply among the nbest hypotheses by score minus penalties."""

    unk_penalty: float = 100.0  # per <unk> in a hypothesis


@dataclass
class InteractiveConfig:
    """The primary config of ``python -m runner.interactive`` (fairseq-interactive with dialog history)."""

    path: str = MISSING
    spm_model: Optional[str] = None
    input: str = "-"  # '-' reads stdin (a prompt on a terminal), else a file
    long_inputs: str = "truncate"  # truncate | skip | error
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    history: DialogHistoryConfig = field(default_factory=DialogHistoryConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    common: InferenceConfig = field(default_factory=InferenceConfig)


@dataclass
class ScoreConfig:
    """The primary config of ``python -m runner.score`` (fairseq-score, with sacrebleu)."""

    sys: str = MISSING  # system output, one detokenized hypothesis per line
    ref: str = MISSING  # reference, aligned line by line
    target_lang: Optional[str] = None  # default: the reference file's suffix (test.ja -> ja)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)


@dataclass
class CompareConfig:
    """The primary config of ``python -m runner.compare``: a table (and a plot) of runs read from MLflow."""

    uri: Optional[str] = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db
    experiment: str = "runner"
    sweep: Optional[str] = None  # a sweep folder (multirun/DATE/TIME) or a parent run id: only that sweep's jobs
    filter: str = ""  # MLflow search syntax, e.g. params.optimizer.lr = '0.002' and metrics.`valid/loss` < 9
    params: Optional[list[str]] = None  # param columns; null: the params whose values differ between the runs
    metrics: list[str] = field(default_factory=lambda: ["valid/loss", "train_inner/loss"])  # final and best of each
    sort: str = "valid/loss"  # the metric whose best value orders the table, best run first
    maximize: list[str] = field(default_factory=list)  # metrics where larger is better (bleu, chrf, acc: always)
    max_runs: int = 1000
    plot: Optional[str] = None  # a PNG file: plot_metric over updates for every run in the table
    plot_metric: str = "valid/loss"


@dataclass
class EvalLMConfig:
    """The primary config of ``python -m runner.eval_lm``: loss and perplexity of a split (base 2, as fairseq)."""

    path: str = MISSING
    gen_subset: str = "test"
    data: Optional[str] = None
    spm_model: Optional[str] = None
    tokens_per_sample: Optional[int] = None  # default: the checkpoint's task.tokens_per_sample
    context_window: int = 0  # tokens of preceding context given to each block, not scored
    max_tokens: Optional[int] = 4096
    batch_size: Optional[int] = None
    common: InferenceConfig = field(default_factory=InferenceConfig)


@dataclass
class ConvertConfig:
    """The primary config of ``python -m runner.convert``: a fairseq transformer checkpoint written as one of ours."""

    path: str = MISSING  # the fairseq checkpoint (.pt)
    output: str = MISSING  # our checkpoint to write
    dict_path: Optional[str] = None  # default: dict.txt (or dict.{src}.txt = dict.{tgt}.txt) beside the checkpoint
    spm_model: Optional[str] = None  # the sentencepiece model its dictionary's pieces come from (for generate)
    source_lang: Optional[str] = None  # default: the checkpoint's task.source_lang
    target_lang: Optional[str] = None  # default: the checkpoint's task.target_lang
    data: Optional[str] = None  # raw text folder recorded as task.data (generate's default data=)


@dataclass
class ExportConfig:
    """The primary config of ``python -m runner.export``: a checkpoint of ours as a self-contained folder."""

    path: str = MISSING  # our checkpoint (.pt)
    output: str = MISSING  # folder: model.safetensors, config.yaml, dict.txt, the sentencepiece model
    spm_model: Optional[str] = None  # default: the sentencepiece model recorded in the checkpoint


SCHEMAS: dict[str, dict[str, type]] = {
    "task": {"translation": TranslationConfig, "language_modeling": LanguageModelingConfig, "dialog": DialogConfig},
    "model": {"transformer": TransformerConfig, "transformer_lm": TransformerLMConfig},
    "criterion": {
        "cross_entropy": CrossEntropyConfig,
        "label_smoothed_cross_entropy": LabelSmoothedCrossEntropyConfig,
    },
    "optimizer": {"adam": AdamConfig, "adamw": AdamWConfig, "adafactor": AdafactorConfig, "sgd": SGDConfig},
    "lr_scheduler": {
        "fixed": FixedLRConfig,
        "inverse_sqrt": InverseSqrtConfig,
        "cosine": CosineConfig,
        "polynomial_decay": PolynomialDecayConfig,
        "reduce_lr_on_plateau": ReduceLROnPlateauConfig,
    },
}


def _run_name(override_dirname: str) -> str:
    """Folder name of a single run: its overrides, so that re-running the same command finds (and resumes) it."""
    return override_dirname.replace("/", "_") or "default"


def register_configs() -> None:
    """Put every schema in the ConfigStore (under ``schema/``) and register our OmegaConf resolvers; idempotent."""
    cs = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
    cs.store(name="schema_train", node=TrainConfig)
    cs.store(name="schema_preprocess", node=PreprocessConfig)
    for name, node in (
        ("generate", GenerateConfig),
        ("interactive", InteractiveConfig),
        ("score", ScoreConfig),
        ("eval_lm", EvalLMConfig),
        ("compare", CompareConfig),
        ("convert", ConvertConfig),
        ("export", ExportConfig),
    ):
        cs.store(name=f"schema_{name}", node=node)
    if not OmegaConf.has_resolver("path_name"):
        OmegaConf.register_new_resolver("path_name", lambda p: Path(str(p)).name)
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", _run_name)
    if not OmegaConf.has_resolver("repo_root"):
        OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT))


register_configs()
