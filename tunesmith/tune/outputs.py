"""What a search leaves behind, written from its Optuna journal (Optuna stores the trials; this
module only reads them back): best.yaml (the base config with the best parameters, ready for
`tunesmith train`), trials.csv and trials.md (one row per trial), importances.json (Optuna's
PED-ANOVA parameter importances, numpy only), summary.json, and tune.html: the optimisation
history and the metric against each parameter as inline SVG (no scripts, no external files,
so it opens under the study report's strict Content-Security-Policy)."""

from __future__ import annotations

import csv
import io
import math
from html import escape
from pathlib import Path

from tunesmith import configlib
from tunesmith.atomic import write_json_atomic, write_text_atomic
from tunesmith.config import TrainConfig
from tunesmith.study.plots import AXIS, FONT, GRID, PALETTE, nice_ticks

STATE_COLOR = {"COMPLETE": PALETTE[0], "PRUNED": "#bab0ac", "FAIL": PALETTE[8]}


def trial_rows(study, params: list[str]) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name in ("WAITING", "RUNNING"):
            continue
        rows.append({"trial": t.number, "state": "interrupted" if t.user_attrs.get("interrupted") else t.state.name.lower(),
                     "value": t.value if t.value is not None else (max(t.intermediate_values.items())[1] if t.intermediate_values else None),
                     "steps_reported": max(t.intermediate_values) if t.intermediate_values else None,
                     "seconds": t.user_attrs.get("seconds"), "run": t.user_attrs.get("run"),
                     **{p: t.params.get(p) for p in params}, "note": _note(t), "error": t.user_attrs.get("error")})
    return rows


def _note(t) -> str:
    a = t.user_attrs
    if a.get("interrupted"):
        return "killed mid-run; continued by a later trial"
    if a.get("redo_of") is not None:
        return f"continues trial {a['redo_of']}'s run"
    return f"same parameters as trial {a['duplicate_of']}: result reused" if a.get("duplicate_of") is not None else ""


def best_config(base: TrainConfig, best_params: dict) -> TrainConfig:
    """The user's config (their own data paths) with the best parameters: what `tunesmith train` runs."""
    data = configlib.apply_overrides(configlib.to_dict(base), TrainConfig, [("name", f"{base.name}-best"), *best_params.items()])
    return configlib.from_dict(TrainConfig, data, source="best.yaml")


def importances(study) -> dict[str, float]:
    """Parameter importances (PED-ANOVA, Optuna's default evaluator); {} with too few trials."""
    import optuna

    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(done) < 3 or len({t.value for t in done}) < 2:
        return {}
    try:
        return {k: round(float(v), 4) for k, v in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def markdown_table(rows: list[dict], cols: list[str]) -> str:
    cell = lambda v: _fmt(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict], cols: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _svg_scatter(title: str, pts: list[tuple], *, x_label: str, y_label: str, log_x: bool = False,
                 categories: list | None = None, line: list[tuple] | None = None, width: int = 520, height: int = 300) -> str:
    """pts: (x, y, state); categorical x when `categories` is given; `line`: (x, y) best-so-far."""
    left, right, top, bottom = 64, 16, 34, 46
    X0, X1, Y0, Y1 = left, width - right, height - bottom, top
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(title)}" {FONT} font-size="12">',
           f'<text x="8" y="20" font-size="14" font-weight="600">{escape(title)}</text>']
    ys = [p[1] for p in pts if p[1] is not None and math.isfinite(p[1])]
    if not ys:
        return "\n".join(out + [f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#888">no finished trial</text></svg>'])
    pos = (lambda v: float(categories.index(v))) if categories else ((lambda v: math.log10(v)) if log_x else float)
    xs = [pos(p[0]) for p in pts] + ([pos(x) for x, _ in line] if line else [])
    xlo, xhi = (min(xs), max(xs)) if not categories else (-0.5, len(categories) - 0.5)
    if xhi - xlo < 1e-12:
        xlo, xhi = xlo - 1, xhi + 1
    if not categories:  # a margin, so that the extreme points are not on the axes
        pad = 0.05 * (xhi - xlo)
        xlo, xhi = xlo - pad, xhi + pad
    ylo, yhi = min(ys), max(ys)
    if yhi - ylo < 1e-12:
        ylo, yhi = ylo - 0.5, yhi + 0.5
    ticks = nice_ticks(ylo, yhi)
    ylo, yhi = min(ylo, ticks[0]), max(yhi, ticks[-1])
    sx = lambda x: X0 + (x - xlo) / (xhi - xlo) * (X1 - X0)  # noqa: E731
    sy = lambda y: Y0 - (y - ylo) / (yhi - ylo) * (Y0 - Y1)  # noqa: E731
    for t in ticks:
        out.append(f'<line x1="{X0}" x2="{X1}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="{GRID}"/>'
                   f'<text x="{X0 - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" fill="{AXIS}">{escape(_fmt(float(t)))}</text>')
    decades = list(range(math.ceil(xlo), math.floor(xhi) + 1)) if log_x else []
    xt = [(i, str(c)) for i, c in enumerate(categories)] if categories else \
        [(v, f"{10 ** v:g}") for v in decades] if len(decades) >= 2 else \
        [(v, _fmt(10 ** v if log_x else v)) for v in nice_ticks(xlo, xhi, 4) if xlo <= v <= xhi]
    for v, label in xt:
        out.append(f'<text x="{sx(v):.1f}" y="{Y0 + 16}" text-anchor="middle" fill="{AXIS}">{escape(label[:14])}</text>')
    out.append(f'<line x1="{X0}" x2="{X1}" y1="{Y0}" y2="{Y0}" stroke="{AXIS}"/><line x1="{X0}" x2="{X0}" y1="{Y0}" y2="{Y1}" stroke="{AXIS}"/>')
    out.append(f'<text x="{(X0 + X1) / 2:.1f}" y="{height - 8}" text-anchor="middle" fill="{AXIS}">{escape(x_label)}</text>')
    out.append(f'<text x="12" y="{(Y0 + Y1) / 2:.1f}" text-anchor="middle" fill="{AXIS}" transform="rotate(-90 12 {(Y0 + Y1) / 2:.1f})">{escape(y_label)}</text>')
    if line:
        path = " ".join(f"{sx(pos(x)):.1f},{sy(y):.1f}" for x, y in line)
        out.append(f'<polyline points="{path}" fill="none" stroke="{PALETTE[1]}" stroke-width="2"/>')
    for x, y, state in pts:
        if y is not None and math.isfinite(y):
            out.append(f'<circle cx="{sx(pos(x)):.1f}" cy="{sy(y):.1f}" r="4" fill="{STATE_COLOR.get(state, PALETTE[0])}" fill-opacity="0.85">'
                       f'<title>{escape(_fmt(x))}: {escape(_fmt(y))} ({state.lower()})</title></circle>')
    return "\n".join(out + ["</svg>"])


def _history(study, metric: str, direction: str) -> str:
    pts, line, best = [], [], None
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "COMPLETE":
            best = t.value if best is None else (min(best, t.value) if direction == "minimize" else max(best, t.value))
            line.append((t.number, best))
            pts.append((t.number, t.value, "COMPLETE"))
        elif t.state.name == "PRUNED" and t.intermediate_values:
            pts.append((t.number, t.intermediate_values[max(t.intermediate_values)], "PRUNED"))
    return _svg_scatter("Optimisation history (orange: best so far; grey: pruned, at their last report)", pts,
                        x_label="trial", y_label=metric, line=line, width=760)


def _param_plot(study, key: str, kind: str, rng, metric: str) -> str:
    pts = [(t.params[key], t.value if t.state.name == "COMPLETE" else t.intermediate_values[max(t.intermediate_values)], t.state.name)
           for t in study.get_trials(deepcopy=False) if key in t.params and
           (t.state.name == "COMPLETE" or (t.state.name == "PRUNED" and t.intermediate_values))]
    cats = [str(c) for c in rng.choices] if kind == "choice" else None
    if cats:
        pts = [(str(x), y, s) for x, y, s in pts]
    return _svg_scatter(f"{metric} against {key}", pts, x_label=key + (" (log scale)" if rng.log else ""), y_label=metric,
                        log_x=bool(rng.log), categories=cats)


def render_html(summary: dict, study, resolved: dict, rows: list[dict], cols: list[str]) -> str:
    h = escape
    table = "<table><tr>" + "".join(f"<th>{h(c)}</th>" for c in cols) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{h(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows) + "</table>"
    imp = summary.get("importances") or {}
    imp_html = "<table><tr><th>parameter</th><th>importance</th></tr>" + "".join(
        f"<tr><td>{h(k)}</td><td>{v:.3f}</td></tr>" for k, v in imp.items()) + "</table>" if imp else "<p>Too few completed trials to estimate importances.</p>"
    best = summary.get("best") or {}
    figs = [_history(study, summary["metric"], summary["direction"])]
    figs += [_param_plot(study, k, kind, rng, summary["metric"]) for k, (kind, rng) in resolved.items()]
    style = ("body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ddd;padding:3px 7px;text-align:left}.figs{display:flex;flex-wrap:wrap;gap:12px}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><meta http-equiv=\"Content-Security-Policy\" "
            f"content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\"><title>tune {h(summary['name'])}</title>"
            f"<style>{style}</style></head><body>\n<h1>Hyperparameter search: {h(summary['name'])}</h1>\n"
            f"<p>Regimen {h(summary['regimen'])}; {summary['finished']} of {summary['trials']} trials finished "
            f"({summary['states'].get('complete', 0)} completed, {summary['states'].get('pruned', 0)} pruned, {summary['states'].get('fail', 0)} failed); "
            f"{h(summary['direction'])} {h(summary['metric'])} on the validation split; sampler {h(summary['sampler'])}, pruner {h(summary['pruner'])}; "
            f"{summary['seconds']:.0f} s of trials.</p>\n"
            f"<h2>Best</h2><p>Trial {h(_fmt(best.get('trial')))}: {h(summary['metric'])} = {h(_fmt(best.get('value')))}; "
            f"parameters {h(', '.join(f'{k}={_fmt(v)}' for k, v in (best.get('params') or {}).items()))}. "
            f"Train it with <code>tunesmith train {h(summary['best_yaml'])}</code>.</p>\n"
            f"<h2>History and parameters</h2><div class=\"figs\">{''.join(figs)}</div>\n<h2>Importances</h2>{imp_html}\n"
            f"<h2>Trials</h2>{table}\n</body></html>\n")


def write_outputs(s, study) -> dict:
    """Write every output file of search `s` into its directory; return summary.json's content."""
    from tunesmith.tune.search import _best, finished
    from tunesmith.tune.space import resolve_space

    resolved = resolve_space(s.cfg, s.space)
    params = list(resolved)
    rows = trial_rows(study, params)
    cols = ["trial", "state", "value", *params, "seconds", "run", "note", "error"]
    best = _best(study)
    states = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    summary = {"name": s.cfg.name, "regimen": s.cfg.regimen, "metric": s.metric, "direction": s.direction,
               "trials": s.trials, "finished": len(finished(study)), "states": states,
               "sampler": s.space.sampler, "pruner": s.space.pruner,
               "seconds": round(sum(r["seconds"] or 0.0 for r in rows), 1), "validation": s.validation,
               "best": {"trial": best.number, "value": best.value, "params": best.params, "run": best.user_attrs.get("run")} if best else None,
               "best_yaml": str(s.root / "best.yaml"), "importances": importances(study)}
    if best:
        write_text_atomic(s.root / "best.yaml", configlib.dump_yaml(best_config(s.cfg, best.params)))
    write_text_atomic(s.root / "trials.csv", _csv(rows, cols))
    write_text_atomic(s.root / "trials.md", markdown_table(rows, cols))
    write_json_atomic(s.root / "importances.json", summary["importances"])
    write_text_atomic(s.root / "tune.html", render_html(summary, study, resolved, rows, cols))
    write_json_atomic(s.root / "summary.json", summary)
    return summary


def tune_paths(root: Path) -> dict[str, str]:
    return {k: str(Path(root) / f) for k, f in (("best", "best.yaml"), ("trials", "trials.csv"), ("table", "trials.md"),
                                                   ("importances", "importances.json"), ("html", "tune.html"), ("summary", "summary.json"))}
