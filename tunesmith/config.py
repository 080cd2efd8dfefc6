"""Typed configuration of a training run: the single source of truth for every option.

YAML files and `--set key=value` overrides parse into `TrainConfig` through `configlib`, which
rejects unknown keys (with a "did you mean") and wrong types with one line naming file, line and
field. Each field is documented here, once; `tunesmith config` prints them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tunesmith import configlib
from tunesmith.configlib import option
from tunesmith.errors import ConfigError
from tunesmith.models.builtins import DEFAULT_MODEL

REGIMENS = ("sft",)  # each is a module tunesmith.regimens.<name> with a train(cfg, ...) function


@dataclass
class ModelConfig:
    name: str = option(DEFAULT_MODEL, "Built-in model name (`tunesmith models`), a local Hugging Face directory, a .gguf file, or a run directory to continue from")


@dataclass
class DataConfig:
    train: str = option(doc="Training data: a JSONL/JSON/CSV/Parquet file, or a .txt/.md file or folder for raw text")
    type: str | None = option(None, "Dataset type (text, prompt_completion, messages, preference, prompt_only, classification); detected from the fields when unset")
    validation: str | None = option(None, "Validation file; when unset, `val_fraction` of the training records is held out")
    val_fraction: float = option(0.1, "Share of training records held out for validation when no validation file is given (0 disables validation)", minimum=0.0, maximum=0.5)
    max_length: int = option(512, "Maximum tokens per example (longer ones are truncated) and the length of packed rows", minimum=16)
    packing: bool = option(True, "Pack several examples into each row (per-document attention masks keep them apart)")
    loss_on: Literal["assistant", "last", "all"] = option("assistant", "Which tokens are trained: every assistant turn, the last assistant turn, or all tokens")
    system_prompt: str | None = option(None, "System prompt added to examples that have none (and used again at evaluation and serving)")


@dataclass
class AdapterConfig:
    mode: Literal["lora", "full", "freeze"] = option("lora", "What is trained: LoRA adapters, all weights, or only the top blocks and the head")
    lora_r: int = option(16, "LoRA rank", minimum=1)
    lora_alpha: float = option(32.0, "LoRA scaling numerator (scale = alpha / r)", minimum=0.0)
    lora_dropout: float = option(0.05, "Dropout on the LoRA input", minimum=0.0, maximum=1.0)
    target_modules: str | list[str] = option("all-linear", "Modules that get LoRA adapters: 'all-linear' or a list of module names such as [q_proj, v_proj]")
    train_top_layers: int = option(2, "freeze mode: how many of the top transformer blocks are trained (with the final norm and the output layer)", minimum=0)


@dataclass
class TrainingConfig:
    epochs: float = option(3.0, "Passes over the training data (fractions allowed); ignored when max_steps is set", minimum=0.0)
    max_steps: int | None = option(None, "Stop after this many optimizer steps", minimum=1)
    batch_size: int = option(8, "Rows per micro-batch", minimum=1)
    gradient_accumulation_steps: int = option(1, "Micro-batches per optimizer step", minimum=1)
    learning_rate: float = option(2e-4, "Peak learning rate", minimum=0.0)
    weight_decay: float = option(0.0, "AdamW weight decay (applied to matrices, not to norms or biases)", minimum=0.0)
    adam_betas: list[float] = option(default_factory=lambda: [0.9, 0.999], doc="AdamW betas")
    scheduler: Literal["cosine", "linear", "constant"] = option("cosine", "Decay after warm-up")
    warmup_ratio: float = option(0.05, "Share of the steps used for linear warm-up", minimum=0.0, maximum=1.0)
    min_lr_ratio: float = option(0.0, "Learning rate at the end, as a share of the peak", minimum=0.0, maximum=1.0)
    max_grad_norm: float | None = option(1.0, "Clip the gradient norm to this (null: no clipping)", minimum=0.0)
    precision: Literal["auto", "bf16", "fp32"] = option("auto", "Compute precision; auto uses bf16 autocast where the hardware supports it (weights stay float32)")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "Where to train; auto picks a GPU when there is one")
    eval_every: int = option(50, "Evaluate validation loss every N optimizer steps (and at the end)", minimum=1)
    save_every: int = option(50, "Write a resumable checkpoint every N optimizer steps (and at the end)", minimum=1)
    keep_checkpoints: int = option(2, "How many recent checkpoints to keep (the best one is kept too)", minimum=1)
    early_stopping_patience: int | None = option(None, "Stop after this many evaluations without a validation-loss improvement", minimum=1)
    early_stopping_min_delta: float = option(0.0, "Smallest validation-loss decrease that counts as an improvement", minimum=0.0)
    select_metric: Literal["val_loss", "exact_match"] = option("val_loss", "What picks the best checkpoint and drives early stopping: validation loss, or exact match of greedy answers to the validation split's last assistant turns")
    load_best: bool = option(True, "Export the checkpoint with the best validation loss (else the last)")
    threads: int | None = option(None, "CPU threads for torch (default: torch's choice)", minimum=1)


@dataclass
class TrainConfig:
    name: str | None = option(None, "Run name: results go to <output_dir>/<name>; defaults to the config file's name")
    regimen: str = option("sft", "How the model is adapted", choices=REGIMENS)
    seed: int = option(0, "Seed for data order, splits, initialisation and dropout")
    output_dir: str = option("runs", "Folder that holds run directories")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = option(doc="Training data", default_factory=lambda: DataConfig(train=""))
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def validate(self) -> None:
        if not self.data.train:
            raise ConfigError("data.train: required field is missing (add it: data.train: path/to/train.jsonl)")
        if self.training.max_steps is None and self.training.epochs <= 0:
            raise ConfigError("training.epochs: must be > 0 when training.max_steps is unset")
        if len(self.training.adam_betas) != 2:
            raise ConfigError("training.adam_betas: expected two numbers, e.g. [0.9, 0.999]")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / str(self.name)


def load_train_config(path: str | Path | None = None, overrides=(), *, base: dict | None = None) -> TrainConfig:
    """Parse and validate a training config (no model or data is touched)."""
    cfg = configlib.load_config(TrainConfig, path, overrides, base=base)
    if not cfg.name:
        cfg.name = Path(path).stem if path else "run"
    return cfg
