"""Render a study's ``results.json`` as ``report.md`` and a self-contained ``report.html``.

The report says which arm wins (see `tunesmith.study.verdict`) and shows the evidence: the results
table with 95% intervals, costs, plots (inline SVG from `tunesmith.study.plots`), warnings, example
answers side by side, the config differences and the environment. Tables are built once as plain
data and rendered twice (Markdown, HTML). The HTML opens offline: inline CSS, no scripts, no
external fonts or images, and every text taken from the results is escaped.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from html import escape
from pathlib import Path

from tunesmith.study import plots
from tunesmith.study.significance import CORRECTION, SHORT, TESTS, criterion_test, holm_adjust, p_digits, pair_p
from tunesmith.study.tuning import tuning_table
from tunesmith.study.verdict import (
    completed_arms, criterion_label, fmt_ci, fmt_count, fmt_duration, fmt_num, higher_is_better, is_baseline,
    main_criterion, majority_reference, measured_proxies, metric, verdict, verdict_paragraph,
)

MAX_EXAMPLES = 12
MAX_ANSWER_CHARS = 400
DASH = "\u2014"

# A table is {"caption", "header": [str], "groups": [(label, span)] | None, "rows": [[cell]],
# "row_classes": [str], "notes": [str]}; a cell is a str or (str, css class). Class "best" is bold.


# --------------------------------------------------------------------------- formatting

def _fmt_p(p: float | None) -> str:
    return DASH if p is None else p_digits(p)


def _fmt_diff(row: dict) -> str:
    if row.get("diff") is None:
        return DASH
    ci = f" [{row['low']:+.2f}, {row['high']:+.2f}]" if row.get("low") is not None and row.get("high") is not None else ""
    return f"{row['diff']:+.2f}{ci}"


def _fmt_mib(mib: float | None) -> str:
    return DASH if mib is None else f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def _share(part: float, total: float) -> str:
    return "< 0.01%" if part / total < 1e-4 else f"{part / total:.2%}"


def _fmt_value(v: object) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _clip(s: object, n: int = MAX_ANSWER_CHARS) -> str:
    s = "" if s is None else str(s)
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def _label(results: dict, name: str | None) -> str:
    name = name or "score"
    c = results.get("criteria", {}).get(name) or {}
    return (c.get("label") or name.replace("_", " ").capitalize()) + (" (proxy)" if c.get("proxy") else "")


# --------------------------------------------------------------------------- tables as data

def _best_values(results: dict) -> dict[str, float]:
    best = {}
    for name in results.get("criteria", {}):
        vals = [metric(a, name)["value"] for a in completed_arms(results) if metric(a, name)]
        if vals:
            best[name] = max(vals) if higher_is_better(results, name) else min(vals)
    return best


def _baseline_tests(results: dict, main: str | None) -> dict[str, tuple[float | None, float | None]]:
    """{arm id: (raw p, Holm-Bonferroni adjusted p)} of every arm against its baseline on the main
    criterion, with the criterion's test; the column's comparisons are one family."""
    if not main:
        return {}
    test = criterion_test(results, main)
    ids, ps = [], []
    for a in completed_arms(results):
        row = (a.get("vs_baseline") or {}).get(main)
        if row and not is_baseline(results, a):
            ids.append(a["id"])
            ps.append(pair_p(row, test))
    return dict(zip(ids, zip(ps, holm_adjust(ps))))


def _reference_row(results: dict, crits: list[str], tested: bool) -> list | None:
    """The majority-class reference as a row: the score of always answering the most frequent label."""
    ref = majority_reference(results)
    if not ref or ref.get("criterion") not in crits:
        return None
    name = f"always \"{ref['label']}\" (most frequent label of the {ref['source']})"
    return ([name, "reference"] + [fmt_num(ref["value"]) if c == ref["criterion"] else DASH for c in crits]
            + [DASH] + ([DASH, DASH] if tested else []))


def _stat_notes(results: dict, crits: list[str], main: str | None, base: str | None, tested: bool) -> list[str]:
    """Which test each criterion's comparisons use, and the correction for multiple comparisons."""
    by_test: dict[str, list[str]] = {}
    for c in crits:
        by_test.setdefault(criterion_test(results, c), []).append(criterion_label(results, c))
    tests = "; ".join(f"{', '.join(labels)}: {TESTS[t][0]}" for t, labels in by_test.items())
    out = [f"Significance tests, one per criterion ({tests}). p-values are shown with as many digits as it takes "
           f"not to round them onto the 0.05 threshold; every verdict is read from {CORRECTION}-adjusted p-values "
           "over the comparisons it makes on that criterion."]
    if main and tested:
        out.append(f"p: the {SHORT[criterion_test(results, main)]} p of each arm against the baseline ({base}) on "
                   f"{criterion_label(results, main)}; {CORRECTION} p: adjusted over the comparisons in that column.")
    return out


def results_table(results: dict) -> dict:
    """Arms as rows; each criterion as 'value [low, high]'; diff, raw and adjusted p vs the baseline on correctness."""
    crits = list(results.get("criteria", {}))
    main, base = main_criterion(results), results.get("baseline")
    tests = _baseline_tests(results, main)
    tested = any(p is not None for p, _ in tests.values())
    best = _best_values(results)
    by_model = len({a.get("model") for a in results.get("arms", [])}) > 1  # several models: the model is a column
    header = ["Arm"] + ["Model"] * by_model + ["Kind"] + [_label(results, c) for c in crits] + ["\u0394 " + _label(results, main).lower()]
    header += ["p", f"{CORRECTION} p"] if tested else []
    rows, classes = [], []
    for arm in results.get("arms", []):
        status = arm.get("status", "completed")
        kind = arm.get("kind", "") + ("" if status == "completed" else f" ({status})")
        row = [arm["id"]] + [str(arm.get("model"))] * by_model + [kind]
        for c in crits:
            m = metric(arm, c) if status == "completed" else None
            row.append((fmt_ci(m), "best") if m and m["value"] == best.get(c) else fmt_ci(m) if m else DASH)
        vs = (arm.get("vs_baseline") or {}).get(main) or {}
        p, p_adj = tests.get(arm["id"], (None, None))
        if is_baseline(results, arm):
            row += ["baseline"] + ([DASH, DASH] if tested else [])
        else:
            row += [_fmt_diff(vs) if vs else DASH] + ([_fmt_p(p), _fmt_p(p_adj)] if tested else [])
        rows.append(row)
        classes.append(" ".join(x for x in (status if status != "completed" else "",
                                            "baseline" if is_baseline(results, arm) else "") if x))
    ref = _reference_row(results, crits, tested)
    if ref and by_model:
        ref.insert(1, DASH)
    if ref:
        rows.append(ref)
        classes.append("reference")
    notes = ["value [low, high]: the score with its 95% interval. Bold: the best value in the column. "
             f"\u0394: paired difference from the baseline ({base}) with its interval. "
             f"{DASH}: not measured for that arm (a classification head writes no free text) or the arm did not complete."]
    notes += _stat_notes(results, crits, main, base, tested)
    if ref:
        r = majority_reference(results)
        notes.append(f"Reference row: always answering \"{r['label']}\", the most frequent label of the {r['source']}"
                     + ("" if r["source"] == "training data" else " (the study has no labelled training data to take it from)")
                     + "; an arm that does not score above it does no better than that constant answer.")
    notes += [f"{(c.get('label') or n)} is a proxy ({c.get('metric')}): similarity to the reference answer, "
              "not a judgement of helpfulness." for n, c in measured_proxies(results).items()]
    notes += _code_notes(results)
    groups = [("", 2 + by_model + len(crits)), (f"vs baseline ({base})" if base else "vs baseline", 3 if tested else 1)]
    return {"caption": "Results per arm (95% intervals)", "header": header, "groups": groups, "rows": rows,
            "row_classes": classes, "notes": notes}


def _code_notes(results: dict) -> list[str]:
    """On a code task, whether the tests that grade an answer were shown in its prompt."""
    c = (results.get("criteria") or {}).get("correctness") or {}
    if c.get("task") != "code":
        return []
    shown = c.get("tests_shown")
    if shown is None:
        # results.json of a study: the study's setting; unset keeps the MBPP default (tests shown)
        shown = (((results.get("study_config") or {}).get("eval") or {}).get("show_tests"))
        shown = True if shown is None else shown
    return [f"Code: tests shown in the prompt: {'yes' if shown else 'no'}"
            + (" (MBPP convention: the prompt lists the asserts that grade the answer)." if shown
               else " (the asserts only grade the answer).")]


def _flat_metrics(d: dict, prefix: str = "") -> list[tuple[str, str, str]]:
    """(name, formatted value, n) for every metric in a nested dict of {"value", ...} dicts or numbers."""
    out = []
    for key, m in d.items():
        name = prefix + str(key).replace("_", " ")
        if isinstance(m, dict) and m.get("value") is not None:
            out.append((name, fmt_ci(m), str(m.get("n", DASH))))
        elif isinstance(m, dict):
            out += _flat_metrics(m, name + " / ")
        elif isinstance(m, (int, float)) and not isinstance(m, bool):
            out.append((name, fmt_num(m), DASH))
    return out


def extra_table(results: dict) -> dict | None:
    """Secondary metrics (classification, preference accuracy, retrieval recall) where arms have them."""
    rows = [[arm["id"], name, value, n] for arm in completed_arms(results)
            for name, value, n in _flat_metrics(arm.get("extra") or {})]
    return {"caption": "Other metrics", "header": ["Arm", "Metric", "Value [95% interval]", "n"], "rows": rows,
            "notes": []} if rows else None


def cost_table(results: dict) -> dict:
    rows = []
    for arm in results.get("arms", []):
        c = arm.get("cost") or {}
        tp, total = c.get("trainable_params"), c.get("total_params")
        params = DASH if not tp else fmt_count(tp) + (f" ({_share(tp, total)})" if total else "")
        lat = c.get("eval_seconds_per_item")
        rows.append([arm["id"], fmt_duration(c["train_seconds"]) if c.get("train_seconds") else DASH,
                     fmt_count(c["trained_tokens"]) if c.get("trained_tokens") else DASH, params,
                     _fmt_mib(c.get("peak_memory_mib")), DASH if lat is None else f"{lat:.2f} s"])
    return {"caption": "Cost per arm", "rows": rows,
            "header": ["Arm", "Training time", "Trained tokens", "Trainable params (share)", "Peak memory",
                       "Eval latency / answer"],
            "notes": ["Prompting arms train nothing; their cost is the longer prompt at answer time."]}


def curves_table(results: dict) -> dict | None:
    rows = []
    for arm in results.get("arms", []):
        cur, of = arm.get("curves") or {}, arm.get("overfitting") or {}
        if not cur.get("train") and not cur.get("val"):
            continue
        val = [p for p in cur.get("val") or [] if isinstance(p[1], (int, float))]
        train = [p for p in cur.get("train") or [] if isinstance(p[1], (int, float))]
        best = min(val, key=lambda p: p[1]) if val else None
        flag = {True: "yes", False: "no"}.get(of.get("overfitting"), "unknown")
        rows.append([arm["id"], fmt_num(train[-1][1]) if train else DASH,
                     f"{fmt_num(best[1])} (step {best[0]})" if best else DASH, (flag, "warn" if flag == "yes" else ""),
                     of.get("evidence") or ""])
    return {"caption": "Training curves", "rows": rows, "notes": [],
            "header": ["Arm", "Final training loss", "Best validation loss", "Overfitting", "Evidence"]} if rows else None


def study_notes(results: dict) -> list[str]:
    """What the study derived from its data and what it left out: the validation split, the
    out-of-domain policy and how each kind of arm got it, and the study's own notes."""
    out = []
    for name, d in (results.get("data_preparation") or {}).items():
        if d.get("validation_source"):
            out.append(f"Validation for arms trained on {name}: {d['validation_source']} ({d['validation_records']} records).")
        elif d.get("validation_records"):
            out.append(f"Validation split carved from {name}: {d['validation_records']} of {d['records']} records "
                       f"({d['val_fraction']:.0%}, seed {d['split_seed']}); training arms report validation loss on it and keep "
                       "their best checkpoint by it; prompting arms never see it.")
    pol = results.get("policy") or {}
    if pol.get("ood") == "decline" and (pol.get("told_prompting_arms") or pol.get("examples")):
        n = max([d.get("policy_examples", 0) for d in (results.get("data_preparation") or {}).values()] or [0])
        out.append(f"Out-of-domain policy: decline with \"{pol.get('decline_message')}\". Prompting arms are told so in their "
                   f"system prompt; training arms learn it from {n} out-of-domain examples in their training data (DPO: as "
                   "pairs preferring the decline).")
    from tunesmith.study.tasks import criteria_notes

    return out + criteria_notes(results) + list(results.get("notes") or [])


def config_table(results: dict) -> dict | None:
    diff = {k: v for k, v in (results.get("config_diff") or {}).items() if isinstance(v, dict)}
    order = [a["id"] for a in results.get("arms", []) if a["id"] in diff] + [k for k in diff if k not in
                                                                            {a["id"] for a in results.get("arms", [])}]
    keys: list[str] = []
    for arm in order:
        keys += [k for k in diff[arm] if k not in keys]
    if not keys:
        return None
    rows = [[k] + [_fmt_value(diff[a][k]) if k in diff[a] else DASH for a in order] for k in keys]
    return {"caption": "Settings that differ between arms", "header": ["Setting"] + order, "rows": rows, "notes": []}


def env_table(results: dict) -> dict:
    env = results.get("env") or {}
    git = env.get("git") or {}
    rows = [["Study", str(results.get("study", ""))], ["Created", str(results.get("created", ""))],
            ["Wall time (all arms, all invocations)", fmt_duration(results.get("wall_seconds"))],
            ["This invocation", fmt_duration(results.get("invocation_seconds", results.get("wall_seconds")))], ["Baseline", str(results.get("baseline"))],
            ["Python", str(env.get("python", DASH))], ["Platform", str(env.get("platform", DASH))]]
    rows += [[f"package {k}", "not installed" if v is None else str(v)] for k, v in (env.get("packages") or {}).items()]
    if git:
        rows.append(["git commit", f"{git.get('commit', DASH)}{' (uncommitted changes)' if git.get('dirty') else ''}"])
    rows += [[f"hardware {k.replace('_', ' ')}", DASH if v is None else str(v)] for k, v in (env.get("hardware") or {}).items()]
    rows += [[f"policy {k}", _fmt_value(v)] for k, v in (results.get("policy") or {}).items()]
    rows.append(["results schema", str(results.get("schema_version"))])
    return {"caption": "Environment", "header": ["Setting", "Value"], "rows": rows, "notes": []}


def top_examples(results: dict) -> list[dict]:
    """Examples with the most disagreement between arms first (stable for ties)."""
    ex = list(results.get("examples") or [])
    return sorted(ex, key=lambda e: -(e.get("disagreement") or 0))[:MAX_EXAMPLES]


def answer_arms(results: dict, examples: list[dict]) -> list[str]:
    ids = [a["id"] for a in results.get("arms", [])]
    seen = {k for e in examples for k in (e.get("answers") or {})}
    return [i for i in ids if i in seen] + sorted(seen - set(ids))


# --------------------------------------------------------------------------- markdown

def md_escape(s: object) -> str:
    """Text safe inside a Markdown table cell: no raw HTML, no pipes, no line breaks, no emphasis."""
    s = "" if s is None else str(s)
    s = re.sub(r"&(?=#?\w+;)", "&amp;", s.replace("\\", "\\\\"))
    s = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", s)  # what could open an HTML tag
    for ch in "|*`":
        s = s.replace(ch, "\\" + ch)
    s = re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", s)  # intraword _ never makes emphasis
    s = s.replace("](", "]\\(").replace("][", "]\\[")  # no links
    return " ".join(s.split())


def _md_cell(cell: object) -> str:
    text, cls = cell if isinstance(cell, tuple) else (cell, "")
    return f"**{md_escape(text)}**" if cls == "best" and text else md_escape(text)


def md_table(t: dict) -> str:
    lines = [f"**{md_escape(t['caption'])}**", "", "| " + " | ".join(md_escape(h) for h in t["header"]) + " |",
             "|" + "|".join("---" for _ in t["header"]) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t["rows"]]
    for note in t.get("notes", []):
        lines += ["", f"_{md_escape(note)}_"]
    return "\n".join(lines).rstrip() + "\n"


def _graded(example: dict, arm: str) -> str:
    """'[score] ' for an answer with a graded correctness (chrF, similarity), else ''."""
    v = (example.get("scores") or {}).get(arm)
    return "" if v is None else f"[{fmt_num(v)}] "


def _md_examples(results: dict) -> str:
    ex = top_examples(results)
    if not ex:
        return "No example answers were recorded.\n"
    arms = answer_arms(results, ex)
    lines = ["| Question | Reference | " + " | ".join(md_escape(a) for a in arms) + " |",
             "|" + "|".join("---" for _ in range(len(arms) + 2)) + "|"]
    for e in ex:
        cells = []
        for a in arms:
            ok = (e.get("correct") or {}).get(a)
            mark = "" if ok is None else "\u2713 " if ok else "\u2717 "
            mark = _graded(e, a) or mark
            cells.append(mark + md_escape(_clip((e.get("answers") or {}).get(a, DASH))))
        lines.append(f"| {md_escape(_clip(e.get('question')))} | {md_escape(_clip(e.get('reference')))} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n_\u2713 correct, \u2717 incorrect; the items where the arms disagree most come first._\n"


def _deploy_md(results: dict) -> list[str]:
    w = results.get("winner")
    if not w:
        return []
    return [f"**Use it.** {md_escape(w['text'])} Export it with `{w['export']}` or serve it (OpenAI-compatible) "
            f"with `{w['serve']}`.", ""]


def _deploy_html(results: dict) -> str:
    w = results.get("winner")
    if not w:
        return ""
    return (f'<p><b>Use it.</b> {_h(w["text"])} Export it with <code>{_h(w["export"])}</code> or serve it '
            f'(OpenAI-compatible) with <code>{_h(w["serve"])}</code>.</p>\n')


def render_markdown(results: dict, v: dict) -> str:
    """The whole report as Markdown (plots are only in the HTML report)."""
    out = [f"# Study report: {md_escape(results.get('study', ''))}", "",
           f"_{len(results.get('arms', []))} arms, created {md_escape(results.get('created', ''))}, "
           f"wall time {fmt_duration(results.get('wall_seconds'))} (training and evaluation of every arm)._", "",
           f"**Verdict.** {md_escape(verdict_paragraph(v))}", "", *_deploy_md(results), "## Results", "", md_table(results_table(results))]
    extra = extra_table(results)
    out += [md_table(extra)] if extra else []
    out += ["## Cost", "", md_table(cost_table(results))]
    out += ["## Tuning", "", md_table(tuning_table(results))] if tuning_table(results) else []
    out += ["## Plots", "",
            "Bar charts with 95% intervals per criterion, the training and validation loss curves and "
            "correctness against training cost are in [report.html](report.html).", ""]
    curves = curves_table(results)
    out += [md_table(curves)] if curves else []
    warns = v.get("warnings", [])
    out += [f"## Warnings ({len(warns)})", ""] + ([f"- {md_escape(w)}" for w in warns] or ["None."]) + [""]
    notes = study_notes(results)
    out += ["## Study notes", ""] + [f"- {md_escape(n)}" for n in notes] + [""] if notes else []
    out += ["## Examples", "", _md_examples(results)]
    cfg = config_table(results)
    out += ["## Config differences", "", md_table(cfg) if cfg else "The arms share every setting.\n"]
    out += ["## Environment", "", md_table(env_table(results))]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- html

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d1d1f;background:#f3f4f6;margin:0}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:26px;margin:0 0 2px}h2{font-size:20px;margin:34px 0 10px;padding-bottom:4px;border-bottom:1px solid #e3e3e3}
.meta{color:#666;margin:0 0 14px}nav{font-size:14px;margin:0 0 16px}nav a{margin-right:14px;color:#2f5f8f}
.verdict{font-size:16px;background:#eef5fc;border-left:4px solid #4e79a7;padding:12px 16px;margin:0}
.scroll{overflow-x:auto;margin:8px 0 4px}
table{border-collapse:collapse;font-size:13.5px}
caption{caption-side:top;text-align:left;font-weight:600;padding:2px 0 6px}
th,td{border:1px solid #dcdfe4;padding:5px 9px;text-align:left;vertical-align:top}
thead th{background:#f2f4f7}tbody tr:nth-child(even){background:#fafbfc}
table:not(.examples) th[scope=row]{white-space:nowrap}table.data td{white-space:nowrap;font-variant-numeric:tabular-nums}
td.best{font-weight:700;background:#e3f2e6}td.warn{color:#b3261e;font-weight:700}
tr.failed,tr.skipped{color:#8a8a8a}tr.baseline th,tr.reference th,tr.reference td{font-style:italic}
.note{color:#555;font-size:13px;margin:2px 0 12px}
.plots{display:flex;flex-wrap:wrap;gap:4px 24px}
figure{margin:12px 0;display:table}figure svg{display:block;max-width:100%;height:auto;border:1px solid #ececec;border-radius:4px}
figcaption{display:table-caption;caption-side:bottom;color:#555;font-size:13px;padding-top:4px}
ul.warnings{padding:0}ul.warnings li{list-style:none;background:#fff7e0;border-left:4px solid #e0a800;padding:6px 12px;margin:6px 0}
table.examples{width:100%}table.examples th[scope=row]{min-width:150px}td.correct{background:#e9f6ec}td.incorrect{background:#fdeceb}
.mark{font-weight:700;margin-right:4px}td.correct .mark{color:#1e7b34}td.incorrect .mark{color:#b3261e}
details{margin:4px 0}summary{cursor:pointer}pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:12.5px}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _h(s: object) -> str:
    return escape("" if s is None else str(s), quote=True)


def _cls(c: str) -> str:
    return f' class="{_h(c)}"' if c else ""


def html_table(t: dict, cls: str = "data") -> str:
    """A semantic table: caption, thead (optionally a group row), tbody with row headers, notes after."""
    out = [f'<div class="scroll"><table class="{cls}">', f"<caption>{_h(t['caption'])}</caption>", "<thead>"]
    if t.get("groups"):
        out.append("<tr>" + "".join(f'<th colspan="{n}" scope="colgroup">{_h(g)}</th>' for g, n in t["groups"]) + "</tr>")
    out.append("<tr>" + "".join(f'<th scope="col">{_h(h)}</th>' for h in t["header"]) + "</tr></thead><tbody>")
    classes = t.get("row_classes") or [""] * len(t["rows"])
    for row, rc in zip(t["rows"], classes):
        cells = []
        for i, cell in enumerate(row):
            text, c = cell if isinstance(cell, tuple) else (cell, "")
            tag, attr = ("th", ' scope="row"') if i == 0 else ("td", "")
            cells.append(f"<{tag}{attr}{_cls(c)}>{_h(text)}</{tag}>")
        out.append(f"<tr{_cls(rc)}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    out += [f'<p class="note">{_h(n)}</p>' for n in t.get("notes", [])]
    return "\n".join(out)


def _figure(svg: str, caption: str) -> str:
    return f"<figure>\n{svg}\n<figcaption>{_h(caption)}</figcaption>\n</figure>"


def _bar_figures(results: dict, colors: dict[str, str]) -> list[str]:
    best, figs = _best_values(results), []
    for name, c in results.get("criteria", {}).items():
        arms = [(a, metric(a, name)) for a in completed_arms(results) if metric(a, name)]
        if not arms:
            continue
        bars = [{"label": a["id"], "value": m["value"], "low": m.get("low"), "high": m.get("high"),
                 "color": colors[a["id"]], "best": m["value"] == best.get(name)} for a, m in arms]
        label = _label(results, name)
        direction = "higher" if higher_is_better(results, name) else "lower"
        svg = plots.bar_chart(label, bars, axis_label=f"{c.get('metric', name)} ({direction} is better)")
        figs.append(_figure(svg, f"{label}: score per arm; error bars are 95% intervals and \u2605 marks the best value."))
    return figs


def plot_figures(results: dict) -> list[str]:
    """Every chart as a <figure>: a bar chart per criterion, the loss curves, correctness vs cost."""
    arms = results.get("arms", [])
    colors = plots.arm_colors([a["id"] for a in arms])
    figs = _bar_figures(results, colors)
    series = [{"label": a["id"], "color": colors[a["id"]], **(a.get("curves") or {})} for a in arms
              if (a.get("curves") or {}).get("train") or (a.get("curves") or {}).get("val")]
    if series:
        figs.append(_figure(plots.line_chart("Training and validation loss", series),
                            "Loss per optimizer step: solid lines are training loss, dashed lines with circles "
                            "validation loss."))
    main = main_criterion(results)
    pts = [{"label": a["id"], "x": (a.get("cost") or {}).get("train_seconds") or 0.0, "color": colors[a["id"]],
            "y": m["value"], "low": m.get("low"), "high": m.get("high")}
           for a in completed_arms(results) for m in [metric(a, main) if main else None] if m]
    if pts:
        label = _label(results, main)
        svg = plots.scatter_chart(f"{label} vs training cost", pts, x_label="training seconds", y_label=label)
        figs.append(_figure(svg, "Each arm's score against its training time (0 = prompting, no training); "
                                 "vertical bars are 95% intervals."))
    return figs


def _examples_html(results: dict) -> str:
    ex = top_examples(results)
    if not ex:
        return "<p>No example answers were recorded.</p>"
    arms = answer_arms(results, ex)
    out = ['<div class="scroll"><table class="examples">',
           "<caption>Answers side by side (most disagreement first)</caption>",
           "<thead><tr><th scope=\"col\">Question</th><th scope=\"col\">Reference</th>"
           + "".join(f'<th scope="col">{_h(a)}</th>' for a in arms) + "</tr></thead><tbody>"]
    for e in ex:
        cells = []
        for a in arms:
            ok = (e.get("correct") or {}).get(a)
            cls, mark = ("", "") if ok is None else ("correct", "\u2713") if ok else ("incorrect", "\u2717")
            title = "" if ok is None else f' title="{cls}"'
            mark_html = f'<span class="mark" aria-label="{cls}">{mark}</span>' if mark else _h(_graded(e, a))
            cells.append(f'<td class="{cls}"{title}>{mark_html}{_h(_clip((e.get("answers") or {}).get(a, DASH)))}</td>')
        out.append(f'<tr><th scope="row">{_h(_clip(e.get("question")))}</th><td>{_h(_clip(e.get("reference")))}</td>'
                   + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    out.append('<p class="note">\u2713 correct (green), \u2717 incorrect (red).</p>')
    return "\n".join(out)


def _configs_html(results: dict) -> str:
    parts = [f"<details><summary>Full resolved config: {_h(a['id'])}</summary>"
             f"<pre>{_h(json.dumps(a.get('config') or {}, indent=2, sort_keys=True, default=str))}</pre></details>"
             for a in results.get("arms", [])]
    return "\n".join(parts)


def _verdict_html(v: dict) -> str:
    """The verdict paragraph with its headline (fine-tuning vs prompting) in bold."""
    head = v.get("fine_tuning_vs_prompting", "")
    rest = verdict_paragraph({**v, "fine_tuning_vs_prompting": ""})
    return (f"<strong>{_h(head)}</strong> " if head else "") + _h(rest)


def render_html(results: dict, v: dict) -> str:
    """The whole report as one self-contained HTML page."""
    title = f"Study report: {results.get('study', '')}"
    warns = v.get("warnings", [])
    extra, curves, cfg = extra_table(results), curves_table(results), config_table(results)
    notes = study_notes(results)
    sections = [
        ("results", "Results", html_table(results_table(results)) + (html_table(extra) if extra else "")),
        ("cost", "Cost", html_table(cost_table(results))),
        *([("tuning", "Tuning", html_table(tuning_table(results)))] if tuning_table(results) else []),
        ("plots", "Plots", '<div class="plots">' + "\n".join(plot_figures(results)) + "</div>"
         + (html_table(curves, "curves") if curves else "")),
        ("warnings", f"Warnings ({len(warns)})",
         '<ul class="warnings">' + "".join(f"<li>{_h(w)}</li>" for w in warns) + "</ul>" if warns else "<p>None.</p>"),
        *([("notes", "Study notes", "<ul>" + "".join(f"<li>{_h(n)}</li>" for n in notes) + "</ul>")] if notes else []),
        ("examples", "Examples", _examples_html(results)),
        ("config", "Config differences",
         (html_table(cfg) if cfg else "<p>The arms share every setting.</p>") + _configs_html(results)),
        ("environment", "Environment", html_table(env_table(results))),
    ]
    nav = "".join(f'<a href="#{sid}">{_h(name)}</a>' for sid, name, _ in sections)
    body = "\n".join(f'<section id="{sid}">\n<h2>{_h(name)}</h2>\n{html}\n</section>' for sid, name, html in sections)
    meta = (f"{len(results.get('arms', []))} arms \u00b7 created {results.get('created', '')} \u00b7 "
            f"wall time {fmt_duration(results.get('wall_seconds'))}")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{_h(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n<header>\n<h1>{_h(title)}</h1>\n"
            f'<p class="meta">{_h(meta)}</p>\n<nav>{nav}</nav>\n</header>\n'
            f'<section id="verdict">\n<h2>Verdict</h2>\n<p class="verdict">{_verdict_html(v)}</p>\n{_deploy_html(results)}</section>\n'
            f"{body}\n</main>\n</body>\n</html>\n")


# --------------------------------------------------------------------------- files

def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(results_path: str | Path) -> dict[str, Path]:
    """Read results.json, compute the verdict, write report.md and report.html next to it.

    Returns {"markdown": path, "html": path}."""
    results_path = Path(results_path)
    results = json.loads(results_path.read_text(encoding="utf-8"))
    v = verdict(results)
    paths = {"markdown": results_path.with_name("report.md"), "html": results_path.with_name("report.html")}
    _atomic_write(paths["markdown"], render_markdown(results, v))
    _atomic_write(paths["html"], render_html(results, v))
    return paths
