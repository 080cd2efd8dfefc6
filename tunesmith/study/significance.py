"""The comparisons behind a study's verdict: reading paired results from results.json, which
significance test each criterion uses, the correction for the number of comparisons, and how
p-values are printed.

One test per criterion: McNemar's exact test when every per-item score of the criterion is 0/1
(exact match, accuracy, adherence), else a paired sign-flip permutation test (ROUGE, similarity).
Results written before these tests existed carry only the paired bootstrap p, which is then used
and named as such. The comparisons the verdict makes on one criterion (the best arm against every
other arm, and the best trained against the best prompting arm) are one family, and their
p-values are Holm-Bonferroni adjusted (`tunesmith.eval.stats.holm`). p-values are printed with as
many digits as it takes never to land on the significance threshold: 0.04995 is never "0.05".
Standard library only (holm is imported lazily so the report renders without numpy loaded).
"""

from __future__ import annotations

import math

CORRECTNESS = "correctness"

# test key -> (name in running text, the pair field holding its p-value)
TESTS = {
    "mcnemar": ("McNemar's exact test", "mcnemar_p"),
    "permutation": ("a paired sign-flip permutation test", "permutation_p"),
    "bootstrap": ("a paired bootstrap", "p_value"),
}
SHORT = {"mcnemar": "McNemar", "permutation": "permutation", "bootstrap": "bootstrap"}
CORRECTION = "Holm-Bonferroni"


def pair_rows(results: dict, name: str) -> list[dict]:
    """Every stored paired comparison on a criterion (pairwise blocks, vs_baseline, vs_start)."""
    rows = []
    for a in results.get("arms", []):
        if a.get("status", "completed") != "completed":
            continue
        rows += [r for r in ((a.get("pairwise") or {}).get(name) or {}).values() if r]
        rows += [r for r in ((a.get(k) or {}).get(name) for k in ("vs_baseline", "vs_start")) if r]
    return rows


def criterion_test(results: dict, name: str) -> str:
    """The test key of a criterion: the one results.json records (criteria[name]["test"]), else the
    one every stored pair supports: McNemar when all carry mcnemar_p (0/1 scores), the permutation
    test when all carry permutation_p, the paired bootstrap otherwise."""
    declared = (results.get("criteria", {}).get(name) or {}).get("test")
    return declared if declared in TESTS else supported_test(pair_rows(results, name))


def supported_test(rows: list[dict]) -> str:
    """The test every one of a criterion's stored pairs supports: McNemar when all carry mcnemar_p
    (0/1 scores), the permutation test when all carry permutation_p, else the paired bootstrap."""
    for key in ("mcnemar", "permutation"):
        if rows and all(r.get(TESTS[key][1]) is not None for r in rows):
            return key
    return "bootstrap"


def pair_p(row: dict | None, test: str) -> float | None:
    """The criterion's test p-value from one stored pair (None when the pair lacks it)."""
    return None if not row else row.get(TESTS[test][1])


def holm_adjust(p_values: list[float | None]) -> list[float | None]:
    from tunesmith.eval.stats import holm

    return holm(p_values)


def p_digits(p: float, alpha: float = 0.05, min_digits: int = 3) -> str:
    """p with `min_digits` significant digits, more when fewer would round it onto or across alpha
    (0.04995 -> '0.04995', 0.0500001 -> '0.0500001'); '< 0.0001' below that."""
    if p < 1e-4:
        return "< 0.0001"
    for digits in range(min_digits, 12):
        text = f"{p:.{digits}g}"
        shown = float(text)
        if p == alpha or ((shown < alpha) == (p < alpha) and shown != alpha):
            break
    return text if "e" not in text else f"{p:.6f}"


def fmt_p(p: float | None, alpha: float = 0.05) -> str:
    """'p = 0.0312', 'p = 0.04995', 'p < 0.0001' or 'p n/a'."""
    if p is None:
        return "p n/a"
    text = p_digits(p, alpha)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def fmt_tested(test: str, p: float | None, p_adj: float | None, m: int, alpha: float = 0.05) -> str:
    """'McNemar p = 0.0312, adjusted p = 0.0624 by Holm-Bonferroni over 2 comparisons'."""
    if p is None:
        return "no paired test"
    adj = "p n/a" if p_adj is None else fmt_p(p_adj, alpha)
    return f"{SHORT[test]} {fmt_p(p, alpha)}, adjusted {adj} by {CORRECTION} over {m} comparison{'s' if m != 1 else ''}"


# --------------------------------------------------------------------------- reading comparisons

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


def stored_pair(results: dict, arm: dict, other: dict, name: str) -> tuple[dict | None, int]:
    """(stored pair of `arm` against `other` on a criterion, sign that turns its diff into arm - other):
    from either arm's `pairwise` block, else `vs_baseline` when one of them is the other's baseline."""
    row = ((arm.get("pairwise") or {}).get(name) or {}).get(other["id"])
    if row:
        return row, 1
    row = ((other.get("pairwise") or {}).get(name) or {}).get(arm["id"])
    if row:
        return row, -1
    for a, b, sign in ((arm, other, 1), (other, arm, -1)):
        if is_baseline(results, b) and baseline_for(results, a) is b and (a.get("vs_baseline") or {}).get(name):
            return a["vs_baseline"][name], sign
    return None, 1


def paired(results: dict, arm: dict, other: dict, name: str) -> tuple[float | None, float | None]:
    """(diff = arm - other, raw p-value of the criterion's test) on a criterion; the diff falls back
    to the difference of the two values (with p None) when no pair was stored."""
    row, sign = stored_pair(results, arm, other, name)
    if row:
        return (None if row.get("diff") is None else sign * row["diff"]), pair_p(row, criterion_test(results, name))
    ma, mo = metric(arm, name), metric(other, name)
    return (ma["value"] - mo["value"] if ma and mo else None), None


def comparisons(results: dict, name: str) -> dict[tuple[str, str], dict]:
    """The comparisons the verdict makes on a criterion, one Holm-Bonferroni family:
    {(arm id, other id): {"diff", "p", "p_adj", "m", "width"}} for the best arm against every other
    arm and, on the main criterion, the best trained arm against the best prompting arm. `width`
    is the paired difference's interval width (None without one); m the family's tested size."""
    ranked = ranked_arms(results, name)
    pairs = [(ranked[0], o) for o in ranked[1:]]
    if ranked and name == main_criterion(results):
        tr, pr = best_of_kind(results, "training", name), best_of_kind(results, "prompting", name)
        if tr and pr and ranked[0] not in (tr, pr):  # only when the best arm is of neither kind
            pairs.append((tr, pr))
    rows = []
    for a, o in pairs:
        diff, p = paired(results, a, o, name)
        row, _ = stored_pair(results, a, o, name)
        width = row["high"] - row["low"] if row and row.get("low") is not None and row.get("high") is not None else None
        rows.append(((a["id"], o["id"]), {"diff": diff, "p": p, "width": width}))
    adjusted = holm_adjust([r["p"] for _, r in rows])
    m = sum(r["p"] is not None for _, r in rows)
    return {key: {**r, "p_adj": pa, "m": m} for (key, r), pa in zip(rows, adjusted)}


def in_family(fam: dict, arm: dict, other: dict) -> dict | None:
    """A comparison of the family seen from `arm`'s side (diff = arm - other)."""
    if (arm["id"], other["id"]) in fam:
        return fam[(arm["id"], other["id"])]
    row = fam.get((other["id"], arm["id"]))
    return {**row, "diff": None if row["diff"] is None else -row["diff"]} if row else None


def significantly_better(results: dict, arm: dict, other: dict, name: str, alpha: float,
                         fam: dict | None = None) -> bool:
    """arm beats other on the criterion's test, Holm-adjusted within the verdict's family (raw p
    for a comparison outside it, which is then a family of one)."""
    row = in_family(comparisons(results, name) if fam is None else fam, arm, other)
    diff, p = (row["diff"], row["p_adj"]) if row else paired(results, arm, other, name)
    if diff is None or p is None or p >= alpha:
        return False
    return diff > 0 if higher_is_better(results, name) else diff < 0


def ranked_arms(results: dict, name: str) -> list[dict]:
    arms = [a for a in completed_arms(results) if metric(a, name)]
    hib = higher_is_better(results, name)
    return sorted(arms, key=lambda a: metric(a, name)["value"], reverse=hib)


def best_of_kind(results: dict, kind: str, name: str) -> dict | None:
    ranked = [a for a in ranked_arms(results, name) if a.get("kind") == kind]
    return ranked[0] if ranked else None
