"""Evaluate one study arm with the study's shared settings: held-out questions (correctness,
domain adherence, helpfulness, retention), the classification task and preference pairs when
the study has them.

data.test is scored with the study's task (eval.task): QA exact match by default, or math,
classification (label log-likelihood for generative arms, the head for head arms),
summarization, code, translation, chat or creative (see tunesmith.study.tasks), with every
`tunesmith eval` setting the study's eval section gives, so a study on a classification or maths dataset compares every arm on
that task's own metric. Every arm goes through the same evaluation code, prompted or trained."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json

from tunesmith.eval.config import EvalConfig
from tunesmith.eval.runner import evaluate, model_fingerprint
from tunesmith.atomic import write_json_atomic


# Settings that describe data.test itself (its file shape, fields, prompt, task): they do not
# carry over to the study's other evaluations (classification_test).
TEST_ONLY = ("task", "format", "columns", "reference_file", "ids_file", "fields", "prompt", "labels", "label_map",
             "shots", "shots_from", "shot_selection", "shuffle", "show_tests", "n_samples", "pass_k", "code_timeout_s",
             "general_ability")  # retention is measured once per arm, with the test evaluation


def _eval_cfg(study, seed: int, test: bool = False, **kw) -> EvalConfig:
    """An EvalConfig from the study's eval section: every setting the two classes share (test:
    also those describing data.test), the study's seed and folders, then `kw`."""
    from tunesmith.study.tasks import judge_rubrics

    e = study.eval
    shared = {f.name: copy.deepcopy(getattr(e, f.name)) for f in dataclasses.fields(EvalConfig)
              if hasattr(e, f.name) and (test or f.name not in TEST_ONLY)}
    judge = shared.pop("judge")
    judge = dataclasses.replace(judge, base_url=judge.base_url or e.judge_url, model=e.judge_model or judge.model,
                                rubrics=judge_rubrics(study))
    base = dict(shared, seed=seed, output_dir=str(study.study_dir / "runs"), judge=judge)
    base.update(kw)
    return EvalConfig(**base)


def test_eval_cfg(study, seed: int = 0, **kw) -> EvalConfig:
    """The evaluation of data.test: the study's task and every eval setting, and what only
    generated answers allow (domain adherence, out-of-domain questions) where the task has them."""
    from tunesmith.study.tasks import ADHERENCE_TASKS

    e = study.eval
    adherence = e.domain_adherence and e.task in ADHERENCE_TASKS
    return _eval_cfg(study, seed, test=True, data=study.data.test,
                     domain_corpus=study.data.corpus if adherence and study.data.corpus else None,
                     ood_data=study.data.ood if adherence else None, ood_policy=study.policy.out_of_domain,
                     decline_message=study.policy.decline_message if study.policy.out_of_domain == "decline" else None,
                     general_ability_base=False, **kw)


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
