"""Plan a study: expand arms x models x seeds into jobs, each with a fully resolved training
config and a content hash of (config, data, code version) that caches its results."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith import __version__, configlib
from tunesmith.config import TrainConfig
from tunesmith.errors import ConfigError

WEIGHT_REGIMENS = ("sft", "cpt", "head", "dpo", "grpo")
PROMPTING = ("prompt", "rag")
# Which study data each regimen trains on, and which validation split goes with it (see
# tunesmith.study.prepare: both are the study's derived files, not the raw data section).
TRAIN_DATA = {"sft": "train", "prompt": "train", "rag": "train", "grpo": "train", "cpt": "corpus",
              "head": "classification_train", "dpo": "preference_train"}
VALIDATION = {"sft": "validation", "head": "classification_validation", "dpo": "preference_validation"}
# Tasks with no out-of-domain questions to decline: prompting arms are not told the policy.
NO_POLICY_TASKS = ("translation", "creative")


@dataclass
class Job:
    id: str  # arm, or arm/model/seedN when several models or seeds
    arm: str
    model: str
    seed: int
    regimen: str
    cfg: TrainConfig
    key: str
    depends: list[str] = field(default_factory=list)  # job ids this job builds on
    report: bool = True
    tuning: dict | None = None  # a tuned arm's search result (tunesmith.study.tuning): best params, trials, seconds

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    @property
    def kind(self) -> str:
        return "prompting" if self.regimen in PROMPTING else "training"


def _short(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model).name).strip("-")


def _data_hash(paths: list[str | None]) -> str:
    from tunesmith.data.io import file_sha256

    return hashlib.sha256("|".join(file_sha256(p) if p and Path(p).exists() else f"missing:{p}" for p in paths).encode()).hexdigest()


def _train_config(study, arm, model: str, seed: int, job_name: str, parents: dict[str, "Job"], prep,
                  best: dict | None = None) -> TrainConfig:
    source = TRAIN_DATA[arm.regimen]
    train_path = getattr(study.data, source) if source == "corpus" else getattr(prep, source)
    if arm.regimen in WEIGHT_REGIMENS and not train_path:
        raise ConfigError(f"arms.{arm.name}: regimen {arm.regimen} trains on data.{source}, which the study does not set")
    system = study.data.system_prompt
    if arm.regimen in PROMPTING and study.policy.told() and study.eval.task not in NO_POLICY_TASKS:
        # Prompting arms are told the out-of-domain policy; trained arms learn it from data.
        system = " ".join(x for x in (system, study.policy.told()) if x)
    base = {"name": job_name, "output_dir": str(study.study_dir / "runs"), "seed": seed, "regimen": arm.regimen,
            "model": {"name": model}, "data": {"train": train_path or "", "system_prompt": system}}
    if arm.regimen in VALIDATION:
        val = getattr(prep, VALIDATION[arm.regimen])
        # The study's split or none: an arm never carves a second, different one of its own.
        base["data"].update({"validation": val} if val else {"val_fraction": 0.0})
    if arm.regimen == "rag":
        base["rag"] = {"corpus": study.data.corpus}
    if arm.after:
        base["init_from"] = str(parents[arm.after].run_dir)
    if arm.on:
        base["model"]["name"] = str(parents[arm.on].run_dir)
    overrides = list(study.defaults.items()) + list(arm.set.items())
    if arm.regimen in WEIGHT_REGIMENS and study.budget.match == "steps":
        overrides.append(("training.max_steps", study.budget.steps))
    elif arm.regimen in WEIGHT_REGIMENS and study.budget.match == "epochs":
        overrides.append(("training.epochs", study.budget.epochs))
    overrides += list((best or {}).items())  # a tuned arm's best parameters, found on the validation split
    try:
        data = configlib.apply_overrides(base, TrainConfig, overrides)
        return configlib.from_dict(TrainConfig, data, source=f"arms.{arm.name}")
    except ConfigError as e:
        raise ConfigError(f"arm {arm.name!r}: {e}") from e


def _non_default(d: dict, ref: dict) -> dict:
    """The fields of a resolved config that differ from TrainConfig's defaults. Keys hash these
    only, so that a new option added to tunesmith (at its default) leaves finished arms cached;
    a code release that changes what an existing option does bumps __version__, which is in the key."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and isinstance(ref.get(k), dict):
            sub = _non_default(v, ref[k])
            if sub:
                out[k] = sub
        elif k not in ref or ref[k] != v:
            out[k] = v
    return out


def plan(study, prep=None, tuned: dict | None = None) -> list[Job]:
    """Every job of the study in dependency order (an arm's parents come first). `prep`: the
    study's derived data (tunesmith.study.prepare.prepare_data), made here when not given;
    `tuned`: (arm, model) -> search result of tuned arms (tunesmith.study.tuning.tune_arms),
    whose best parameters go into the arm's config (and so into its key)."""
    from tunesmith.study.prepare import prepare_data

    prep = prep or prepare_data(study)
    many = len(study.models) > 1 or len(study.seeds) > 1
    defaults = configlib.to_dict(TrainConfig())  # what _non_default compares every job's config with
    jobs: list[Job] = []
    for model in study.models:
        for seed in study.seeds:
            parents: dict[str, Job] = {}
            for arm in study.arms:
                jid = f"{arm.name}/{_short(model)}/seed{seed}" if many else arm.name
                tuning = (tuned or {}).get((arm.name, model))
                cfg = _train_config(study, arm, model, seed, jid.replace("/", "__"), parents, prep, tuning and tuning["params"])
                deps = [parents[p] for p in (arm.after, arm.on) if p]
                # The key covers what changes results: the resolved config (run paths replaced
                # by the parents' keys), the data files' contents and the code version.
                content = _non_default(configlib.to_dict(cfg), defaults)
                content.pop("name", None), content.pop("output_dir", None)
                if arm.after:
                    content["init_from"] = parents[arm.after].key
                if arm.on:
                    content.setdefault("model", {})["name"] = parents[arm.on].key
                data = _data_hash([cfg.data.train or None, cfg.data.validation, cfg.rag.corpus if cfg.regimen == "rag" else None])
                key = hashlib.sha256(json.dumps({"cfg": content, "data": data, "code": __version__}, sort_keys=True, default=str).encode()).hexdigest()[:20]
                job = Job(jid, arm.name, model, seed, arm.regimen, cfg, key, [d.id for d in deps], arm.report, tuning)
                parents[arm.name] = job
                jobs.append(job)
    return jobs
