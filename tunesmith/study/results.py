"""Aggregate a study's evaluations into results.json: each arm's value and 95% interval per
criterion, paired tests against the baseline and between arms, costs, loss curves, warnings'
raw material, examples side by side and the config differences (the report's contract)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from tunesmith.eval.stats import bootstrap_ci, mcnemar, paired_bootstrap, sign_flip_test
from tunesmith.runs import SCHEMA_VERSION, env_info
from tunesmith.study.tasks import CORRECTNESS as TASK_CORRECTNESS, EXTRA_METRICS


def _samples(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    return {s["id"]: s for s in (json.loads(x) for x in path.read_text().splitlines() if x.strip())}


def _ci(d: dict | None) -> dict | None:
    return {k: d[k] for k in ("value", "low", "high", "n") if k in d} if d and "value" in d else None


# The per-item score behind each test task's correctness figure (see tunesmith.study.tasks).
ITEM_SCORE = {task: key for task, (_, key, _, _) in TASK_CORRECTNESS.items()}


def _item_score(sample: dict, key: str | None = None) -> float | None:
    """A sample's correctness: its `key` score, else the first per-item score it has of ITEM_SCORE's keys."""
    scores = sample.get("scores", {})
    if key is not None:
        return scores.get(key)
    return next((scores[k] for k in ITEM_SCORE.values() if k in scores), None)


def _per_item_ci(samples: dict, key: str) -> tuple[dict | None, dict]:
    vec = {i: s["scores"].get(key) for i, s in samples.items()}
    scored = [x for x in vec.values() if x is not None]
    return (bootstrap_ci(scored) if scored else None), vec


def _criteria_of(ev: dict, test_name: str, run: Path, defs: dict | None = None) -> tuple[dict, dict]:
    """(criterion -> value with CI, criterion -> per-item vector keyed by item id or position).
    defs: {"correctness": tasks.correctness(study), "helpfulness_rubric", "not_applicable"}."""
    vals, items = {}, {}
    defs = defs or {}
    skip = defs.get("not_applicable") or {}
    qa = ev.get("test")
    if qa:
        samples = _samples(run / "eval" / f"{test_name}.samples.jsonl")
        corr = defs.get("correctness") or {}
        metric, key = corr.get("metric", qa["primary_metric"]), corr.get("item_key")
        if isinstance(qa["metrics"].get(metric), dict):
            vals["correctness"] = _ci(qa["metrics"][metric])
            items["correctness"] = {i: _item_score(s, key) for i, s in samples.items()}
        else:  # a judged correctness (creative: instruction following) is a mean of per-item scores
            vals["correctness"], items["correctness"] = _per_item_ci(samples, key or metric)
        h = qa.get("helpfulness", {})
        rubric = defs.get("helpfulness_rubric", "helpfulness")
        if "helpfulness" in skip:
            pass
        elif "value" in h:
            vals["helpfulness"] = _ci(h)
            items["helpfulness"] = {i: s["scores"].get("reference_similarity") for i, s in samples.items()}
        elif rubric in h and h[rubric].get("mean") is not None:
            vals["helpfulness"], items["helpfulness"] = _per_item_ci(samples, f"judge_{rubric}")
        a = qa.get("adherence")
        if a and a.get("per_item"):
            # Two separate criteria: what the answers to the domain's questions assert is supported
            # by the domain (in-domain adherence), and the out-of-domain policy kept on the
            # out-of-domain questions. Mixed into one share they hide each other.
            per = [float(x) for x in a["per_item"]]
            vals["domain_adherence"] = bootstrap_ci(per)
            items["domain_adherence"] = dict(enumerate(per))
        if a and a.get("ood_per_item"):
            per = [float(x) for x in a["ood_per_item"]]
            vals["ood_policy"] = bootstrap_ci(per)
            items["ood_policy"] = dict(enumerate(per))
        g = qa.get("general_ability", {}).get("model")
        if g:
            vals["retention"] = {"value": g["probe_accuracy"], **{k: g["probe_accuracy_ci"][k] for k in ("low", "high", "n")}}
            items["retention"] = dict(enumerate(float(x) for x in g["probe_per_item"]))
    c = ev.get("classification")
    if c:
        metric = c.get("metrics", c)
        vals["classification"] = _ci(metric.get("accuracy"))
        # A head run reports per_item [{"pred", "label", "correct"}]; a generative run, samples.
        per = [x["correct"] for x in c["per_item"]] if c.get("per_item") else \
            [s["scores"]["correct"] for s in _samples(run / "eval" / "classification.samples.jsonl").values()]
        items["classification"] = dict(enumerate(float(x) for x in per))
    return vals, items


def _pair(mine: dict, other: dict) -> dict | None:
    """Paired comparison of two arms on the items both scored: the paired bootstrap (difference,
    its interval, `p_value`), a paired sign-flip permutation test (`permutation_p`, any per-item
    score) and, when every score is 0/1, McNemar's exact test (`mcnemar_p`). Which p the verdict
    uses is decided per criterion (`record_tests`), so every pair of a criterion uses one test."""
    ids = [i for i in mine if i in other and mine[i] is not None and other[i] is not None]
    if len(ids) < 2:
        return None
    a, b = [float(other[i]) for i in ids], [float(mine[i]) for i in ids]
    out = paired_bootstrap(a, b, n_resamples=1000)
    out["permutation_p"] = sign_flip_test(a, b)["p_value"]
    if all(v in (0.0, 1.0) for v in a + b):
        out["mcnemar_p"] = mcnemar([int(v) for v in a], [int(v) for v in b])["p_value"]
    return out


def _curves(run: Path) -> dict:
    from tunesmith.runs import read_metrics  # tolerates a torn last line

    lines = read_metrics(run / "metrics.jsonl")
    return {"train": [[x["step"], x["loss"]] for x in lines if "loss" in x], "val": [[x["step"], x["val_loss"]] for x in lines if "val_loss" in x]}


def _overfitting(job, run: Path, ev: dict, status: str) -> dict | None:
    """The overfitting verdict of a training arm: from its test evaluation when that gave one, else
    read from its metrics.jsonl (a head arm has no generated test); None for prompting arms."""
    from tunesmith.eval.overfitting import analyse_metrics

    got = ev.get("test", {}).get("overfitting")
    if got is not None or job.kind != "training" or status != "completed":
        return got
    if not (run / "metrics.jsonl").exists():
        return {"overfitting": None, "evidence": "no metrics.jsonl: the run logged no losses"}
    out = analyse_metrics(run)
    if out["overfitting"] is None and not out["n_val_evals"]:
        out["evidence"] = f"no validation loss logged ({job.regimen} has no validation split in this study)"
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def _config_diff(arms: list[dict]) -> dict:
    flat = {a["id"]: _flatten(a["config"]) for a in arms}
    keys = sorted({k for f in flat.values() for k in f} - {"name", "output_dir"})
    varying = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat.values()}) > 1]
    return {aid: {k: f.get(k) for k in varying} for aid, f in flat.items()}


def _examples(arms: list[dict], test_name: str, limit: int = 12, key: str | None = None) -> list[dict]:
    per_arm = {a["id"]: _samples(Path(a["run_dir"]) / "eval" / f"{test_name}.samples.jsonl") for a in arms}
    per_arm = {k: v for k, v in per_arm.items() if v}
    if not per_arm:
        return []
    first = next(iter(per_arm.values()))
    rows = []
    for i, s in first.items():
        answers = {a: per_arm[a][i]["prediction"] for a in per_arm if i in per_arm[a]}
        correct = {a: float(_item_score(per_arm[a][i], key) or 0.0) for a in per_arm if i in per_arm[a]}
        ref = s["reference"]
        row = {"id": i, "question": s["input"], "reference": ref[0] if isinstance(ref, list) else ref, "answers": answers}
        if all(v in (0.0, 1.0) for v in correct.values()):
            k, n = sum(v >= 0.5 for v in correct.values()), len(correct)
            row.update(correct=correct, disagreement=min(k, n - k) / max(n / 2, 1))
        else:  # a graded score (chrF, similarity) is shown as a number, never as right or wrong
            top = max(abs(v) for v in correct.values()) or 1.0
            row.update(scores=correct, disagreement=(max(correct.values()) - min(correct.values())) / top)
        rows.append(row)
    rows.sort(key=lambda r: -r["disagreement"])
    return rows[:limit]


def _label_counts(run: Path, test_name: str) -> dict | None:
    """{"predicted": {label: n}, "reference": {label: n}} over a classification test's items: an arm
    that predicts one label for (nearly) every item scores the label prior, not the task."""
    samples = _samples(run / "eval" / f"{test_name}.samples.jsonl")
    if not samples:
        return None
    def count(key: str) -> dict[str, int]:  # a reference may be a list of accepted answers: its first
        return dict(Counter(str(s[key][0] if isinstance(s[key], list) else s[key]) for s in samples.values()).most_common())

    return {"predicted": count("prediction"), "reference": count("reference")}


def _overlap(study) -> int:
    from tunesmith.data.dedup import find_overlap
    from tunesmith.data.schemas import load_dataset, prompt_side_text
    from tunesmith.eval.sources import read_records
    from tunesmith.study.evaluate import test_eval_cfg

    from tunesmith.eval.tasks import _render_prompt

    tr = load_dataset(study.data.train)
    cfg = test_eval_cfg(study, limit=None)
    # each test question as the arms are asked it (its template applied; a chat's last user turn)
    exact, _ = find_overlap([prompt_side_text(r, tr.type) for r in tr.rows()], [_render_prompt(r, cfg) for r in read_records(cfg)], 0.95)
    return len({j for _, j in exact})


def build_results(study, jobs, outcomes: dict, *, wall_seconds: float, invocation_seconds: float | None = None,
                  prepared: dict | None = None) -> dict:
    """results.json's content. wall_seconds: the time spent on every job's current results, over
    all invocations; invocation_seconds: this invocation only (small when results were cached);
    prepared: what the study derived from its data (Prepared.summary)."""
    from tunesmith.study import tasks

    test_name = Path(study.data.test).stem
    corr = tasks.correctness(study)
    defs = {"correctness": corr, "helpfulness_rubric": tasks.helpfulness_rubric(study), "not_applicable": tasks.not_applicable(study)}
    shown = [j for j in jobs if j.report]
    baseline = study.baseline or next((j.arm for j in shown if j.kind == "prompting"), shown[0].arm)
    overlap = _overlap(study)
    arm_after = {a.name: a.after for a in study.arms}
    arms, vectors = [], {}
    for j in shown:
        o = outcomes.get(j.id, {"status": "skipped", "error": "not run"})
        run = Path(j.run_dir)
        meta = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {}
        manifest = json.loads((run / "data_manifest.json").read_text()) if (run / "data_manifest.json").exists() else {}
        ev = o.get("eval", {})
        vals, vectors[j.id] = _criteria_of(ev, test_name, run, defs) if o["status"] == "completed" else ({}, {})
        extra = {}
        if ev.get("preference"):
            p = ev["preference"]  # {"accuracy": float, "low", "high", "n", "scores": [0/1 per pair]}
            extra["preference_accuracy"] = {"value": p["accuracy"], "low": p["low"], "high": p["high"], "n": p["n"]}
        if ev.get("test", {}).get("task") in EXTRA_METRICS:
            # Beside correctness: qa token F1 and containment (exact match is strict about form);
            # translation corpus BLEU and chrF; chat ROUGE-L; creative writing's labelled proxies.
            m = ev["test"]["metrics"]
            extra["answer"] = {k: _ci(m[k]) for k in EXTRA_METRICS[ev["test"]["task"]] if isinstance(m.get(k), dict)}
        judge = (ev.get("test") or {}).get("helpfulness") or {}
        if judge.get("rubric_versions"):
            extra["judge"] = {k: judge.get(k) for k in ("judge", "rubric_versions", "stats")}
        adh = ev.get("test", {}).get("adherence") or {}
        if adh.get("topic_per_item") and adh.get("details") is not None:
            # The secondary adherence figure: answers on the domain's topic (embedding classifier),
            # which a fluent invention about a domain product passes; content grounding is the criterion.
            extra["domain_topic"] = bootstrap_ci([float(x) for x in adh["topic_per_item"]])
        if ev.get("test", {}).get("retrieval"):
            extra["retrieval_recall"] = {k: v for k, v in ev["test"]["retrieval"].items() if k.startswith("recall")}
        if ev.get("test", {}).get("task") == "classification":
            # Accuracy is the correctness column; macro-F1 shows whether every class is predicted.
            m = ev["test"]["metrics"]
            if isinstance(m.get("macro_f1"), dict):
                extra["macro_f1"] = _ci(m["macro_f1"])
        if ev.get("classification"):
            c = ev["classification"].get("metrics", ev["classification"])
            extra["classification"] = {k: _ci(c[k]) for k in ("accuracy", "macro_f1") if isinstance(c.get(k), dict)}
        from tunesmith import configlib

        arms.append({
            "id": j.id, "arm": j.arm, "model": j.model, "seed": j.seed, "regimen": j.regimen, "kind": j.kind,
            "run_dir": str(run), "status": o["status"], "error": o.get("error"), "config": configlib.to_dict(j.cfg),
            "results": vals, "extra": extra,
            "cost": {"train_seconds": meta.get("train_seconds", 0.0), "trained_tokens": meta.get("trained_tokens", 0),
                     "trainable_params": meta.get("trainable_params", 0), "total_params": meta.get("total_params"),
                     "peak_memory_mib": meta.get("peak_memory_mib"),
                     "eval_seconds_per_item": ev.get("test", {}).get("seconds_per_item")},
            "curves": _curves(run), "overfitting": _overfitting(j, run, ev, o["status"]), "tuning": j.tuning,
            "label_counts": _label_counts(run, test_name) if ev.get("test", {}).get("task") == "classification" else None,
            "data": {"train_records": manifest.get("counts", {}).get("train"), "test_records": ev.get("test", {}).get("n"),
                     "overlap_train_test": overlap},
        })
    base_ids = [a["id"] for a in arms if a["arm"] == baseline]
    by_arm = {(j.arm, j.model, j.seed): j.id for j in shown}
    starts = {j.id: by_arm.get((arm_after[j.arm], j.model, j.seed)) for j in shown if arm_after.get(j.arm)}
    for a in arms:
        # With several models or seeds, compare against the baseline of the same model and seed.
        b = next((x for x in base_ids if x.split("/")[1:] == a["id"].split("/")[1:]), base_ids[0] if base_ids else None)
        a["vs_baseline"] = {c: _pair(vectors[a["id"]][c], vectors[b].get(c, {})) for c in vectors[a["id"]]} if b and b != a["id"] else {}
        start = starts.get(a["id"])
        # A chained arm (DPO after SFT) is also compared with the arm it started from: its own effect.
        a["starts_from"] = start
        a["vs_start"] = {c: _pair(vectors[a["id"]][c], vectors[start].get(c, {})) for c in vectors[a["id"]]} if start in vectors else {}
        a["pairwise"] = {c: {o["id"]: _pair(vectors[a["id"]][c], vectors[o["id"]].get(c, {})) for o in arms if o["id"] != a["id"] and c in vectors[o["id"]]}
                         for c in vectors[a["id"]]}
    judged = tasks.judged(study)
    criteria = {"correctness": {"label": "Correctness", "metric": corr["metric"], "measures": corr["measures"], "task": study.eval.task,
                                "dataset": test_name, "higher_is_better": True, **({"proxy": True} if corr["proxy"] else {}),
                                **({"tests_shown": study.eval.show_tests is not False} if study.eval.task == "code" else {})},
                "domain_adherence": {"label": "Domain adherence", "higher_is_better": True,
                                     "metric": "share of answers to in-domain questions whose claims are all in the domain passages for the question"},
                "helpfulness": {"label": "Helpfulness", "metric": "reference_similarity" if not judged else f"judge_{defs['helpfulness_rubric']}",
                                "proxy": not judged, "higher_is_better": True},
                "retention": {"label": "General-ability retention", "metric": "probe_accuracy", "higher_is_better": True}}
    not_measured = {k: v for k, v in defs["not_applicable"].items() if k != "ood_policy" or study.data.ood}
    if study.data.ood and "ood_policy" not in not_measured:
        criteria["ood_policy"] = {"label": "Out-of-domain policy", "higher_is_better": True, "policy": study.policy.out_of_domain,
                                  "metric": f"share of out-of-domain questions handled as the policy says ({study.policy.out_of_domain})"}
    if study.data.classification_test:
        criteria["classification"] = {"label": "Classification accuracy", "metric": "accuracy", "dataset": Path(study.data.classification_test).stem, "higher_is_better": True}
    for name in not_measured:
        criteria.pop(name, None)
    from tunesmith import configlib

    record_tests(criteria, arms)
    from tunesmith.study.tuning import tuning_summary

    return {"schema_version": SCHEMA_VERSION, "study": study.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "wall_seconds": round(wall_seconds, 1),
            "invocation_seconds": round(invocation_seconds if invocation_seconds is not None else wall_seconds, 1), "env": env_info(),
            "policy": {"ood": study.policy.out_of_domain, "decline_message": study.policy.decline_message,
                       "told_prompting_arms": study.policy.told(), "examples": study.policy.examples},
            "data_preparation": prepared or {}, "notes": list(study.notes),
            "criteria": criteria, "not_measured": not_measured, "baseline": baseline, "arms": arms,
            "examples": _examples(arms, test_name, key=corr["item_key"]),
            "majority_class": majority_class(study, arms), "tuning": tuning_summary(arms),
            "config_diff": _config_diff(arms), "study_config": configlib.to_dict(study)}


def record_tests(criteria: dict, arms: list[dict]) -> None:
    """Write into each criterion which significance test its comparisons use, and the correction
    for multiple comparisons the verdict applies: McNemar's exact test when every stored pair of
    the criterion has 0/1 per-item scores, else the paired sign-flip permutation test (so every
    comparison on one criterion uses the same test). Call once every arm's pairs are in."""
    from tunesmith.study.significance import CORRECTION, TESTS, pair_rows, supported_test

    for name, c in criteria.items():
        rows = pair_rows({"arms": arms}, name)
        if rows:
            test = supported_test(rows)  # every pair _pair stores has permutation_p, so never the bootstrap
            c.update(test=test, test_name=TESTS[test][0], correction=CORRECTION)


def _train_label_counts(study, labels: set[str]) -> Counter:
    """Labels of the study's labelled training data (classification_train's label field, else
    data.train's completion), counted over the labels the test set uses; empty when unreadable."""
    from tunesmith.data.io import read_raw

    for path, keys in ((study.data.classification_train, ("label",)), (study.data.train, ("label", "completion", "answer"))):
        if not path:
            continue
        raw = read_raw(path)
        counts = Counter(str(v).strip() for r in raw.records for v in [next((r.data[k] for k in keys if k in r.data), None)]
                         if v is not None and str(v).strip() in labels)
        if counts:
            return counts
    return Counter()


def majority_class(study, arms: list[dict]) -> dict | None:
    """The majority-class reference of a classification study's correctness: always answering the
    most frequent label of the training data (of the test set when the study has no labelled
    training data), scored on the test set: {"label", "value", "n", "source", "criterion"}."""
    if study.eval.task != "classification":
        return None
    ref = next(((a.get("label_counts") or {}).get("reference") for a in arms if (a.get("label_counts") or {}).get("reference")), None)
    if not ref:
        return None
    train = _train_label_counts(study, set(ref) | set(study.eval.labels or []))
    label = (train or Counter(ref)).most_common(1)[0][0]
    n = sum(ref.values())
    return {"label": label, "value": ref.get(label, 0) / n, "n": n,
            "source": "training data" if train else "test data", "criterion": "correctness"}
