"""Evaluate one study arm with the study's shared settings: held-out questions (correctness,
domain adherence, helpfulness, retention), the classification task and preference pairs when
the study has them.

data.test is scored with the study's task (eval.task): QA exact match by default, or math,
classification (label log-likelihood for generative arms, the head for head arms),
summarization or code, so a study on a classification or maths dataset compares every arm on
that task's own metric. Every arm goes through the same evaluation code, prompted or trained."""

from __future__ import annotations

import hashlib
import json

from tunesmith.eval.config import EvalConfig, JudgeSettings
from tunesmith.eval.runner import evaluate, model_fingerprint
from tunesmith.atomic import write_json_atomic


def _eval_cfg(study, seed: int, **kw) -> EvalConfig:
    e = study.eval
    base = dict(max_new_tokens=e.max_new_tokens, limit=e.limit, batch_size=e.batch_size, seed=seed, stop=list(e.stop),
                show_tests=e.show_tests,
                output_dir=str(study.study_dir / "runs"), judge=JudgeSettings(base_url=e.judge_url, model=e.judge_model))
    base.update(kw)
    return EvalConfig(**base)


def test_eval_cfg(study, seed: int = 0, **kw) -> EvalConfig:
    """The evaluation of data.test: the study's task, and what only generated answers allow
    (domain adherence, out-of-domain questions) when the task generates text."""
    e = study.eval
    generates = e.task != "classification"
    adherence = e.domain_adherence and generates
    return _eval_cfg(study, seed, data=study.data.test, task=e.task, labels=e.labels,
                     domain_corpus=study.data.corpus if adherence and study.data.corpus else None,
                     ood_data=study.data.ood if adherence else None, ood_policy=study.policy.out_of_domain,
                     decline_message=study.policy.decline_message if study.policy.out_of_domain == "decline" else None,
                     general_ability=e.general_ability, general_ability_base=False, **kw)


def _cached(path, key: str, compute):
    """A small result cache for evaluations the eval runner does not cache itself."""
    if path.exists():
        prev = json.loads(path.read_text())
        if prev.get("cache_key") == key:
            return prev
    out = {**compute(), "cache_key": key}
    write_json_atomic(path, out)
    return out


def evaluate_job(study, job, progress: bool = True) -> dict:
    run = str(job.run_dir)
    out: dict = {}
    # A head run only predicts labels: it is scored on data.test when that is a classification
    # task, and on data.classification_test below.
    if job.regimen != "head" or study.eval.task == "classification":
        out["test"] = evaluate(run, test_eval_cfg(study, job.seed), progress=progress)
    # The classification task is scored for the baseline, the head, and arms trained on the
    # classification data: a QA recipe (QA examples, retrieved passages) says nothing about it.
    baseline = study.baseline or next((a.name for a in study.arms if a.regimen in ("prompt", "rag")), study.arms[0].name)
    on_cls = job.arm == baseline or job.regimen == "head" or job.cfg.data.train == study.data.classification_train
    if study.data.classification_test and on_cls and study.data.classification_test != study.data.test:
        if job.regimen == "head":
            from tunesmith.eval.head_eval import evaluate_head

            out["classification"] = evaluate_head(run, study.data.classification_test, limit=study.eval.limit)
        else:
            cfg = _eval_cfg(study, job.seed, data=study.data.classification_test, task="classification", name="classification")
            out["classification"] = evaluate(run, cfg, progress=progress)
    if study.data.preference_test and job.regimen != "head":
        from tunesmith.data.io import file_sha256
        from tunesmith.eval.preference import preference_accuracy

        key = hashlib.sha256(f"{model_fingerprint(run)}|{file_sha256(study.data.preference_test)}|{study.eval.limit}".encode()).hexdigest()
        out["preference"] = _cached(job.run_dir / "eval" / "preference.json", key,
                                    lambda: preference_accuracy(run, study.data.preference_test, system=study.data.system_prompt,
                                                                        limit=study.eval.limit, progress=progress))
    return out
