"""Human-readable rendering of an evaluation result."""

from __future__ import annotations


def _fmt(m: dict) -> str:
    return f"{m['value']:.3f}  [{m['low']:.3f}, {m['high']:.3f}]"


def format_result(r: dict) -> str:
    lines = [f"{r['dataset']} ({r['task']}, {r['n']} items){'  [cached]' if r.get('cached') else ''}: {r['model']['spec']}"]
    for name, m in r["metrics"].items():
        star = " *" if name == r.get("primary_metric") else ""
        lines.append(f"  {name:<22}{_fmt(m)}{star}")
    h = r.get("helpfulness", {})
    if "value" in h:
        lines.append(f"  helpfulness (PROXY)   {_fmt(h)}  -- {h['method']}")
    elif "method" in h and h["method"].startswith("judge"):
        for k, v in h.items():
            if isinstance(v, dict) and "mean" in v:
                lines.append(f"  judge {k:<16}{v['mean']}  (n={v['n']}, failed={v['n_failed']})")
    if "adherence" in r:
        a = r["adherence"]
        lines.append(f"  on-domain answers     {a.get('on_domain_share', float('nan')):.3f}")
        if a.get("ood_handled_share") is not None:
            lines.append(f"  out-of-domain handled {a['ood_handled_share']:.3f}  (policy: decline)")
    if "general_ability" in r:
        lines.append(f"  general ability       {r['general_ability']}")
    lines.append(f"  {r['seconds']:.1f} s generation/scoring, {r['seconds_per_item']:.3f} s per item (95% bootstrap intervals; * primary)")
    if r.get("path"):
        lines.append(f"  written to {r['path']}")
    return "\n".join(lines)
