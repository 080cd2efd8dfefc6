"""What each study criterion means for each eval task: the metric behind correctness (and the
per-item score its paired tests use), which criteria a task supports, and why the others are not
measured, so that a report never shows an empty column without a reason.

Correctness is always a per-item score, so that its interval and its paired tests measure the
same thing: for translation that is sentence chrF (corpus BLEU and chrF are reported beside it,
each with its interval); for chat the similarity of the reply to the reference reply; for
creative writing the judge's instruction-following rubric when a judge is given, otherwise the
similarity to the reference text of the genre (a labelled proxy)."""

from __future__ import annotations

# task -> (metric name in the eval's metrics, per-item score key, what it measures, proxy?)
CORRECTNESS = {
    "qa": ("exact_match", "exact_match", "exact match with a reference answer", False),
    "math": ("accuracy", "correct", "final number equal to the reference's", False),
    "classification": ("accuracy", "correct", "accuracy (label log-likelihood; a head by its head)", False),
    "summarization": ("rougeL", "rougeL", "ROUGE-L F1 against the reference summary", False),
    "code": ("pass@1", "pass@1", "pass@1 of the tests", False),
    "translation": ("chrf_sentence", "chrf", "sentence chrF against the reference translation (sacrebleu, 0-100); "
                    "corpus BLEU and chrF beside it", False),
    "chat": ("reference_similarity", "reference_similarity",
             "sentence-embedding similarity of the reply to the reference reply of the conversation", True),
    "creative": ("reference_similarity", "reference_similarity",
                 "sentence-embedding similarity to the reference text written for the instruction (genre, topic)", True),
}
# With a judge, these tasks' correctness is a judge rubric (per-item key judge_<rubric>).
JUDGED_CORRECTNESS = {"creative": "instruction_following"}
# The rubrics a study asks the judge for, per task, when eval.judge.rubrics is left at its default.
DEFAULT_RUBRICS = {"creative": ["instruction_following", "style", "writing_quality"]}
# The judge rubric behind the helpfulness criterion, per task.
HELPFULNESS_RUBRIC = {"creative": "writing_quality"}

# Criteria that do not apply to a task, and why (shown in results.json and the report).
NOT_APPLICABLE = {
    "translation": {
        "domain_adherence": "not applicable to translation: what a translation asserts comes from its source "
                            "sentence, not from the domain corpus",
        "helpfulness": "not measured for translation: the reference translation defines a good answer, which "
                       "correctness (chrF, BLEU) already scores",
        "ood_policy": "not applicable to translation: every source sentence is to be translated",
    },
    "creative": {
        "domain_adherence": "not applicable to creative writing: inventing content is the task, so grounding "
                            "in the domain corpus would punish it",
        "ood_policy": "not applicable to creative writing: there are no out-of-domain requests to decline",
    },
    "classification": {
        "helpfulness": "not applicable to classification: a label has no free-text reference",
        "domain_adherence": "not applicable to classification: a label asserts nothing for the domain corpus to support",
        "ood_policy": "not applicable to classification: arms choose among the labels, so none can decline",
    },
    "math": {"helpfulness": "not applicable to math: the final number is the answer (correctness)"},
    "code": {"helpfulness": "not applicable to code: the tests are the answer's reference (correctness)"},
}
NO_JUDGE_HELPFULNESS = {
    "chat": "not measured without a judge: the only proxy, similarity to the reference reply, is already the "
            "correctness column; set eval.judge.base_url for the helpfulness rubric",
    "creative": "not measured without a judge: set eval.judge.base_url for the writing-quality rubric; the "
                "proxies (distinct-n, repetition, length control) are in the secondary table",
}
# Metrics of a task's test evaluation shown in the secondary table (name in the eval's metrics).
EXTRA_METRICS = {
    "qa": ("f1", "contains"),
    "translation": ("bleu", "chrf", "bleu_sentence"),
    "chat": ("rougeL",),
    "creative": ("distinct_1", "distinct_2", "repetition_rate", "length_within"),
}
# Always true of every task: retention is the general-ability probe of the model (any task), and
# overfitting is read from the training arms' validation loss (any task).
ADHERENCE_TASKS = ("qa", "math", "summarization", "code", "chat")


def judged(study) -> bool:
    return bool(judge_url(study))


def judge_url(study) -> str | None:
    e = study.eval
    return e.judge.base_url or e.judge_url


def correctness(study) -> dict:
    """{metric, item_key, measures, proxy} of the study's correctness criterion."""
    task = study.eval.task
    if judged(study) and task in JUDGED_CORRECTNESS:
        r = JUDGED_CORRECTNESS[task]
        return {"metric": f"judge_{r}", "item_key": f"judge_{r}", "measures": f"judge rubric {r} (1-5)", "proxy": False}
    metric, key, what, proxy = CORRECTNESS[task]
    return {"metric": metric, "item_key": key, "measures": what, "proxy": proxy}


def not_applicable(study) -> dict[str, str]:
    """criterion -> why this study's task does not measure it."""
    task = study.eval.task
    out = dict(NOT_APPLICABLE.get(task, {}))
    if not judged(study) and task in NO_JUDGE_HELPFULNESS:
        out["helpfulness"] = NO_JUDGE_HELPFULNESS[task]
    return out


def helpfulness_rubric(study) -> str:
    return HELPFULNESS_RUBRIC.get(study.eval.task, "helpfulness")


def judge_rubrics(study) -> list[str]:
    """The rubrics the judge scores: the study's, or the task's defaults when left at the default."""
    rubrics = list(study.eval.judge.rubrics)
    if rubrics == ["helpfulness"] and study.eval.task in DEFAULT_RUBRICS:
        return list(DEFAULT_RUBRICS[study.eval.task])
    return rubrics


def criteria_notes(results: dict) -> list[str]:
    """Report lines: what correctness measures on this task, which criteria the task does not
    measure and why, and which judge scored what with which rubric version, at what cost."""
    out = []
    c = (results.get("criteria") or {}).get("correctness") or {}
    if c.get("measures"):
        out.append(f"Correctness on this {c.get('task')} task: {c['measures']}" + (" (a proxy)." if c.get("proxy") else "."))
    labels = {"domain_adherence": "Domain adherence", "helpfulness": "Helpfulness", "ood_policy": "Out-of-domain policy"}
    for name, why in (results.get("not_measured") or {}).items():
        out.append(f"{labels.get(name, name.replace('_', ' ').capitalize())}: {why}.")
    judges = {}
    for arm in results.get("arms", []):
        j = (arm.get("extra") or {}).get("judge")
        if j:
            key = (str((j.get("judge") or {}).get("model")), str((j.get("judge") or {}).get("base_url")),
                   tuple(sorted((j.get("rubric_versions") or {}).items())))
            agg = judges.setdefault(key, {"requests": 0, "cached": 0, "seconds": 0.0, "arms": 0})
            for k in ("requests", "cached", "seconds"):
                agg[k] += (j.get("stats") or {}).get(k) or 0
            agg["arms"] += 1
    for (model, url, rubrics), agg in judges.items():
        out.append(f"Judge: {model} at {url}; rubrics " + ", ".join(f"{r} (version {v})" for r, v in rubrics)
                   + f"; cost over {agg['arms']} arm(s): {agg['requests']} requests ({agg['cached']} answered from the cache), "
                   f"{agg['seconds']:.0f} s.")
    return out
