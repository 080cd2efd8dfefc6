"""Typed configuration of a comparative study: the shared data, the arms to compare, the models
and seeds they run on, the common evaluation and the training budget.

An arm is a training config (any regimen) given as overrides of the study's defaults; `after`
chains it on another arm's output (continued pre-training, then SFT) and `on` puts a prompting
or retrieval arm on top of another arm's model (retrieval on a fine-tuned model)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunesmith import configlib
from tunesmith.config import REGIMENS
from tunesmith.configlib import SEED_MAX, option
from tunesmith.errors import ConfigError
from tunesmith.rundir import check_name
from tunesmith.models.builtins import DEFAULT_MODEL


@dataclass
class StudyData:
    train: str = option(doc="Training data: question/answer (prompt_completion or messages) for SFT, GRPO and the few-shot pool; or a classification set (text/label), which serves every arm (its prompt/completion form for SFT and prompting, as `tunesmith data preview` shows it; the head when classification_train is unset)")
    test: str = option(doc="Held-out items every arm is scored on, with the study's eval.task: qa (prompt, answer[, aliases, doc_id]), math (prompt, answer ending '#### N'), classification (text, label), summarization (prompt, reference), code (prompt, tests), translation (text or prompt, reference), chat (messages ending with the reference reply, or prompt, reference), creative (prompt, reference); eval.prompt, eval.fields and eval.format read other layouts")
    corpus: str | None = option(None, "Raw domain text: continued pre-training, retrieval, domain-adherence classifier")
    preference_train: str | None = option(None, "Preference pairs for DPO")
    preference_test: str | None = option(None, "Held-out preference pairs: preference accuracy of every generative arm")
    classification_train: str | None = option(None, "Classification data for the task-head arm (default: data.train when that is a classification set)")
    classification_test: str | None = option(None, "Held-out classification data: every arm is scored on it (generative arms by label likelihood)")
    ood: str | None = option(None, "Held-out out-of-domain questions (prompt field): every arm is scored against policy.out_of_domain on them")
    system_prompt: str | None = option(None, "System prompt shared by every arm (training and evaluation)")
    validation: str | None = option(None, "Validation data in data.train's format: training arms report validation loss on it and keep their best checkpoint by it (unset: carved from data.train, see val_fraction)")
    val_fraction: float = option(0.1, "Share of data.train (and of preference_train, classification_train) carved out as the study's validation split when no validation file is given; 0 turns validation off", minimum=0.0, maximum=0.5)


@dataclass
class StudyPolicy:
    """What every arm should do with questions outside the domain: stated once, given to each arm
    in the form its regimen uses (see tunesmith.study.prepare)."""

    out_of_domain: Literal["decline", "answer"] = option("decline", "What models should do with out-of-domain questions (data.ood scores it)")
    decline_message: str = option("Sorry, I can only answer questions about this domain.", "The reply that declines an out-of-domain question: prompting arms are told to give it, training arms learn it from policy.examples")
    statement: str | None = option(None, "The policy as told to prompting arms, appended to their system prompt (default: built from decline_message)")
    examples: str | None = option(None, "Out-of-domain training questions (prompt[, answer]), distinct from data.ood: added to SFT/GRPO training data and to the prompting arms' example pool with the decline as answer, and to DPO pairs (decline chosen over the answer)")

    def told(self) -> str | None:
        """The sentence a prompting arm's system prompt gets, or None under policy 'answer'."""
        if self.out_of_domain != "decline":
            return None
        return self.statement or f'If a question is not about this domain, reply exactly: "{self.decline_message}"'


# EvalConfig settings a study fills in itself, and where a study sets them instead.
STUDY_FILLS = {"data": "data.test", "name": "the name of data.test", "domain_corpus": "data.corpus",
               "ood_data": "data.ood", "ood_policy": "policy.out_of_domain", "decline_message": "policy.decline_message",
               "seed": "seeds", "output_dir": "output_dir", "general_ability_base": "the baseline arm"}
# Study defaults that differ from `tunesmith eval`'s.
_STUDY_DEFAULTS = {"max_new_tokens": (32, None), "general_ability": (True, "Measure general-ability retention (shipped perplexity text and probe)")}


def _eval_fields() -> list:
    """EvalConfig's fields, less those in STUDY_FILLS: a study's eval section takes every
    evaluation setting under the same name, from the one class that defines them."""
    import typing

    from tunesmith.eval.config import EvalConfig

    hints = typing.get_type_hints(EvalConfig)
    out = []
    for f in dataclasses.fields(EvalConfig):
        if f.name in STUDY_FILLS:
            continue
        default, doc = _STUDY_DEFAULTS.get(f.name, (f.default, None))
        meta = dict(f.metadata, **({"doc": doc} if doc else {}))
        fld = dataclasses.field(default=default, metadata=meta) if f.default_factory is dataclasses.MISSING \
            else dataclasses.field(default_factory=f.default_factory, metadata=meta)
        out.append((f.name, hints[f.name], fld))
    return out


def _study_eval_validate(self) -> None:
    from tunesmith.eval.config import EvalConfig

    EvalConfig.validate(self)  # the same checks as `tunesmith eval` (show_tests, pass_k, format)
    if self.judge_url and self.judge.base_url and self.judge_url != self.judge.base_url:
        raise ConfigError(f"judge_url ({self.judge_url}) and judge.base_url ({self.judge.base_url}) differ; "
                          "set judge.base_url only (judge_url is its older name)")


StudyEval = dataclasses.make_dataclass("StudyEval", _eval_fields() + [
    ("domain_adherence", bool, option(True, "Score domain adherence (needs data.corpus; qa, math, summarization, code and chat)")),
    ("judge_url", str | None, option(None, "Older name of judge.base_url (OpenAI-compatible judge endpoint)")),
    ("judge_model", str | None, option(None, "Older name of judge.model")),
], namespace={"validate": _study_eval_validate, "__doc__": (
    "The study's evaluation of data.test: every `tunesmith eval` setting under its own name (see "
    "tunesmith.eval.config.EvalConfig), except those in STUDY_FILLS, which the study's data, policy, seeds "
    "and output_dir set; plus domain_adherence."), "__module__": __name__})


@dataclass
class StudyBudget:
    match: Literal["none", "steps", "epochs"] = option("none", "Give every trained arm the same number of optimizer steps or epochs")
    steps: int | None = option(None, "Steps per trained arm when match: steps", minimum=1, maximum=100_000_000)
    epochs: float | None = option(None, "Epochs per trained arm when match: epochs", minimum=0.0, maximum=100000.0)


@dataclass
class ArmTune:
    trials: int | None = option(None, "Trials of this arm's hyperparameter search (default: the study's tune_trials; every tuned arm must get the same number)", minimum=1, maximum=100000)
    space: str | None = option(None, "SPACE.yaml for this arm's search (default: the regimen's default space; see docs/tuning.md)")
    metric: str | None = option(None, "Validation metric the search optimises (default per regimen: val_loss, val_accuracy, val_reward, or the eval task's primary metric for prompting arms)")


@dataclass
class ArmConfig:
    name: str = option(doc="Arm name (a row of the report)")
    regimen: str = option("prompt", "Regimen of this arm", choices=REGIMENS)
    set: dict[str, Any] = option(default_factory=dict, doc="Training-config overrides as dotted keys, e.g. {adapter.mode: lora, training.epochs: 4}")
    after: str | None = option(None, "Start from another arm's trained model (init_from), e.g. SFT after continued pre-training")
    on: str | None = option(None, "Use another arm's model as this arm's model (e.g. retrieval on top of a fine-tuned model)")
    report: bool = option(True, "Show this arm in the report (false for intermediate arms such as the pre-training step of a chain)")
    tune: ArmTune | None = option(None, "Search this arm's hyperparameters on the validation split before it runs, e.g. {trials: 12} or {space: space.yaml}; the best configuration is what the study trains and tests")

    def validate(self) -> None:
        check_name(self.name, "name")  # it names the arm's run folders


@dataclass
class StudyConfig:
    name: str | None = option(None, "Study name: results go to <output_dir>/<name>; defaults to the file's name")
    output_dir: str = option("studies", "Folder holding study directories")
    models: list[str] = option(default_factory=lambda: [DEFAULT_MODEL], doc="Models every arm runs on")
    seeds: list[int] = option(default_factory=lambda: [0], doc="Seeds every trained arm runs with", minimum=0, maximum=SEED_MAX)
    baseline: str | None = option(None, "The arm others are compared against (default: the first prompting arm)")
    data: StudyData = option(doc="The shared data", default_factory=lambda: StudyData(train="", test=""))
    eval: StudyEval = field(default_factory=StudyEval)
    policy: StudyPolicy = field(default_factory=StudyPolicy)
    budget: StudyBudget = field(default_factory=StudyBudget)
    defaults: dict[str, Any] = option(default_factory=dict, doc="Training-config overrides applied to every arm before its own `set`")
    arms: list[ArmConfig] = option(default_factory=list, doc="The arms to compare")
    notes: list[str] = option(default_factory=list, doc="Notes printed in the report (what the study left out and why)")
    tune_trials: int | None = option(None, "Trials of every tuned arm's search: one budget for all (the verdict then reads 'after equal tuning')", minimum=1, maximum=100000)

    def validate(self) -> None:
        if self.name is not None:
            check_name(self.name, "name")
        if not self.data.train or not self.data.test:
            raise ConfigError("data.train and data.test: both are required (training questions and held-out questions)")
        for key in ("models", "seeds"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: list at least one, e.g. {key}: {[DEFAULT_MODEL] if key == 'models' else [0]}")
        names = [a.name for a in self.arms]
        if not names:
            raise ConfigError("arms: list at least one arm, e.g. - {name: zero-shot, regimen: prompt}")
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"arms: duplicate arm name(s) {', '.join(sorted(dup))}")
        for a in self.arms:
            for ref, what in ((a.after, "after"), (a.on, "on")):
                if ref is not None and not ref.strip():
                    raise ConfigError(f"arms.{a.name}.{what}: empty; name an arm listed before it, or remove the key")
                if ref and ref == a.name:  # a model cannot start from (or sit on) itself
                    raise ConfigError(f"arms.{a.name}.{what}: an arm cannot refer to itself; name an arm listed before it")
                if ref and ref not in names:
                    raise ConfigError(f"arms.{a.name}.{what}: no arm named {ref!r} (arms: {', '.join(names)})")
                if ref and names.index(ref) > names.index(a.name):
                    raise ConfigError(f"arms.{a.name}.{what}: {ref!r} must be listed before {a.name!r}")
        self._check_tuning()
        if self.baseline and self.baseline not in names:
            raise ConfigError(f"baseline: no arm named {self.baseline!r}")
        if self.policy.examples and not self.data.ood:
            raise ConfigError("policy.examples: set data.ood too (held-out out-of-domain questions), or the policy taught is never measured")
        if self.budget.match == "steps" and not self.budget.steps:
            raise ConfigError("budget.steps: required with budget.match: steps")
        if self.budget.match == "epochs" and not self.budget.epochs:
            raise ConfigError("budget.epochs: required with budget.match: epochs")

    def _check_tuning(self) -> None:
        """Tuned arms get one trial budget: a comparison after unequal tuning answers nothing."""
        tuned = [a for a in self.arms if a.tune is not None]
        budgets = {a.name: a.tune.trials or self.tune_trials for a in tuned}
        for a in tuned:
            if budgets[a.name] is None:
                raise ConfigError(f"arms.{a.name}.tune.trials: required (or set tune_trials for every tuned arm)")
            if a.after or a.on:
                raise ConfigError(f"arms.{a.name}.tune: an arm built on another arm ({'after' if a.after else 'on'}) cannot be tuned yet; tune the arm it builds on")
        if len(set(budgets.values())) > 1:
            listed = ", ".join(f"{k}: {v}" for k, v in budgets.items())
            raise ConfigError(f"arms: tuned arms have different trial budgets ({listed}); give every tuned arm the same "
                              "number (set tune_trials once), so that the verdict compares arms after equal tuning")

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / str(self.name)


def load_study_config(path: str | Path | None, overrides=(), *, base: dict | None = None) -> StudyConfig:
    cfg = configlib.load_config(StudyConfig, path, overrides, base=base)
    if not cfg.name:
        cfg.name = Path(path).stem if path else "study"
    return cfg
