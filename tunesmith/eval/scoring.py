"""Score a task's predictions: per-item scores (for intervals and paired tests) and metrics
with 95% bootstrap confidence intervals."""

from __future__ import annotations

from tunesmith.eval import metrics as M
from tunesmith.eval.stats import bootstrap_ci

# Metrics that are means of per-item scores, per task (name in the report -> per-item key).
PER_ITEM = {
    "qa": {"exact_match": "exact_match", "f1": "f1", "contains": "contains"},
    "math": {"accuracy": "correct"},
    "classification": {"accuracy": "correct"},
    "summarization": {"rouge1": "rouge1", "rouge2": "rouge2", "rougeL": "rougeL"},
    "translation": {"chrf_sentence": "chrf", "bleu_sentence": "bleu"},
    "chat": {"reference_similarity": "reference_similarity", "rougeL": "rougeL"},
    "creative": {"reference_similarity": "reference_similarity", "repetition_rate": "repetition",
                 "length_within": "length_within", "length_ratio": "length_ratio"},
}
PRIMARY = {"qa": "exact_match", "math": "accuracy", "classification": "accuracy", "summarization": "rougeL",
           "translation": "bleu", "code": "pass@1", "chat": "reference_similarity", "creative": "reference_similarity"}
# Metrics where a lower value is better (every other metric: higher is better).
LOWER_IS_BETTER = {"repetition_rate"}


def _code_scores(items, samples, cfg, progress):
    from tqdm.auto import tqdm

    from tunesmith.eval.sandbox import run_tests
    from tunesmith.eval.tasks import extract_code

    per_item = []
    bar = tqdm(total=len(items) * len(samples), unit="program", desc="run tests", disable=not progress)
    for i, item in enumerate(items):
        passed = []
        for s in samples:
            res = run_tests(extract_code(s[i]), item.tests, setup=item.setup, timeout_s=cfg.code_timeout_s)
            passed.append(res.passed)
            bar.update(1)
        row = {"passed": [int(p) for p in passed]}
        for k in cfg.pass_k:
            row[f"pass@{k}"] = M.pass_at_k(len(passed), sum(passed), k)
        per_item.append(row)
    bar.close()
    return per_item


def score(task: str, items, samples: list[list[str]], cfg, *, progress: bool = False) -> tuple[list[dict], dict, dict]:
    """samples: one list of predictions per sample (index 0 is the greedy/first one)."""
    preds = samples[0]
    extra: dict = {}
    if task == "qa":
        per_item = [M.qa_scores(p, it.refs) for p, it in zip(preds, items)]
    elif task == "math":
        per_item = [{"correct": M.math_correct(p, it.refs[0])} for p, it in zip(preds, items)]
    elif task == "classification":
        per_item = [{"correct": float(p == it.label)} for p, it in zip(preds, items)]
        cm = M.classification_metrics(preds, [it.label for it in items], labels=cfg.labels)
        extra = {"confusion_matrix": cm["confusion_matrix"], "per_label": cm["per_label"]}
    elif task == "summarization":
        per_item = [M.rouge_scores(p, it.refs) for p, it in zip(preds, items)]
    elif task == "translation":
        per_item = [M.translation_scores(p, it.refs) for p, it in zip(preds, items)]
    elif task == "code":
        per_item = _code_scores(items, samples, cfg, progress)
    elif task == "chat":
        sims = reference_similarity(preds, items)
        per_item = [{"reference_similarity": s, "rougeL": M.rouge_scores(p, it.refs)["rougeL"]}
                    for s, p, it in zip(sims, preds, items)]
    else:  # creative: labelled proxies (a judge, when given, adds its rubrics in the runner)
        sims = reference_similarity(preds, items)
        per_item = [{"reference_similarity": s, "repetition": M.repetition_rate(p),
                     "length_ratio": M.length_ratio(p, it.refs), "length_within": M.length_within(p, it.refs)}
                    for s, p, it in zip(sims, preds, items)]
    metrics = {}
    names = PER_ITEM.get(task, {}) if task != "code" else {f"pass@{k}": f"pass@{k}" for k in cfg.pass_k}
    for name, key in names.items():
        metrics[name] = bootstrap_ci([r[key] for r in per_item], n_resamples=cfg.bootstrap, seed=cfg.seed)
    pairs = list(zip(preds, items))
    if task == "classification":
        metrics["macro_f1"] = bootstrap_ci(pairs, statistic=lambda ps: M.classification_metrics([p for p, _ in ps], [it.label for _, it in ps], labels=cfg.labels)["macro_f1"],
                                           n_resamples=min(cfg.bootstrap, 500), seed=cfg.seed)
    if task == "translation":
        # Corpus metrics are bootstrapped by resampling items and recomputing the corpus score.
        for name, fn in (("bleu", M.bleu), ("chrf", M.chrf)):
            metrics[name] = bootstrap_ci(pairs, statistic=lambda ps, fn=fn: fn([p for p, _ in ps], [it.refs for _, it in ps]),
                                         n_resamples=min(cfg.bootstrap, 300), seed=cfg.seed)
    if task == "creative":
        # Diversity across answers: distinct n-grams pooled over the arm's answers, resampled by
        # item. A resample repeats answers, which adds no new n-grams: the plain percentile interval
        # sits below the observed value, so it is shifted by the bootstrap's bias estimate.
        for n in (1, 2):
            metrics[f"distinct_{n}"] = bootstrap_ci(preds, statistic=lambda ps, n=n: M.distinct_n(ps, n),
                                                    n_resamples=min(cfg.bootstrap, 300), seed=cfg.seed, bias_corrected=True)
    return per_item, metrics, extra


def reference_similarity(preds: list[str], items) -> list[float]:
    """Cosine similarity of each answer to its closest reference (sentence embeddings)."""
    from tunesmith.embeddings import get_embedder

    emb = get_embedder()
    flat = [(i, r) for i, it in enumerate(items) for r in it.refs]
    if not flat:
        return []
    P = emb.encode(preds)  # (N, d), L2-normalised
    R = emb.encode([r for _, r in flat])
    best = [-1.0] * len(preds)
    for (i, _), vec in zip(flat, R):
        best[i] = max(best[i], float(P[i] @ vec))
    return best
