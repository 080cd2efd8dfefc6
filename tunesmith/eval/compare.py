"""Compare two evaluations of the same items: per-metric differences with paired bootstrap
intervals and p-values, plus McNemar's exact test for 0/1 scores."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.eval.runner import read_result, stored_results
from tunesmith.eval.stats import mcnemar, paired_bootstrap

# What a result records about how it was produced, for results written before "settings" was.
_LEGACY_SETTINGS = ("task", "n", "shots", "shot_selection", "prompt_template", "generation")
# Input files are matched by their contents (the data hash), not by how their path was spelt;
# batching and the number of bootstrap resamples do not change the per-item scores compared.
_IGNORED = ("data", "reference_file", "ids_file", "shots_from", "domain_corpus", "ood_data", "batch_size", "bootstrap")


def _settings(r: dict, legacy: bool = False) -> dict:
    if "settings" in r and not legacy:
        return {k: v for k, v in r["settings"].items() if k not in _IGNORED}
    return {k: r.get(k) for k in _LEGACY_SETTINGS}


def _same(ra: dict, rb: dict) -> bool:
    """Same dataset, data and settings (a result written before settings were recorded is
    matched on what it does record)."""
    legacy = "settings" not in ra or "settings" not in rb
    return (ra["dataset"] == rb["dataset"] and ra.get("data", {}).get("hash") == rb.get("data", {}).get("hash")
            and _settings(ra, legacy) == _settings(rb, legacy))


def _candidates(spec: str, dataset: str | None) -> list[tuple[Path, dict]]:
    p = Path(spec)
    if p.is_dir():
        found = stored_results(p, dataset)
        if not found:
            raise TunesmithError(f"{p}: no evaluation{f' of {dataset}' if dataset else ''} stored; run `tunesmith eval {p} --data ...` first")
        return found
    r, _ = read_result(p)
    return [(p, r)]


def _describe(r: dict) -> str:
    s = _settings(r)
    keys = ("limit", "shots", "max_new_tokens", "prompt", "task") if "settings" in r else ("n", "shots", "task")
    return f"{r['dataset']} ({', '.join(f'{k}={s.get(k)}' for k in keys if k in s)})"


def pick_pair(a: str, b: str, dataset: str | None = None) -> tuple[Path, Path]:
    """The two stored results to compare: same dataset, same data, same settings. Among several
    such pairs, the one holding A's latest evaluation, else the most recent."""
    ca, cb = _candidates(a, dataset), _candidates(b, dataset)
    same = [(x, y) for x in ca for y in cb if _same(x[1], y[1])]
    if not same:
        if len(ca) == len(cb) == 1 and ca[0][1].get("data", {}).get("hash") != cb[0][1].get("data", {}).get("hash"):
            ra, rb = ca[0][1], cb[0][1]
            raise TunesmithError(f"{a} and {b} were evaluated on different data ({ra['data'].get('path')} vs {rb['data'].get('path')}); compare the same items")
        raise TunesmithError(f"{a} and {b} hold no evaluations of the same data with the same settings (A: {'; '.join(_describe(r) for _, r in ca)}; "
                             f"B: {'; '.join(_describe(r) for _, r in cb)}); evaluate both with the same settings")
    datasets = sorted({x[1]["dataset"] for x, _ in same})
    if len(datasets) > 1:
        raise TunesmithError(f"{a} and {b} share evaluations of several datasets; name one with --dataset ({', '.join(datasets)})")

    def rank(pair):
        (fa, ra), (_, rb) = pair
        latest_a = fa.name == f"{ra['dataset']}.json" or _latest_key(fa, ra) == ra.get("cache_key")
        return (latest_a, max(str(ra.get("created", "")), str(rb.get("created", ""))))

    (fa, _), (fb, _) = max(same, key=rank)
    return fa, fb


def _latest_key(f: Path, r: dict) -> str | None:
    latest = f.with_name(f"{r['dataset']}.json")
    try:
        return json.loads(latest.read_text()).get("cache_key")
    except (OSError, ValueError):
        return None


def compare(a: str, b: str, *, dataset: str | None = None, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Differences B - A on every per-item score the two evaluations share. In run directories,
    the evaluations compared are those of the same dataset, data and settings (see pick_pair)."""
    fa, fb = pick_pair(a, b, dataset)
    ra, sa = read_result(fa)
    rb, sb = read_result(fb)
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
    return {"dataset": ra["dataset"], "n": len(common), "a": a, "b": b, "a_file": str(fa), "b_file": str(fb),
            "settings": _describe(ra), "rows": rows}


def format_comparison(c: dict) -> str:
    lines = [f"{c['dataset']}: {c['n']} paired items   A = {c['a']}   B = {c['b']}",
             f"compared: {c.get('a_file', c['a'])} vs {c.get('b_file', c['b'])}, same data and settings: {c.get('settings', '')}",
             f"{'metric':<22}{'A':>9}{'B':>9}{'B - A':>9}   {'95% interval':<19}{'p (bootstrap)':>14}{'p (McNemar)':>13}"]
    for r in c["rows"]:
        mc = f"{r['mcnemar_p']:.3g}" if "mcnemar_p" in r else "-"
        lines.append(f"{r['metric']:<22}{r['a']:>9.3f}{r['b']:>9.3f}{r['diff']:>+9.3f}   [{r['low']:+.3f}, {r['high']:+.3f}]   {r['p_value']:>12.3g}{mc:>13}")
    return "\n".join(lines)
