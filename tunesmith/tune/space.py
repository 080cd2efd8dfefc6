"""What a hyperparameter search explores: the typed SPACE.yaml (`SearchSpace`), the default space
of each regimen (with where each range comes from; docs/tuning.md shows them), the metric each
regimen is judged by on its validation split, and the check that every searched key is a real,
bounded training-config option.

SPACE.yaml parses through `configlib` like every tunesmith config (unknown keys are one-line
errors with a "did you mean"); a searched key names a TrainConfig option by its dotted path
(`training.learning_rate`) and its range must lie inside that option's own bounds.
The ranges are handed to Optuna's `suggest_*` calls (tunesmith.tune.search): Optuna is a
well-kept library whose TPE sampler, pruners and journal storage we use rather than rewrite.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunesmith import configlib
from tunesmith.config import TrainConfig
from tunesmith.configlib import SEED_MAX, option
from tunesmith.errors import ConfigError

BOUND = 1e12  # the widest range a searched number may span (configlib needs every number bounded)


@dataclass
class ParamRange:
    low: float | None = option(None, "Lowest value (numbers)", minimum=-BOUND, maximum=BOUND)
    high: float | None = option(None, "Highest value (numbers)", minimum=-BOUND, maximum=BOUND)
    log: bool = option(False, "Sample on a log scale (learning rates, KL weights)")
    step: float | None = option(None, "Grid step between low and high (integers default to 1)", minimum=0.0, maximum=BOUND)
    choices: list[Any] | None = option(None, "A list of values to choose from instead of a range (numbers, strings, true/false or null)")

    def validate(self) -> None:
        if self.choices is not None:
            if not self.choices:
                raise ConfigError("choices: list at least one value")
            if self.low is not None or self.high is not None:
                raise ConfigError("give either choices or low/high, not both")
            bad = [c for c in self.choices if not (c is None or isinstance(c, (str, int, float, bool)))]
            if bad:
                raise ConfigError(f"choices: {bad[0]!r} is not a number, string, true/false or null")
            return
        if self.low is None or self.high is None:
            raise ConfigError("give low and high (a range) or choices (a list)")
        if self.low > self.high:
            raise ConfigError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ConfigError(f"log: true needs low > 0, got {self.low}")
        if self.log and self.step:
            raise ConfigError("log and step cannot be combined (Optuna samples a log range without a grid)")


@dataclass
class SearchEval:
    """How a prompting or retrieval trial is scored on the validation split (trained regimens
    report their own validation metric while training)."""

    task: Literal["qa", "math", "classification", "summarization", "code"] = option("qa", "Task whose primary metric scores the validation split")
    max_new_tokens: int = option(32, "Longest generated answer", minimum=1, maximum=131072)
    limit: int | None = option(None, "Score only the first N validation items", minimum=1, maximum=1_000_000_000)
    batch_size: int = option(16, "Prompts generated together", minimum=1, maximum=65536)
    stop: list[str] = option(default_factory=list, doc="Strings that end a generated answer")
    labels: list[str] | None = option(None, "classification: the label set (default: the labels found in the data)")


@dataclass
class SearchSpace:
    params: dict[str, ParamRange] = option(default_factory=dict, doc="Training-config options to search, by dotted key: {training.learning_rate: {low: 1e-5, high: 1e-3, log: true}, prompting.shots: {choices: [0, 2, 4]}}")
    defaults: bool = option(True, "Start from the regimen's default space (params add to it or replace its entries); false: search params only")
    sampler: Literal["tpe", "random"] = option("tpe", "Optuna sampler: TPE (model-based) or random search")
    seed: int = option(0, "Seed of the sampler: the same search proposes the same trials", minimum=0, maximum=SEED_MAX)
    pruner: Literal["median", "hyperband", "none"] = option("median", "Stop weak trials early from their validation curve (see docs/tuning.md)")
    start_from_config: bool = option(True, "The first trial runs the config's own values (those that lie in the space; the rest "
                                     "are sampled), so that a search never ends worse on validation than the untuned configuration")
    startup_trials: int = option(3, "Trials that always run to the end before pruning starts", minimum=0, maximum=100000)
    warmup_tenths: int = option(3, "Tenths of a trial's training before it may be pruned", minimum=0, maximum=9)
    eval: SearchEval = field(default_factory=SearchEval)


# Default spaces. Sources (docs/tuning.md repeats them): learning rates from Hu et al. 2021 (LoRA)
# and Biderman et al. 2024 ("LoRA Learns Less and Forgets Less": the best LoRA rates are about an
# order of magnitude above full fine-tuning's, 1e-4..1e-3 vs 1e-5..1e-4); LoRA rank and alpha from
# Hu et al. (ranks 4-64 suffice) and Dettmers et al. 2023 (QLoRA: alpha = 2r common, r 64 alpha 16);
# epochs 1-5 and warm-up 0-10% as in the Alpaca/Llama-2 recipes (3 epochs, 3% warm-up); DPO beta
# 0.01-0.5 (Rafailov et al. 2023 used 0.1 and 0.5, Zephyr 0.01-0.1); GRPO KL 0.001-0.1 around
# DeepSeekMath's 0.04, its group size 4-16 (it used 64, too much for a CPU) and temperature
# 0.6-1.2; retrieval k 1-8 and chunks 60-250 words around common RAG settings (e.g. LlamaIndex's
# 1024-token chunks, top-2..5). Effective batch size is searched through gradient accumulation so
# the micro-batch stays the one the config knows fits in memory.
_R = ParamRange
_LR = {"lora": (5e-5, 2e-3), "full": (5e-6, 2e-4), "freeze": (1e-5, 5e-4)}
_DPO_LR = {"lora": (1e-6, 1e-4), "full": (1e-7, 1e-5), "freeze": (1e-7, 1e-5)}
_COMMON = {"training.epochs": _R(1, 5, step=1), "training.warmup_ratio": _R(0.0, 0.1),
           "training.gradient_accumulation_steps": _R(choices=[1, 2, 4])}
_LORA = {"adapter.lora_r": _R(choices=[4, 8, 16, 32, 64]), "adapter.lora_alpha": _R(choices=[8.0, 16.0, 32.0, 64.0])}


def default_space(cfg: TrainConfig) -> dict[str, ParamRange]:
    """The regimen's default search space for this config (its adapter mode picks the rates)."""
    # QLoRA trains LoRA adapters: the same rates and ranks (Dettmers et al. 2023 use LoRA's).
    mode, r = ("lora" if cfg.adapter.mode == "qlora" else cfg.adapter.mode), cfg.regimen
    lora = _LORA if mode == "lora" else {}
    if r in ("sft", "cpt"):
        return {"training.learning_rate": _R(*_LR[mode], log=True), **_COMMON, **lora}
    if r == "dpo":
        return {"training.learning_rate": _R(*_DPO_LR[mode], log=True), "dpo.beta": _R(0.01, 0.5, log=True), **_COMMON, **lora}
    if r == "grpo":
        return {"training.learning_rate": _R(_DPO_LR[mode][0] * 5, _DPO_LR[mode][1] * 2, log=True),
                "grpo.temperature": _R(0.6, 1.2), "grpo.group_size": _R(choices=[4, 8, 16]),
                "grpo.kl_coef": _R(0.001, 0.1, log=True), **lora}
    if r == "head":
        head_lr = (1e-4, 1e-2) if cfg.head.train == "head" else _LR["lora" if cfg.head.train == "lora" else "full"]
        return {"training.learning_rate": _R(*head_lr, log=True), **_COMMON, **(_LORA if cfg.head.train == "lora" else {})}
    prompting = {"prompting.shots": _R(choices=[0, 1, 2, 4, 8]), "prompting.shot_selection": _R(choices=["random", "similar"])}
    if r == "rag":
        return {"rag.top_k": _R(1, 8, step=1), "rag.chunk_words": _R(choices=[60, 120, 250]),
                "rag.method": _R(choices=["bm25", "embedding", "hybrid"]), **prompting}
    return prompting


# The metric a trial is judged by: (direction, where it comes from). Trained regimens' figures are
# read from the validation at the checkpoint the run exports (see tunesmith.tune.search).
METRICS = {
    "sft": {"val_loss": "minimize", "val_exact_match": "maximize"},
    "cpt": {"val_loss": "minimize"},
    "dpo": {"val_loss": "minimize", "val_reward_accuracy": "maximize"},
    "head": {"val_accuracy": "maximize", "val_loss": "minimize"},
    "grpo": {"val_reward": "maximize"},
    "prompt": {"val_score": "maximize"},
    "rag": {"val_score": "maximize"},
}


def metric_for(regimen: str, name: str | None) -> tuple[str, str]:
    """(metric, direction) for a search: the regimen's default (first listed) unless named."""
    known = METRICS[regimen]
    if name is None:
        name = next(iter(known))
    if name not in known:
        raise ConfigError(f"--metric {name}: not a validation metric of regimen {regimen}; use one of {', '.join(known)}")
    return name, known[name]


def _field_of(key: str) -> tuple[Any, dict]:
    """(type, option metadata) of a TrainConfig option by dotted key, or a ConfigError with a hint."""
    paths = configlib.field_paths(TrainConfig)
    if key not in paths:
        hit = configlib._suggest(key, paths)
        raise ConfigError(f"params.{key}: not a training-config option" + (f" (did you mean '{hit}'?)" if hit else ""))
    cls, parts = TrainConfig, key.split(".")
    for p in parts[:-1]:
        cls = configlib._section(configlib._hints(cls)[p])
    f = next(x for x in dataclasses.fields(cls) if x.name == parts[-1])
    return configlib._hints(cls)[parts[-1]], dict(f.metadata)


def _kind(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)] if configlib._union_args(tp) else [tp]
    if len(args) == 1 and args[0] is int:
        return "int"
    if len(args) == 1 and args[0] is float:
        return "float"
    if len(args) == 1 and args[0] is bool:
        return "bool"
    if len(args) == 1 and typing.get_origin(args[0]) is Literal:
        return "literal"
    if str in args and len(args) == 1:
        return "str"
    return "other"


_NOT_SEARCHABLE = {"name", "output_dir", "regimen", "seed", "init_from", "model.name", "data.train", "data.validation",
                   "data.val_fraction", "data.type", "rag.corpus", "training.device", "training.threads"}


def check_param(key: str, rng: ParamRange) -> str:
    """Check one searched key against the option it names; return its kind (int, float, choice)."""
    if key in _NOT_SEARCHABLE:
        raise ConfigError(f"params.{key}: not searchable (it names data, the model or the run, not a hyperparameter)")
    tp, meta = _field_of(key)
    kind = _kind(tp)
    if configlib._section(tp) is not None:
        raise ConfigError(f"params.{key}: a section, not an option; name one of its fields, e.g. {key}.<field>")
    if rng.choices is not None:
        for c in rng.choices:
            try:  # the value as the option itself would parse and bound it
                configlib._check_meta(configlib._coerce(tp, c, key, configlib._Ctx("<space>", TrainConfig)), meta, key)
            except configlib._Invalid as e:
                raise ConfigError(f"params.{key}.choices: {c!r}: {e.message}") from None
        return "choice"
    if kind not in ("int", "float"):
        raise ConfigError(f"params.{key}: a {'text' if kind in ('str', 'literal') else kind} option; give choices: [...] instead of low/high")
    lo, hi = meta.get("minimum"), meta.get("maximum")
    if (lo is not None and rng.low < lo) or (hi is not None and rng.high > hi):
        raise ConfigError(f"params.{key}: range [{rng.low}, {rng.high}] leaves the option's bounds [{lo}, {hi}]")
    if kind == "int" and (rng.low != math.floor(rng.low) or rng.high != math.floor(rng.high)):
        raise ConfigError(f"params.{key}: an integer option; low and high must be whole numbers")
    return kind


def resolve_space(cfg: TrainConfig, space: SearchSpace) -> dict[str, tuple[str, ParamRange]]:
    """key -> (kind, range): the default space (unless switched off) with the file's params over it."""
    merged = dict(default_space(cfg)) if space.defaults else {}
    merged.update(space.params)
    if cfg.regimen in ("prompt", "rag") and not cfg.data.train:
        merged.pop("prompting.shots", None), merged.pop("prompting.shot_selection", None)
    if not merged:
        raise ConfigError("params: the search space is empty; list options to search, or set defaults: true")
    return {k: (check_param(k, r), r) for k, r in merged.items()}


def load_space(path: str | Path | None, overrides=()) -> SearchSpace:
    """SPACE.yaml (or the defaults when no file is given) as a validated SearchSpace."""
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"{path}: no such space file (give a YAML file with params: ...)")
    space = configlib.load_config(SearchSpace, path, overrides)
    for key, rng in space.params.items():
        try:
            check_param(key, rng)
        except ConfigError as e:
            raise ConfigError(f"{path or '<space>'}: {e}") from None
    return space
