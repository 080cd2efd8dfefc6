"""Compare two evaluations of the same items: per-metric differences with paired bootstrap
intervals and p-values, plus McNemar's exact test for 0/1 scores."""

from __future__ import annotations

from tunesmith.errors import TunesmithError
from tunesmith.eval.runner import load_result
from tunesmith.eval.stats import mcnemar, paired_bootstrap


def compare(a: str, b: str, *, dataset: str | None = None, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Differences B - A on every per-item score the two evaluations share."""
    ra, sa = load_result(a, dataset)
    rb, sb = load_result(b, dataset)
    if ra["data"]["hash"] != rb["data"]["hash"]:
        raise TunesmithError(f"{a} and {b} were evaluated on different data ({ra['data']['path']} vs {rb['data']['path']}); compare the same items")
    by_id = {s["id"]: s for s in sb}
    common = [(x, by_id[x["id"]]) for x in sa if x["id"] in by_id]
    if not common:
        raise TunesmithError("the two evaluations share no items")
    keys = sorted(set(common[0][0]["scores"]) & set(common[0][1]["scores"]))
    rows = []
    for k in keys:
        xa = [x["scores"][k] for x, _ in common]
        xb = [y["scores"][k] for _, y in common]
        if not all(isinstance(v, (int, float)) for v in xa + xb):
            continue
        pb = paired_bootstrap(xa, xb, n_resamples=n_resamples, seed=seed)
        row = {"metric": k, "a": sum(xa) / len(xa), "b": sum(xb) / len(xb), **pb}
        if all(v in (0, 1) for v in xa + xb):
            row["mcnemar_p"] = mcnemar([int(v) for v in xa], [int(v) for v in xb])["p_value"]
        rows.append(row)
    return {"dataset": ra["dataset"], "n": len(common), "a": a, "b": b, "rows": rows}


def format_comparison(c: dict) -> str:
    lines = [f"{c['dataset']}: {c['n']} paired items   A = {c['a']}   B = {c['b']}",
             f"{'metric':<22}{'A':>9}{'B':>9}{'B - A':>9}   {'95% interval':<19}{'p (bootstrap)':>14}{'p (McNemar)':>13}"]
    for r in c["rows"]:
        mc = f"{r['mcnemar_p']:.3g}" if "mcnemar_p" in r else "-"
        lines.append(f"{r['metric']:<22}{r['a']:>9.3f}{r['b']:>9.3f}{r['diff']:>+9.3f}   [{r['low']:+.3f}, {r['high']:+.3f}]   {r['p_value']:>12.3g}{mc:>13}")
    return "\n".join(lines)
