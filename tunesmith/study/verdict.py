"""The verdict of a study: which arm wins on each criterion, whether fine-tuning beats prompting,
and the warnings a reader must see before trusting the numbers.

Input is the parsed ``results.json`` a study writes (schema_version 1). An arm *wins* a criterion
only when it has the best value and its paired p-value against every other arm measured on that
criterion is below ``alpha`` with the right sign; otherwise the arms not significantly worse than
the best are reported as tied. Standard library only.
"""

from __future__ import annotations

import math

CORRECTNESS = "correctness"
FORGETTING_DROP = 0.05  # retention drop (on a 0..1 scale) that counts as forgetting even without significance
MIN_TRAIN_RECORDS = 100
MIN_TEST_RECORDS = 30
ONE_LABEL_SHARE = 0.9  # share of test items given one label above which a classifier is called collapsed
ONE_LABEL_MIN_ITEMS = 20  # below this many test items a one-label run is too likely to be chance


# --------------------------------------------------------------------------- small helpers

def fmt_num(x: float | None) -> str:
    """A metric value: two decimals for 0..1-sized numbers, fewer digits for larger ones."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_p(p: float | None) -> str:
    """'p = 0.03', 'p < 0.001' or 'p n/a'."""
    if p is None:
        return "p n/a"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2g}" if p < 0.1 else f"p = {p:.2f}"


def fmt_ci(m: dict | None) -> str:
    """'0.93 [0.85, 0.98]' from {"value", "low", "high"}; just the value when no interval."""
    if not m or m.get("value") is None:
        return "n/a"
    if m.get("low") is None or m.get("high") is None:
        return fmt_num(m["value"])
    return f"{fmt_num(m['value'])} [{fmt_num(m['low'])}, {fmt_num(m['high'])}]"


def fmt_duration(seconds: float | None) -> str:
    """'45 s', '3 min 32 s', '1 h 05 min'."""
    if seconds is None:
        return "n/a"
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.2g} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def fmt_count(n: float | None) -> str:
    """'4.88M', '43.5k', '2,308'."""
    if n is None:
        return "n/a"
    if abs(n) >= 1e9:
        return f"{n / 1e9:.2f}B"
    if abs(n) >= 1e6:
        return f"{n / 1e6:.2f}M"
    if abs(n) >= 1e4:
        return f"{n / 1e3:.1f}k"
    return f"{n:,.0f}"


def join_names(names: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def criterion_label(results: dict, name: str) -> str:
    """The criterion's label for running text ('correctness', 'general-ability retention')."""
    label = (results.get("criteria", {}).get(name) or {}).get("label") or name.replace("_", " ")
    return label[:1].lower() + label[1:] if label[1:2].islower() else label


def higher_is_better(results: dict, name: str) -> bool:
    return (results.get("criteria", {}).get(name) or {}).get("higher_is_better", True) is not False


def main_criterion(results: dict) -> str | None:
    """'correctness' when the study measures it, else its first criterion (None without criteria)."""
    crits = results.get("criteria") or {}
    return CORRECTNESS if CORRECTNESS in crits else next(iter(crits), None)


def is_baseline(results: dict, arm: dict) -> bool:
    """`baseline` names an arm: its id, or its regimen name when arms are models x seeds."""
    base = results.get("baseline")
    return base is not None and base in (arm.get("id"), arm.get("arm"))


def baseline_for(results: dict, arm: dict) -> dict | None:
    """The completed baseline arm this arm is compared with: the same model and seed when there are several."""
    bases = [b for b in completed_arms(results) if is_baseline(results, b)]
    same = [b for b in bases if (b.get("model"), b.get("seed")) == (arm.get("model"), arm.get("seed"))]
    return (same or bases or [None])[0]


def completed_arms(results: dict) -> list[dict]:
    return [a for a in results.get("arms", []) if a.get("status", "completed") == "completed"]


def metric(arm: dict, name: str) -> dict | None:
    """The arm's {"value", "low", "high", "n"} on a criterion, or None when not measured."""
    m = (arm.get("results") or {}).get(name)
    v = m.get("value") if isinstance(m, dict) else None
    return m if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def paired(results: dict, arm: dict, other: dict, name: str) -> tuple[float | None, float | None]:
    """(diff = arm - other, paired p-value) on a criterion, from either arm's `pairwise` block,
    falling back to `vs_baseline` when the other arm is the baseline."""
    row = ((arm.get("pairwise") or {}).get(name) or {}).get(other["id"])
    if row:
        return row.get("diff"), row.get("p_value")
    row = ((other.get("pairwise") or {}).get(name) or {}).get(arm["id"])
    if row:
        return (None if row.get("diff") is None else -row["diff"]), row.get("p_value")
    for a, b, sign in ((arm, other, 1), (other, arm, -1)):
        if is_baseline(results, b) and baseline_for(results, a) is b and (a.get("vs_baseline") or {}).get(name):
            row = a["vs_baseline"][name]
            return (None if row.get("diff") is None else sign * row["diff"]), row.get("p_value")
    ma, mo = metric(arm, name), metric(other, name)
    return (ma["value"] - mo["value"] if ma and mo else None), None


def significantly_better(results: dict, arm: dict, other: dict, name: str, alpha: float) -> bool:
    diff, p = paired(results, arm, other, name)
    if diff is None or p is None or p >= alpha:
        return False
    return diff > 0 if higher_is_better(results, name) else diff < 0


# --------------------------------------------------------------------------- per criterion

def _ranked(results: dict, name: str) -> list[dict]:
    arms = [a for a in completed_arms(results) if metric(a, name)]
    hib = higher_is_better(results, name)
    return sorted(arms, key=lambda a: metric(a, name)["value"], reverse=hib)


def criterion_verdict(results: dict, name: str, alpha: float = 0.05) -> dict:
    """{"winner": id | None, "tied": [ids], "text": str} for one criterion."""
    label = criterion_label(results, name)
    ranked = _ranked(results, name)
    if not ranked:
        return {"winner": None, "tied": [], "text": f"No completed arm was measured on {label}."}
    best, others = ranked[0], ranked[1:]
    shown = f"{fmt_ci(metric(best, name))}"
    if not others:
        return {"winner": best["id"], "tied": [],
                "text": f"{best['id']} is the only arm measured on {label} ({shown})."}
    if all(significantly_better(results, best, o, name, alpha) for o in others):
        _, p = paired(results, best, others[0], name)
        return {"winner": best["id"], "tied": [],
                "text": f"{best['id']} wins on {label} ({shown}); next best: {others[0]['id']}, {fmt_p(p)}."}
    tied = [best] + [o for o in others if not significantly_better(results, best, o, name, alpha)]
    ids = [a["id"] for a in tied]
    rest = len(ranked) - len(tied)
    beaten = ("; the remaining arm is significantly worse" if rest == 1
              else f"; the other {rest} arms are significantly worse" if rest else "")
    untested = all(paired(results, best, o, name)[1] is None for o in others)
    why = "the results hold no paired tests" if untested else f"no significant difference at p < {alpha:g}"
    who = (join_names(ids) if len(ids) <= 5 else f"all {len(ids)} arms" if len(ids) == len(ranked)
           else f"{len(ids)} of {len(ranked)} arms")
    return {"winner": None, "tied": ids,
            "text": f"{who} are tied on {label} ({why}; best: {best['id']} {shown}{beaten})."}


# --------------------------------------------------------------------------- fine-tuning vs prompting

def _best_of_kind(results: dict, kind: str, name: str) -> dict | None:
    ranked = [a for a in _ranked(results, name) if a.get("kind") == kind]
    return ranked[0] if ranked else None


def _training_cost(arm: dict) -> str:
    cost = arm.get("cost") or {}
    parts = []
    if cost.get("train_seconds") is not None:
        parts.append(f"{fmt_duration(cost['train_seconds'])} of training")
    tp, total = cost.get("trainable_params"), cost.get("total_params")
    if tp is not None:
        share = f" ({100 * tp / total:.2g}% of {fmt_count(total)})" if total else ""
        parts.append(f"{fmt_count(tp)} trainable parameters{share}")
    return " and ".join(parts) if parts else "an unreported training cost"


def fine_tuning_vs_prompting(results: dict, alpha: float = 0.05) -> str:
    """One or two sentences: does the best trained arm beat the best prompting arm on correctness?"""
    name = main_criterion(results)
    label = criterion_label(results, name)
    tr, pr = _best_of_kind(results, "training", name), _best_of_kind(results, "prompting", name)
    if not tr or not pr:
        missing = "trained" if not tr else "prompting"
        return f"No completed {missing} arm was measured on {label}, so fine-tuning and prompting cannot be compared."
    diff, p = paired(results, tr, pr, name)
    vt, vp = metric(tr, name)["value"], metric(pr, name)["value"]
    diff = vt - vp if diff is None else diff
    nums = f"{fmt_num(vt)} vs {fmt_num(vp)}, {diff:+.2f}, {fmt_p(p)}"
    cost = _training_cost(tr)
    if p is None:
        return (f"Fine-tuning vs prompting on {label}: {tr['id']} vs {pr['id']} ({fmt_num(vt)} vs {fmt_num(vp)}, "
                f"{diff:+.2f}), but the results hold no paired test, so whether it is significant is unknown; "
                f"{tr['id']} took {cost}.")
    if significantly_better(results, tr, pr, name, alpha):
        return (f"Fine-tuning pays off: the best trained arm, {tr['id']}, beats the best prompting arm, "
                f"{pr['id']}, on {label} ({nums}), at the price of {cost}.")
    if significantly_better(results, pr, tr, name, alpha):
        return (f"Prompting wins: the best prompting arm, {pr['id']}, beats the best trained arm, {tr['id']}, "
                f"on {label} ({nums}), and it needs no training ({tr['id']} took {cost}).")
    return (f"Fine-tuning does not significantly beat prompting on {label}: {tr['id']} vs {pr['id']} ({nums}), "
            f"although {tr['id']} took {cost}; prompting is the cheaper choice unless more data shows a difference.")


# --------------------------------------------------------------------------- warnings

def _group(pairs: list[tuple[object, str]]) -> dict[object, list[str]]:
    """{key: [arm ids]} keeping first-seen order."""
    out: dict[object, list[str]] = {}
    for key, arm_id in pairs:
        out.setdefault(key, []).append(arm_id)
    return out


def _overfitting_warnings(results: dict) -> list[str]:
    hits = [a for a in completed_arms(results) if (a.get("overfitting") or {}).get("overfitting") is True]
    if not hits:
        return []
    detail = "; ".join(f"{a['id']}: {(a['overfitting'].get('evidence') or 'no evidence given').removeprefix('overfitting: ')}"
                      for a in hits)
    return [f"Overfitting in {plural(len(hits), 'arm')} ({detail}). Prefer the best checkpoint, fewer epochs "
            "or a lower learning rate."]


def _forgetting_warnings(results: dict, alpha: float, name: str = "retention") -> list[str]:
    if name not in results.get("criteria", {}):
        return []
    sign = 1 if higher_is_better(results, name) else -1
    hits = []
    for a in completed_arms(results):
        base, m = baseline_for(results, a), metric(a, name)
        if not base or not metric(base, name) or is_baseline(results, a) or not m:
            continue
        b = metric(base, name)["value"]
        threshold = FORGETTING_DROP * (100 if abs(b) > 1 else 1)
        row = (a.get("vs_baseline") or {}).get(name) or {}
        diff, p = (row.get("diff"), row.get("p_value")) if row else paired(results, a, base, name)
        diff = m["value"] - b if diff is None else diff
        if sign * diff < 0 and ((p is not None and p < alpha) or abs(diff) > threshold):
            hits.append(f"{a['id']} lost {abs(diff):.2f} ({fmt_num(b)} -> {fmt_num(m['value'])}, {fmt_p(p)})")
    if not hits:
        return []
    return [f"Forgetting in {plural(len(hits), 'arm')}: {criterion_label(results, name)} dropped versus the "
            f"baseline {results.get('baseline')}: {'; '.join(hits)}."]


def _leakage_warnings(results: dict) -> list[str]:
    groups = _group([((a.get("data") or {}).get("overlap_train_test") or 0, a["id"]) for a in results.get("arms", [])])
    return [f"Data leakage: {plural(n, 'test item')} also appear{'s' if n == 1 else ''} in the training data "
            f"({plural(len(ids), 'arm')}: {join_names(ids)}); scores on those items measure memorisation, "
            "not generalisation." for n, ids in groups.items() if n > 0]


def _ci_half_width(results: dict, ids: list[str]) -> float | None:
    widths = [(m["high"] - m["low"]) / 2 for a in results.get("arms", []) if a["id"] in ids
              for m in [metric(a, CORRECTNESS)] if m and m.get("low") is not None and m.get("high") is not None]
    return max(widths) if widths else None


def _small_data_warnings(results: dict) -> list[str]:
    out = []
    arms = results.get("arms", [])
    train = _group([((a.get("data") or {}).get("train_records"), a["id"]) for a in arms if a.get("kind") == "training"])
    for n, ids in train.items():
        if n is not None and n < MIN_TRAIN_RECORDS:
            out.append(f"Too little training data: only {plural(n, 'training record')} for {plural(len(ids), 'arm')} "
                       f"({join_names(ids)}); fewer than {MIN_TRAIN_RECORDS} records often under-trains and makes "
                       "results swing from seed to seed.")
    test = _group([((a.get("data") or {}).get("test_records"), a["id"]) for a in arms])
    for n, ids in test.items():
        if n is not None and 0 < n < MIN_TEST_RECORDS:
            half = _ci_half_width(results, ids) or 1.96 * math.sqrt(0.25 / n)
            out.append(f"Too little test data: only {plural(n, 'test item')} for {plural(len(ids), 'arm')} "
                       f"({join_names(ids)}); 95% intervals are about ±{half:.2f} wide at that size, so differences "
                       f"smaller than about {half:.2f} cannot be told apart from chance.")
    return out


def _status_warnings(results: dict) -> list[str]:
    out = []
    for status in ("failed", "skipped"):
        arms = [a for a in results.get("arms", []) if a.get("status") == status]
        if arms:
            detail = "; ".join(f"{a['id']}: {a.get('error') or 'no reason given'}" for a in arms)
            out.append(f"{plural(len(arms), 'arm')} {status} and {'is' if len(arms) == 1 else 'are'} left out "
                       f"of the verdict ({detail}).")
    base = results.get("baseline")
    if base and not any(is_baseline(results, a) for a in completed_arms(results)):
        out.append(f"The baseline arm {base} did not complete, so there are no comparisons against it.")
    return out


def _one_label_warnings(results: dict) -> list[str]:
    """Classification arms that give (nearly) every test item the same label: their accuracy is that
    label's share of the test set, whatever the arm learned about the task."""
    out = []
    for a in completed_arms(results):
        counts = a.get("label_counts") or {}
        pred, ref = counts.get("predicted") or {}, counts.get("reference") or {}
        n = sum(pred.values())
        if n < ONE_LABEL_MIN_ITEMS:
            continue
        label, k = max(pred.items(), key=lambda kv: kv[1])
        if k / n >= ONE_LABEL_SHARE:
            f1 = (a.get("extra") or {}).get("macro_f1")
            out.append(f"{a['id']} predicts \"{label}\" for {k} of {n} test items: its accuracy is close to the share of "
                       f"\"{label}\" among the references ({ref.get(label, 0) / max(sum(ref.values()), 1):.2f})"
                       + (f", macro-F1 {fmt_num(f1['value'])}" if f1 else "")
                       + f"; its score says how often \"{label}\" is the answer more than how well it does the task.")
    return out


def measured_proxies(results: dict) -> dict[str, dict]:
    """The proxy criteria ({name: criterion}) that at least one completed arm has a score on."""
    return {name: c for name, c in results.get("criteria", {}).items()
            if (c or {}).get("proxy") and any(metric(a, name) for a in completed_arms(results))}


def _proxy_warnings(results: dict) -> list[str]:
    return [f"{(c.get('label') or name).capitalize()} is a proxy ({c.get('metric', 'unnamed metric')}): it "
            "scores closeness to the reference answer, not whether a person finds the answer helpful; confirm "
            "with a judge model or human review before relying on it."
            for name, c in measured_proxies(results).items()]


def warnings(results: dict, alpha: float = 0.05) -> list[str]:
    """Every warning, each naming how many arms or items it concerns."""
    return (_status_warnings(results) + _leakage_warnings(results) + _overfitting_warnings(results)
            + _forgetting_warnings(results, alpha) + _small_data_warnings(results) + _one_label_warnings(results)
            + _proxy_warnings(results))


# --------------------------------------------------------------------------- entry points

def verdict(results: dict, alpha: float = 0.05) -> dict:
    """{"criteria": {name: {"winner", "tied", "text"}}, "fine_tuning_vs_prompting": str, "warnings": [str]}."""
    return {
        "criteria": {name: criterion_verdict(results, name, alpha) for name in results.get("criteria", {})},
        "fine_tuning_vs_prompting": fine_tuning_vs_prompting(results, alpha) if main_criterion(results) else "",
        "warnings": warnings(results, alpha),
    }


def verdict_paragraph(v: dict) -> str:
    """The verdict as one paragraph of running text."""
    parts = [v.get("fine_tuning_vs_prompting", "")] + [c["text"] for c in v.get("criteria", {}).values()]
    n = len(v.get("warnings", []))
    if n:
        parts.append(f"Read the {plural(n, 'warning')} below before acting on this.")
    return " ".join(p for p in parts if p)
