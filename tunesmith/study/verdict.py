"""The verdict of a study: which arm wins on each criterion, whether fine-tuning beats prompting,
and the warnings a reader must see before trusting the numbers.

Input is the parsed ``results.json`` a study writes (schema_version 1). An arm *wins* a criterion
only when it has the best value and beats every other arm measured on that criterion on the
criterion's test (McNemar's exact test for 0/1 scores, a paired sign-flip permutation test
otherwise), with Holm-Bonferroni adjusted p below ``alpha`` (see `tunesmith.study.significance`);
otherwise the arms not significantly worse than the best are reported as tied. A criterion that
cannot separate the arms by how it was measured (the same score for all, a proxy, too few items)
says so instead. On classification, always answering the most frequent label is the reference an
arm must beat. Standard library only.
"""

from __future__ import annotations

import math

# The comparisons' machinery (reading pairs, tests, Holm) lives in significance; the accessors are
# re-exported here because the report and scripts read them from the verdict.
from tunesmith.study.significance import (  # noqa: F401
    CORRECTION, CORRECTNESS, TESTS, baseline_for, best_of_kind, comparisons, completed_arms, criterion_test,
    fmt_tested, higher_is_better, holm_adjust, in_family, is_baseline, main_criterion, metric, pair_p, paired,
    ranked_arms, significantly_better, stored_pair,
)

FORGETTING_DROP = 0.05  # retention drop (on a 0..1 scale) that counts as forgetting even without significance
MIN_TRAIN_RECORDS = 100
MEANINGFUL_DIFF = 0.05  # on a 0..1 scale: a criterion that cannot detect this is too coarse to call a tie
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


# --------------------------------------------------------------------------- per criterion

def majority_reference(results: dict) -> dict | None:
    """{"label", "value", "source", "criterion"}: the score of always answering the most frequent label,
    on a classification test. results.json's `majority_class` (label taken from the training data when
    the study has labelled training data) or, without it, the most frequent label of the test set."""
    ref = results.get("majority_class")
    if isinstance(ref, dict) and ref.get("label") is not None and ref.get("value") is not None:
        return {"criterion": main_criterion(results), "source": "test data", **ref}
    for a in completed_arms(results):
        counts = (a.get("label_counts") or {}).get("reference") or {}
        if sum(counts.values()):
            label, k = max(counts.items(), key=lambda kv: kv[1])
            return {"label": label, "value": k / sum(counts.values()), "source": "test data",
                    "criterion": main_criterion(results)}
    return None


def _not_above_reference(results: dict, name: str, arms: list[dict]) -> tuple[dict | None, list[str]]:
    """(majority-class reference of this criterion, ids of the arms that do not score above it)."""
    ref = majority_reference(results)
    if not ref or ref.get("criterion") != name:
        return None, []
    sign = 1 if higher_is_better(results, name) else -1
    return ref, [a["id"] for a in arms if sign * (metric(a, name)["value"] - ref["value"]) <= 0]


def _reference_text(results: dict, name: str, arms: list[dict]) -> str:
    ref, below = _not_above_reference(results, name, arms)
    if not below:
        return ""
    verb = "does" if len(below) == 1 else "do"
    return (f" Always answering the most frequent label of the {ref['source']}, \"{ref['label']}\", scores "
            f"{fmt_num(ref['value'])}; {join_names(below)} {verb} not beat that.")


def _separation(results: dict, name: str, ranked: list[dict], fam: dict, tied: list[dict]) -> str | None:
    """Why a criterion cannot separate the arms by how it was measured (None when it can): the same
    score for every arm, a proxy measurement, or too few items for differences of the observed size."""
    running = criterion_label(results, name)
    label = running[:1].upper() + running[1:]  # it opens a sentence
    ms = [metric(a, name) for a in ranked]
    if max(m["value"] for m in ms) - min(m["value"] for m in ms) <= 1e-12:
        ns = {m.get("n") for m in ms}
        rows = [r for a in ranked[1:] for r in [stored_pair(results, ranked[0], a, name)[0]] if r]
        identical = len(rows) == len(ranked) - 1 and all(
            r.get("diff") == 0 and r.get("low") == 0 and r.get("high") == 0 for r in rows)
        where = f" on the same {ns.pop()} items" if len(ns) == 1 and None not in ns else ""
        return (f"{label} cannot separate the arms: every arm scored {fmt_num(ms[0]['value'])}{where}"
                + (", item for item" if identical else "") + ".")
    c = results.get("criteria", {}).get(name) or {}
    if c.get("proxy"):
        return (f"{label} cannot separate the arms: it is measured only by a proxy ({c.get('metric', 'unnamed')}), "
                f"which scores closeness to the reference answer, not {running} itself.")
    if len(tied) < len(ranked):
        return None  # some arm is significantly worse: the measurement did separate arms
    n = min((m.get("n") for m in ms if m.get("n")), default=None)
    gap = abs(ms[0]["value"] - ms[-1]["value"])
    if n is not None and n < MIN_TEST_RECORDS:
        return (f"{label} cannot separate the arms: only {n} items were scored, too few (under {MIN_TEST_RECORDS}) "
                f"to tell differences like the observed {gap:.2f} from chance.")
    widths = [r["width"] for r in fam.values() if r["width"] is not None]
    # 80% power at two-sided alpha 0.05 needs a true difference of about 2.8 standard errors, i.e.
    # 0.71 x the 95% interval's width. A tie of arms closer than that is only underpowered when the
    # study could not detect a meaningful difference either (a well-powered tie is a real tie).
    detectable = 0.71 * max(widths) if widths else None
    meaningful = MEANINGFUL_DIFF * (100 if abs(ms[0]["value"]) > 1 else 1)
    if detectable is not None and detectable > max(gap, meaningful):
        return (f"{label} cannot separate the arms: with {n} items it can detect differences of about "
                f"{detectable:.2f} or more (at 80% power), and the arms are at most {gap:.2f} apart.")
    return None


def criterion_verdict(results: dict, name: str, alpha: float = 0.05) -> dict:
    """{"winner": id | None, "tied": [ids], "separates": bool, "why": str | None, "text": str} for one
    criterion. `separates` is False when the measurement cannot tell the arms apart (`why` says how)."""
    label = criterion_label(results, name)
    ranked = ranked_arms(results, name)
    out = {"winner": None, "tied": [], "separates": True, "why": None}
    if not ranked:
        return {**out, "separates": False, "why": "not measured", "text": f"No completed arm was measured on {label}."}
    best, others = ranked[0], ranked[1:]
    shown = f"{fmt_ci(metric(best, name))}"
    ref = _reference_text(results, name, ranked)
    if not others:
        return {**out, "winner": best["id"], "text": f"{best['id']} is the only arm measured on {label} ({shown}).{ref}"}
    fam, test = comparisons(results, name), criterion_test(results, name)
    tied = [best] + [o for o in others if not significantly_better(results, best, o, name, alpha, fam)]
    if len(tied) == 1:
        row = fam[(best["id"], others[0]["id"])]
        out.update(winner=best["id"], text=f"{best['id']} wins on {label} ({shown}); next best: {others[0]['id']}, "
                                            f"{fmt_tested(test, row['p'], row['p_adj'], row['m'], alpha)}.")
    else:
        ids = [a["id"] for a in tied]
        rest = len(ranked) - len(tied)
        beaten = ("; the remaining arm is significantly worse" if rest == 1
                  else f"; the other {rest} arms are significantly worse" if rest else "")
        untested = all(r["p"] is None for r in fam.values())
        why = ("the results hold no paired tests" if untested
               else f"no significant difference at {CORRECTION}-adjusted p < {alpha:g}, {TESTS[test][0]}")
        who = (join_names(ids) if len(ids) <= 5 else f"all {len(ids)} arms" if len(ids) == len(ranked)
               else f"{len(ids)} of {len(ranked)} arms")
        out.update(tied=ids, text=f"{who} are tied on {label} ({why}; best: {best['id']} {shown}{beaten}).")
    cannot = _separation(results, name, ranked, fam, tied)
    if cannot:
        # The statistical reading stays, after the reason it says little about the arms.
        by = "By that proxy: " if (results.get("criteria", {}).get(name) or {}).get("proxy") else "As measured: "
        out.update(winner=None, separates=False, why=cannot, text=f"{cannot} {by}{out['text']}")
    out["text"] += ref
    return out


# --------------------------------------------------------------------------- fine-tuning vs prompting

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


def _prompting_below_reference(results: dict, name: str, pr: dict, tr: dict) -> str:
    """When the best prompting arm does not beat always answering the majority label, the gain of
    fine-tuning over prompting overstates what fine-tuning adds over a constant answer."""
    ref, below = _not_above_reference(results, name, [pr])
    if not below:
        return ""
    gain = metric(tr, name)["value"] - ref["value"]
    return (f" The best prompting arm does not beat always answering \"{ref['label']}\" (the most frequent label of "
            f"the {ref['source']}, {fmt_num(ref['value'])}): {tr['id']} is {gain:+.2f} above that reference.")


def fine_tuning_vs_prompting(results: dict, alpha: float = 0.05) -> str:
    """One or two sentences: does the best trained arm beat the best prompting arm on correctness?"""
    name = main_criterion(results)
    label = criterion_label(results, name)
    tr, pr = best_of_kind(results, "training", name), best_of_kind(results, "prompting", name)
    if not tr or not pr:
        missing = "trained" if not tr else "prompting"
        return f"No completed {missing} arm was measured on {label}, so fine-tuning and prompting cannot be compared."
    fam = comparisons(results, name)
    row = in_family(fam, tr, pr) or {}
    diff, p = row.get("diff"), row.get("p")
    vt, vp = metric(tr, name)["value"], metric(pr, name)["value"]
    diff = vt - vp if diff is None else diff
    nums = (f"{fmt_num(vt)} vs {fmt_num(vp)}, {diff:+.2f}, "
            f"{fmt_tested(criterion_test(results, name), p, row.get('p_adj'), row.get('m', 1), alpha)}")
    cost, ref = _training_cost(tr), _prompting_below_reference(results, name, pr, tr)
    if p is None:
        return (f"Fine-tuning vs prompting on {label}: {tr['id']} vs {pr['id']} ({fmt_num(vt)} vs {fmt_num(vp)}, "
                f"{diff:+.2f}), but the results hold no paired test, so whether it is significant is unknown; "
                f"{tr['id']} took {cost}.{ref}")
    if significantly_better(results, tr, pr, name, alpha, fam):
        return (f"Fine-tuning pays off: the best trained arm, {tr['id']}, beats the best prompting arm, "
                f"{pr['id']}, on {label} ({nums}), at the price of {cost}.{ref}")
    if significantly_better(results, pr, tr, name, alpha, fam):
        return (f"Prompting wins: the best prompting arm, {pr['id']}, beats the best trained arm, {tr['id']}, "
                f"on {label} ({nums}), and it needs no training ({tr['id']} took {cost}).{ref}")
    return (f"Fine-tuning does not significantly beat prompting on {label}: {tr['id']} vs {pr['id']} ({nums}), "
            f"although {tr['id']} took {cost}; prompting is the cheaper choice unless more data shows a difference.{ref}")


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
    """Arms whose retention dropped versus their baseline: significantly (the criterion's test,
    Holm-Bonferroni adjusted over every arm compared with its baseline) or by more than
    FORGETTING_DROP whatever the test says."""
    if name not in results.get("criteria", {}):
        return []
    sign, test = (1 if higher_is_better(results, name) else -1), criterion_test(results, name)
    rows = []
    for a in completed_arms(results):
        base, m = baseline_for(results, a), metric(a, name)
        if not base or not metric(base, name) or is_baseline(results, a) or not m:
            continue
        row = (a.get("vs_baseline") or {}).get(name) or {}
        diff, p = (row.get("diff"), pair_p(row, test)) if row else paired(results, a, base, name)
        rows.append((a, metric(base, name)["value"], m["value"] - metric(base, name)["value"] if diff is None else diff, p))
    hits = []
    for (a, b, diff, p), p_adj in zip(rows, holm_adjust([r[3] for r in rows])):
        threshold = FORGETTING_DROP * (100 if abs(b) > 1 else 1)
        if sign * diff < 0 and ((p_adj is not None and p_adj < alpha) or abs(diff) > threshold):
            tested = fmt_tested(test, p, p_adj, sum(r[3] is not None for r in rows), alpha)
            hits.append(f"{a['id']} lost {abs(diff):.2f} ({fmt_num(b)} -> {fmt_num(metric(a, name)['value'])}, {tested})")
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


def _label_set(results: dict, counts: dict) -> list[str]:
    """The classes an arm could answer: the study's configured labels, else every reference label."""
    configured = (((results.get("study_config") or {}).get("eval") or {}).get("labels")) or []
    return list(dict.fromkeys([str(x) for x in configured] + list((counts.get("reference") or {}).keys())))


def _never_predicted_warnings(results: dict) -> list[str]:
    """Classification arms that never answer some class of the label set: every item of that class
    is wrong by construction, which accuracy alone hides when the class is rare."""
    out = []
    for a in completed_arms(results):
        counts = a.get("label_counts") or {}
        pred, ref = counts.get("predicted") or {}, counts.get("reference") or {}
        n = sum(pred.values())
        if n < ONE_LABEL_MIN_ITEMS or max(pred.values()) / n >= ONE_LABEL_SHARE:
            continue  # too few items to tell, or already warned about as answering one label
        missing = [x for x in _label_set(results, counts) if not pred.get(x)]
        if missing:
            detail = join_names([f"\"{x}\" (0 of {n} answers; {ref.get(x, 0)} test items have that label)" for x in missing])
            out.append(f"{a['id']} never predicts {detail}: every item of "
                       f"{'that class' if len(missing) == 1 else 'those classes'} is scored wrong whatever the arm "
                       "knows, and its accuracy hides it; check the prompt's label wording or the label mapping.")
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
            + _never_predicted_warnings(results) + _proxy_warnings(results))


# --------------------------------------------------------------------------- entry points

def chained_effects(results: dict, alpha: float = 0.05) -> list[str]:
    """A sentence per chained arm (DPO after SFT): its own effect over the arm it started from on
    each criterion, with the criterion's test and Holm's correction over those criteria."""
    from tunesmith.study.significance import criterion_test, fmt_tested, holm_adjust, pair_p

    out = []
    for a in completed_arms(results):
        rows = {n: r for n, r in (a.get("vs_start") or {}).items() if r and r.get("diff") is not None
                and n in results.get("criteria", {})}
        if not a.get("starts_from") or not rows:
            continue
        tests = {n: criterion_test(results, n) for n in rows}
        ps = [pair_p(rows[n], tests[n]) for n in rows]
        adj = holm_adjust(ps)
        parts = []
        for (n, row), p, q in zip(rows.items(), ps, adj):
            sig = q is not None and q < alpha
            parts.append(f"{criterion_label(results, n)} {row['diff']:+.2f} ({fmt_tested(tests[n], p, q, len(rows), alpha)}"
                         f"{', significant' if sig else ''})")
        out.append(f"{a['id']} starts from {a['starts_from']}; its own effect over that start: {'; '.join(parts)}.")
    return out


def verdict(results: dict, alpha: float = 0.05) -> dict:
    """{"criteria": {name: {"winner", "tied", "separates", "why", "text"}}, "fine_tuning_vs_prompting": str,
    "warnings": [str]}."""
    from tunesmith.study.tuning import tuning_clause

    headline = fine_tuning_vs_prompting(results, alpha) if main_criterion(results) else ""
    return {
        "criteria": {name: criterion_verdict(results, name, alpha) for name in results.get("criteria", {})},
        "fine_tuning_vs_prompting": tuning_clause(results) + headline if headline else "",
        "chains": chained_effects(results, alpha),
        "warnings": warnings(results, alpha),
    }


def winner(results: dict, alpha: float = 0.05) -> dict | None:
    """The arm to deploy, by the main criterion, and the commands that export and serve it.

    {"id", "run_dir", "regimen", "criterion", "value", "significant", "tied_with", "text",
    "export", "serve"}; None when no completed arm was measured. When the best arm is not
    significantly better than others it is still named (a user must deploy something), with
    `significant: false` and the arms it is tied with."""
    name = main_criterion(results)
    ranked = ranked_arms(results, name) if name else []
    if not ranked:
        return None
    cv = criterion_verdict(results, name, alpha)
    best = next((a for a in ranked if a["id"] == cv["winner"]), ranked[0])
    tied = [t for t in cv["tied"] if t != best["id"]]
    run = best.get("run_dir") or f"runs/{best['id']}"
    fmt = "hf"  # every regimen exports to hf (a head run as a classifier, a prompting run as its recipe)
    label = criterion_label(results, name)
    if cv["winner"] == best["id"] and len(ranked) > 1:
        text = f"{best['id']} wins on {label} ({fmt_ci(metric(best, name))})."
    elif tied:
        text = (f"{best['id']} has the best {label} ({fmt_ci(metric(best, name))}) but is not significantly better than "
                f"{join_names(tied)}: any of them is as good a choice by this study; prefer the cheapest to run.")
    else:
        text = f"{best['id']} has the best {label} ({fmt_ci(metric(best, name))})."
    return {"id": best["id"], "run_dir": run, "regimen": best.get("regimen"), "criterion": name,
            "value": (metric(best, name) or {}).get("value"), "significant": cv["winner"] == best["id"] and len(ranked) > 1,
            "tied_with": tied, "text": text,
            "export": f"tunesmith export {run} --format {fmt}", "serve": f"tunesmith serve {run}"}


def verdict_paragraph(v: dict) -> str:
    """The verdict as one paragraph of running text."""
    parts = [v.get("fine_tuning_vs_prompting", "")] + [c["text"] for c in v.get("criteria", {}).values()]
    parts += v.get("chains", [])
    n = len(v.get("warnings", []))
    if n:
        parts.append(f"Read the {plural(n, 'warning')} below before acting on this.")
    return " ".join(p for p in parts if p)
