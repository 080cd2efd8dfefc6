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
from tunesmith.configlib import SEED_MAX, option
from tunesmith.errors import ConfigError
from tunesmith.rundir import check_name
from tunesmith.models.builtins import DEFAULT_MODEL

# Each is a module tunesmith.regimens.<name> with a train(cfg, ...) function.
REGIMENS = ("sft", "prompt", "rag", "cpt", "head", "dpo", "grpo")


@dataclass
class ModelConfig:
    name: str = option(DEFAULT_MODEL, "Built-in model name (`tunesmith models`), a local Hugging Face directory, a .gguf file, or a run directory to continue from")


@dataclass
class DataConfig:
    train: str = option(doc="Training data: a JSONL/JSON/CSV/Parquet file, or a .txt/.md file or folder for raw text")
    type: str | None = option(None, "Dataset type (text, prompt_completion, messages, preference, prompt_only, classification); detected from the fields when unset")
    validation: str | None = option(None, "Validation file; when unset, `val_fraction` of the training records is held out")
    val_fraction: float = option(0.1, "Share of training records held out for validation when no validation file is given (0 disables validation)", minimum=0.0, maximum=0.5)
    max_length: int = option(512, "Maximum tokens per example (longer ones are truncated) and the length of packed rows", minimum=16, maximum=131072)
    packing: bool = option(True, "Pack several examples into each row (per-document attention masks keep them apart)")
    group_by_length: bool = option(True, "sft: batch rows of similar length together (rows are shuffled, sorted by length within windows of 64 batches, and the batches shuffled; deterministic by seed), so fewer computed positions are padding")
    loss_on: Literal["assistant", "last", "all"] = option("assistant", "Which tokens are trained: every assistant turn, the last assistant turn, or all tokens")
    system_prompt: str | None = option(None, "System prompt added to examples that have none (and used again at evaluation and serving)")


@dataclass
class AdapterConfig:
    mode: Literal["lora", "qlora", "full", "freeze"] = option("lora", "What is trained: LoRA adapters, LoRA adapters on a 4-bit quantized frozen base (QLoRA, bitsandbytes: pip install 'tunesmith[qlora]'), all weights, or only the top blocks and the head")
    lora_r: int = option(16, "LoRA rank", minimum=1, maximum=4096)
    lora_alpha: float = option(32.0, "LoRA scaling numerator (scale = alpha / r)", minimum=0.0, maximum=100000.0)
    lora_dropout: float = option(0.05, "Dropout on the LoRA input", minimum=0.0, maximum=1.0)
    target_modules: str | list[str] = option("all-linear", "Modules that get LoRA adapters: 'all-linear' or a list of module names such as [q_proj, v_proj]")
    quant_type: Literal["nf4", "fp4"] = option("nf4", "qlora: 4-bit data type of the frozen base (NF4, the QLoRA paper's NormalFloat, or plain FP4)")
    double_quant: bool = option(True, "qlora: also quantize the per-block scales (about 0.4 bits per weight less, the QLoRA paper's double quantization)")
    train_top_layers: int = option(2, "freeze mode: how many of the top transformer blocks are trained (with the final norm and the output layer)", minimum=0, maximum=10000)


@dataclass
class TrainingConfig:
    epochs: float = option(3.0, "Passes over the training data (fractions allowed); ignored when max_steps is set", minimum=0.0, maximum=100000.0)
    max_steps: int | None = option(None, "Stop after this many optimizer steps", minimum=1, maximum=100_000_000)
    batch_size: int = option(8, "Rows per micro-batch", minimum=1, maximum=65536)
    gradient_accumulation_steps: int = option(1, "Micro-batches per optimizer step", minimum=1, maximum=65536)
    learning_rate: float = option(2e-4, "Peak learning rate", minimum=0.0, maximum=10.0)
    weight_decay: float = option(0.0, "AdamW weight decay (applied to matrices, not to norms or biases)", minimum=0.0, maximum=100.0)
    adam_betas: list[float] = option(default_factory=lambda: [0.9, 0.999], doc="AdamW betas (each in [0, 1): a beta of 1 divides by zero in the bias correction)", minimum=0.0, maximum=0.99999)
    scheduler: Literal["cosine", "linear", "constant"] = option("cosine", "Decay after warm-up")
    warmup_ratio: float = option(0.05, "Share of the steps used for linear warm-up", minimum=0.0, maximum=1.0)
    min_lr_ratio: float = option(0.0, "Learning rate at the end, as a share of the peak", minimum=0.0, maximum=1.0)
    max_grad_norm: float | None = option(1.0, "Clip the gradient norm to this (null: no clipping)", minimum=0.0, maximum=1e6)
    precision: Literal["auto", "bf16", "fp32"] = option("auto", "Compute precision; auto uses bf16 autocast where the hardware supports it (weights stay float32)")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "Where to train; auto picks a GPU when there is one")
    eval_every: int = option(50, "Evaluate validation loss every N optimizer steps (and at the end)", minimum=1, maximum=100_000_000)
    save_every: int = option(50, "Write a resumable checkpoint every N optimizer steps (and at the end)", minimum=1, maximum=100_000_000)
    keep_checkpoints: int = option(2, "How many recent checkpoints to keep (the best one is kept too)", minimum=1, maximum=10000)
    early_stopping_patience: int | None = option(None, "Stop after this many evaluations without a validation-loss improvement", minimum=1, maximum=1_000_000)
    early_stopping_min_delta: float = option(0.0, "Smallest validation-loss decrease that counts as an improvement", minimum=0.0, maximum=1e6)
    select_metric: Literal["val_loss", "exact_match"] = option("val_loss", "What picks the best checkpoint and drives early stopping: validation loss, or exact match of greedy answers to the validation split's last assistant turns")
    load_best: bool = option(True, "Export the checkpoint with the best validation loss (else the last)")
    base_dtype: Literal["auto", "fp32", "bf16"] = option("auto", "sft, cpt: dtype of the frozen base weights under LoRA (adapters and optimizer state stay float32); auto: bf16 when the training precision is bf16, which halves base memory and removes autocast's per-step weight casts")
    gradient_checkpointing: bool = option(False, "sft, cpt: recompute each block's activations in the backward pass instead of keeping them: much less memory, about a third more compute")
    fused_optimizer: bool = option(True, "Use torch's fused AdamW kernel where the device supports it (same update, fewer passes over the parameters)")
    compile: bool = option(False, "sft, cpt: torch.compile the model before training (compiles on the first steps; pays off only on long runs)")
    threads: int | None = option(None, "CPU threads for torch (default: torch's choice; under torchrun on CPU, the cores divided among the processes)", minimum=1, maximum=4096)
    distributed: Literal["ddp", "fsdp"] = option("ddp", "Under torchrun (`tunesmith train --nproc N`): ddp keeps a whole copy of the model in every process and all-reduces the gradients; fsdp shards weights, gradients and optimizer state with FSDP2 (sft, cpt and dpo). One process: ignored. The global batch stays batch_size x gradient_accumulation_steps rows whatever the number of processes")


@dataclass
class PromptingConfig:
    template: str = option("{question}", "User turn template; {question} is the question as the data gives it (rag adds {passages})")
    shots: int = option(0, "Few-shot examples (from data.train) placed before each question", minimum=0, maximum=1000)
    shot_selection: Literal["random", "similar"] = option("random", "random: one seeded set for every question; similar: the most similar training examples per question (sentence embeddings)")


@dataclass
class RagConfig:
    corpus: str | None = option(None, "The domain corpus to retrieve from (a text dataset: JSONL with text/id/title, or a folder of .txt/.md)")
    method: Literal["bm25", "embedding", "hybrid"] = option("hybrid", "Retriever: BM25, sentence embeddings, or their reciprocal-rank fusion")
    top_k: int = option(3, "Passages inserted into each prompt", minimum=1, maximum=1000)
    chunk_words: int = option(120, "Chunk length in words", minimum=10, maximum=1_000_000)
    overlap_words: int = option(30, "Words shared by consecutive chunks", minimum=0, maximum=1_000_000)
    template: str = option("Use these passages from the documentation when they help.\n\n{passages}\n\nQuestion: {question}",
                           "User turn template with {passages} (source-tagged) and {question}")


@dataclass
class CptConfig:
    general_share: float = option(0.0, "Share of general text mixed into continued pre-training to limit forgetting", minimum=0.0, maximum=0.9)
    general_text: str | None = option(None, "General text to mix in (text dataset); default: tunesmith's shipped general-text sample")


@dataclass
class HeadConfig:
    train: Literal["head", "lora", "full"] = option("head", "What trains with the classification head: the head only, the head plus LoRA adapters (adapter.*), or everything")
    class_weights: bool = option(True, "Weight the loss by inverse class frequency (for imbalanced labels)")


@dataclass
class DpoConfig:
    beta: float = option(0.1, "Strength of the preference (inverse temperature of the implicit reward)", minimum=0.0, maximum=1000.0)
    loss: Literal["sigmoid", "ipo", "simpo"] = option("sigmoid", "sigmoid: DPO; ipo: Identity Preference Optimisation; simpo: reference-free SimPO")
    label_smoothing: float = option(0.0, "Conservative DPO: assumed share of flipped preference labels", minimum=0.0, maximum=0.5)
    simpo_gamma: float = option(0.5, "SimPO target reward margin", minimum=0.0, maximum=1000.0)


@dataclass
class GrpoConfig:
    group_size: int = option(4, "Completions sampled per prompt", minimum=2, maximum=1024)
    prompts_per_step: int = option(4, "Prompts per optimizer step", minimum=1, maximum=65536)
    max_new_tokens: int = option(32, "Longest sampled completion", minimum=1, maximum=131072)
    temperature: float = option(1.0, "Sampling temperature", minimum=0.01, maximum=100.0)
    top_p: float = option(1.0, "Nucleus sampling", minimum=0.0, maximum=1.0)
    clip_eps: float = option(0.2, "PPO-style clipping of the probability ratio", minimum=0.0, maximum=100.0)
    kl_coef: float = option(0.04, "Weight of the KL penalty to the starting model (0 disables it)", minimum=0.0, maximum=1000.0)
    scale_advantages: bool = option(True, "Divide each group's centred rewards by the group's std (GRPO); false: centre only (Dr. GRPO), which does not up-weight prompts whose rewards barely differ")
    updates_per_batch: int = option(1, "Optimizer passes over each batch of sampled completions", minimum=1, maximum=1000)
    rewards: dict[str, float] = option(default_factory=lambda: {"exact_match": 1.0}, doc="Reward functions and their weights: built-ins (exact_match, numeric_match, code_tests, format_regex, length_penalty) or 'module:function'", minimum=-1000.0, maximum=1000.0)
    reward_options: dict[str, dict] = option(default_factory=dict, doc="Keyword arguments per reward, e.g. {length_penalty: {max_words: 30}}")


@dataclass
class TrainConfig:
    name: str | None = option(None, "Run name: results go to <output_dir>/<name>; defaults to the config file's name")
    regimen: str = option("sft", "How the model is adapted", choices=REGIMENS)
    seed: int = option(0, "Seed for data order, splits, initialisation and dropout", minimum=0, maximum=SEED_MAX)
    output_dir: str = option("runs", "Folder that holds run directories")
    init_from: str | None = option(None, "Start from another run's output (runs/<name>): e.g. SFT after continued pre-training; the chain is recorded")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = option(doc="Training data", default_factory=lambda: DataConfig(train=""))
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    prompting: PromptingConfig = field(default_factory=PromptingConfig)
    rag: RagConfig = field(default_factory=RagConfig)
    cpt: CptConfig = field(default_factory=CptConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    dpo: DpoConfig = field(default_factory=DpoConfig)
    grpo: GrpoConfig = field(default_factory=GrpoConfig)

    def validate(self) -> None:
        if self.name is not None:
            check_name(self.name, "name")  # one folder under output_dir, never ../ or an absolute path
        if self.regimen == "rag" and not self.rag.corpus:
            raise ConfigError("rag.corpus: required for regimen rag (the domain documents to retrieve from)")
        zero_shot = self.regimen in ("prompt", "rag") and self.prompting.shots == 0
        if not self.data.train and not zero_shot:
            raise ConfigError("data.train: required field is missing (add it: data.train: path/to/train.jsonl)")
        if self.training.max_steps is None and self.training.epochs <= 0:
            raise ConfigError("training.epochs: must be > 0 when training.max_steps is unset")
        if len(self.training.adam_betas) != 2:
            raise ConfigError("training.adam_betas: expected two numbers, e.g. [0.9, 0.999]")
        if self.rag.overlap_words >= self.rag.chunk_words:
            raise ConfigError(f"rag.overlap_words: must be below rag.chunk_words ({self.rag.chunk_words}), "
                              f"got {self.rag.overlap_words}")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / str(self.name)

    @property
    def start_model(self) -> str:
        """What training starts from: another run's output when init_from is set."""
        return self.init_from or self.model.name


def load_train_config(path: str | Path | None = None, overrides=(), *, base: dict | None = None) -> TrainConfig:
    """Parse and validate a training config (no model or data is touched)."""
    cfg = configlib.load_config(TrainConfig, path, overrides, base=base)
    if not cfg.name:
        cfg.name = Path(path).stem if path else "run"
        try:
            check_name(cfg.name, "name")
        except ConfigError as e:
            raise ConfigError(f"{path}: {e} (the run is named after the config file; set name: in it)") from None
    return cfg
