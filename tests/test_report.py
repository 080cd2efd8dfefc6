"""Study report: the verdict on constructed results (winner, tie, fine-tuning vs prompting, every
warning with its count), the Markdown and HTML renderings of the sample results file, the SVG
plots, escaping of untrusted text, and write_report's files. Pure Python, well under a second."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tunesmith.study import plots
from tunesmith.study.report import md_escape, render_html, render_markdown, write_report
from tunesmith.study.verdict import verdict, verdict_paragraph

FIXTURE = Path(__file__).parent / "fixtures" / "study_results.json"
CRITERIA = {"correctness": {"label": "Correctness", "metric": "exact_match", "higher_is_better": True},
            "helpfulness": {"label": "Helpfulness", "metric": "reference_similarity", "higher_is_better": True},
            "retention": {"label": "General-ability retention", "metric": "probe_accuracy", "higher_is_better": True}}


@pytest.fixture(scope="module")
def sample() -> dict:
    return json.loads(FIXTURE.read_text())


def arm(aid: str, kind: str = "prompting", values: dict | None = None, pairs: dict | None = None, **kw) -> dict:
    """A minimal arm: values {criterion: (v, lo, hi)}, pairs {criterion: {other: (diff, p)}}."""
    a = {"id": aid, "arm": aid, "kind": kind, "status": "completed", "error": None,
         "results": {c: {"value": v, "low": lo, "high": hi, "n": 40} for c, (v, lo, hi) in (values or {}).items()},
         "pairwise": {c: {o: {"diff": d, "p_value": p} for o, (d, p) in row.items()} for c, row in (pairs or {}).items()},
         "vs_baseline": {}, "extra": {}, "curves": {"train": [], "val": []},
         "overfitting": {"overfitting": False, "evidence": "fine"},
         "cost": {"train_seconds": 0.0, "trainable_params": 0}, "data": {"train_records": 200, "test_records": 80,
                                                                        "overlap_train_test": 0}}
    for k, v in kw.items():
        a[k] = {**a[k], **v} if isinstance(a.get(k), dict) and isinstance(v, dict) else v
    return a


def study(*arms: dict, criteria: dict | None = None, baseline: str = "zero-shot") -> dict:
    return {"schema_version": 1, "study": "t", "criteria": criteria or {"correctness": CRITERIA["correctness"]},
            "baseline": baseline, "arms": list(arms), "examples": [], "config_diff": {}}


# --------------------------------------------------------------------------- verdict per criterion

def three_arms(p_second: float) -> dict:
    c = "correctness"
    return study(
        arm("zero-shot", values={c: (0.05, 0.0, 0.12)}),
        arm("cpt-sft", "training", values={c: (0.80, 0.68, 0.90)}),
        arm("lora-sft", "training", values={c: (0.93, 0.85, 0.98)},
            pairs={c: {"zero-shot": (0.88, 0.0001), "cpt-sft": (0.13, p_second)}}),
    )


def test_clear_winner_needs_significance_against_every_arm():
    v = verdict(three_arms(0.03))["criteria"]["correctness"]
    assert v["winner"] == "lora-sft" and v["tied"] == []
    # these pairs carry only a bootstrap p (results written before per-criterion tests): it is used and
    # named; Holm over the 2 comparisons: 0.0001 * 2 = 0.0002, then max(0.0002, 0.03 * 1) = 0.03
    assert v["text"] == ("lora-sft wins on correctness (0.93 [0.85, 0.98]); next best: cpt-sft, bootstrap p = 0.03, "
                         "adjusted p = 0.03 by Holm-Bonferroni over 2 comparisons.")


def test_tie_lists_the_arms_not_significantly_worse_than_the_best():
    v = verdict(three_arms(0.2))["criteria"]["correctness"]
    assert v["winner"] is None
    assert v["tied"] == ["lora-sft", "cpt-sft"]  # zero-shot is significantly worse: not tied
    assert ("lora-sft and cpt-sft are tied on correctness (no significant difference at Holm-Bonferroni-adjusted "
            "p < 0.05, a paired bootstrap" in v["text"])
    assert "remaining arm is significantly worse" in v["text"]


def test_winner_names_the_arm_to_deploy_with_its_commands():
    from tunesmith.study.verdict import winner

    clear = winner(three_arms(0.03))
    assert clear["id"] == "lora-sft" and clear["significant"] and clear["tied_with"] == []
    assert clear["export"] == "tunesmith export runs/lora-sft --format hf" and clear["serve"] == "tunesmith serve runs/lora-sft"
    tied = winner(three_arms(0.2))
    # not significant: still named (something must be deployed), flagged, with the arms it ties with
    assert tied["id"] == "lora-sft" and not tied["significant"] and tied["tied_with"] == ["cpt-sft"]
    assert "not significantly better than cpt-sft" in tied["text"]
    r = three_arms(0.03)
    r["winner"] = clear
    assert "`tunesmith export runs/lora-sft --format hf`" in render_markdown(r, verdict(r))
    assert "<code>tunesmith serve runs/lora-sft</code>" in render_html(r, verdict(r))
    assert winner(study()) is None


def test_p_value_is_read_from_either_side_with_the_sign_flipped_and_lower_is_better():
    crit = {"latency": {"label": "Latency", "metric": "seconds", "higher_is_better": False}}
    r = study(arm("fast", values={"latency": (0.1, 0.08, 0.12)}),
              arm("slow", values={"latency": (0.5, 0.4, 0.6)}, pairs={"latency": {"fast": (0.4, 0.001)}}),
              criteria=crit)
    v = verdict(r)["criteria"]["latency"]
    assert v["winner"] == "fast" and "fast wins on latency" in v["text"]
    # a significant difference in the wrong direction is not a win
    r["arms"][1]["pairwise"]["latency"]["fast"]["diff"] = -0.4
    assert verdict(r)["criteria"]["latency"]["winner"] is None


def test_failed_arms_and_unmeasured_criteria_are_left_out():
    r = three_arms(0.03)
    r["arms"].append(arm("grpo", "training", status="failed", error="boom", results={}))
    r["arms"].append(arm("head", "training", values={}))
    assert verdict(r)["criteria"]["correctness"]["winner"] == "lora-sft"
    assert verdict(study(arm("a")))["criteria"]["correctness"]["text"].startswith("No completed arm")


def test_many_tied_arms_are_counted_and_missing_p_values_are_said():
    c = "correctness"
    arms = [arm(f"a{i}/m/seed{i}", values={c: (0.5 + i / 100, 0.4, 0.7)}) for i in range(6)]
    v = verdict(study(*arms))
    assert v["criteria"][c]["tied"] == [f"a{i}/m/seed{i}" for i in range(5, -1, -1)]
    assert v["criteria"][c]["text"].startswith("all 6 arms are tied on correctness (the results hold no paired tests;")
    arms.append(arm("lora", "training", values={c: (0.9, 0.8, 1.0)}))
    assert "the results hold no paired test, so whether it is significant is unknown" in \
        verdict(study(*arms))["fine_tuning_vs_prompting"]


# --------------------------------------------------------------------------- fine-tuning vs prompting

def ft_study(diff: float, p: float) -> dict:
    c = "correctness"
    trained = arm("lora-sft", "training", values={c: (0.55 + diff, 0.5 + diff, 0.6 + diff)},
                  pairs={c: {"rag": (diff, p)}},
                  cost={"train_seconds": 210.0, "trainable_params": 4884480, "total_params": 139399488})
    return study(arm("zero-shot", values={c: (0.05, 0.0, 0.1)}), arm("rag", values={c: (0.55, 0.45, 0.65)}), trained)


def test_fine_tuning_beats_prompting_significantly_with_its_cost():
    text = verdict(ft_study(0.38, 0.0004))["fine_tuning_vs_prompting"]
    assert text.startswith("Fine-tuning pays off: the best trained arm, lora-sft, beats the best prompting arm, rag")
    # lora-sft vs zero-shot has no stored pair, so the family holds one tested comparison
    assert "(0.93 vs 0.55, +0.38, bootstrap p = 0.0004, adjusted p = 0.0004 by Holm-Bonferroni over 1 comparison)" in text
    assert "3 min 30 s of training" in text and "4.88M trainable parameters (3.5% of 139.40M)" in text


def test_fine_tuning_not_significant_and_prompting_wins():
    assert "does not significantly beat prompting" in verdict(ft_study(0.03, 0.4))["fine_tuning_vs_prompting"]
    assert verdict(ft_study(-0.2, 0.01))["fine_tuning_vs_prompting"].startswith("Prompting wins")
    no_trained = study(arm("zero-shot", values={"correctness": (0.1, 0.0, 0.2)}))
    assert "cannot be compared" in verdict(no_trained)["fine_tuning_vs_prompting"]


# --------------------------------------------------------------------------- warnings

def warned(r: dict, start: str) -> str:
    hits = [w for w in verdict(r)["warnings"] if w.startswith(start)]
    assert len(hits) == 1, verdict(r)["warnings"]
    return hits[0]


def test_clean_study_has_no_warnings():
    assert verdict(three_arms(0.03))["warnings"] == []


def test_overfitting_and_failed_arm_warnings_count_arms():
    r = three_arms(0.03)
    for a in r["arms"][1:]:
        a["overfitting"] = {"overfitting": True, "evidence": f"overfitting: {a['id']} val loss rose 20%"}
    r["arms"].append(arm("grpo", "training", status="failed", error="RuntimeError: NaN loss"))
    assert "Overfitting in 2 arms" in warned(r, "Overfitting") and "lora-sft: lora-sft val loss rose 20%" in warned(r, "Overfitting")
    assert "1 arm failed" in warned(r, "1 arm failed") and "RuntimeError: NaN loss" in warned(r, "1 arm failed")


def test_forgetting_is_a_significant_drop_or_more_than_five_points():
    ret = "retention"
    base = arm("zero-shot", values={ret: (0.47, 0.38, 0.56)})
    sig = arm("cpt-sft", "training", values={ret: (0.43, 0.35, 0.51)}, vs_baseline={ret: {"diff": -0.04, "p_value": 0.01}})
    big = arm("lora-sft", "training", values={ret: (0.40, 0.30, 0.50)}, vs_baseline={ret: {"diff": -0.07, "p_value": 0.2}})
    small = arm("dpo", "training", values={ret: (0.45, 0.36, 0.54)}, vs_baseline={ret: {"diff": -0.02, "p_value": 0.4}})
    up = arm("rag", values={ret: (0.55, 0.46, 0.64)}, vs_baseline={ret: {"diff": 0.08, "p_value": 0.01}})
    w = warned(study(base, sig, big, small, up, criteria={ret: CRITERIA[ret]}), "Forgetting")
    assert w.startswith("Forgetting in 2 arms") and "cpt-sft lost 0.04" in w and "lora-sft lost 0.07" in w
    assert "dpo" not in w and "rag" not in w


def test_models_x_seeds_compare_with_the_baseline_of_the_same_model_and_seed():
    ret = "retention"
    arms = [arm(f"zero-shot/m/seed{s}", values={ret: (0.47 + s / 10, 0.4, 0.6)}, arm="zero-shot", model="m", seed=s)
            for s in (0, 1)]
    arms.append(arm("lora-sft/m/seed1", "training", values={ret: (0.50, 0.4, 0.6)}, arm="lora-sft", model="m", seed=1))
    r = study(*arms, criteria={ret: CRITERIA[ret]})
    w = warned(r, "Forgetting in 1 arm")  # vs zero-shot/m/seed1 (0.57), not seed0 (0.47)
    assert "lora-sft/m/seed1 lost 0.07 (0.57 -> 0.50" in w
    assert not [x for x in verdict(r)["warnings"] if "did not complete" in x]
    md = render_markdown(r, verdict(r))
    assert md.count("| baseline |") == 2


def test_leakage_small_data_and_proxy_warnings():
    r = three_arms(0.03)
    r["criteria"]["helpfulness"] = {**CRITERIA["helpfulness"], "proxy": True}
    for a in r["arms"]:
        a["data"] = {"train_records": 60, "test_records": 20, "overlap_train_test": 3}
    leak = warned(r, "Data leakage")
    assert "3 test items also appear in the training data (3 arms" in leak
    train = warned(r, "Too little training data")
    assert "only 60 training records for 2 arms (cpt-sft and lora-sft)" in train  # prompting arms train nothing
    test = warned(r, "Too little test data")
    assert "only 20 test items for 3 arms" in test and "±0.11" in test  # widest correctness interval (0.68..0.90)
    assert not [w for w in verdict(r)["warnings"] if w.startswith("Helpfulness")]  # no arm has a helpfulness score
    r["arms"][1]["results"]["helpfulness"] = {"value": 0.4, "low": 0.3, "high": 0.5, "n": 20}
    assert "reference_similarity" in warned(r, "Helpfulness is a proxy")


def test_one_label_classifier_is_warned_with_the_label_share_and_macro_f1():
    c = "correctness"
    ref = {"yes": 96, "no": 76, "maybe": 28}
    collapsed = arm("lora-sft", "training", values={c: (0.48, 0.40, 0.55)}, extra={"macro_f1": {"value": 0.216, "low": 0.19, "high": 0.24}},
                    label_counts={"predicted": {"yes": 200}, "reference": ref})
    near = arm("sft-b", "training", values={c: (0.47, 0.40, 0.55)}, label_counts={"predicted": {"no": 181, "yes": 19}, "reference": ref})
    spread = arm("head", "training", values={c: (0.34, 0.27, 0.40)},
                 label_counts={"predicted": {"maybe": 89, "no": 58, "yes": 53}, "reference": ref})
    tiny = arm("few", values={c: (0.5, 0.2, 0.8)}, label_counts={"predicted": {"yes": 10}, "reference": {"yes": 5, "no": 5}})
    ws = [w for w in verdict(study(arm("zero-shot"), collapsed, near, spread, tiny))["warnings"] if "how often" in w]
    assert ws == ['lora-sft predicts "yes" for 200 of 200 test items: its accuracy is close to the share of "yes" among the '
                  'references (0.48), macro-F1 0.22; its score says how often "yes" is the answer more than how well it does the task.',
                  'sft-b predicts "no" for 181 of 200 test items: its accuracy is close to the share of "no" among the '
                  'references (0.38); its score says how often "no" is the answer more than how well it does the task.']


def test_sample_file_verdict(sample):
    v = verdict(sample)
    assert v["criteria"]["correctness"]["winner"] == "lora-sft"
    # cpt-sft's raw p of 0.046 against dpo is 0.092 once Holm-adjusted over the 5 comparisons: tied
    assert v["criteria"]["helpfulness"]["tied"] == ["dpo", "lora-sft", "cpt-sft"]
    assert v["criteria"]["helpfulness"]["separates"] is False  # a proxy
    assert [w.split(" ")[0] for w in v["warnings"]] == ["1", "Overfitting", "Forgetting", "Helpfulness"]
    assert verdict_paragraph(v).startswith("Fine-tuning pays off")


# --------------------------------------------------------------------------- markdown

def test_markdown_results_table_marks_the_best_value(sample):
    md = render_markdown(sample, verdict(sample))
    heads = ["# Study report", "## Results", "## Cost", "## Plots", "## Warnings (4)", "## Examples",
             "## Config differences", "## Environment"]
    assert [md.index(h) for h in heads] == sorted(md.index(h) for h in heads)
    row = next(line for line in md.splitlines() if line.startswith("| lora-sft | training |"))
    # raw bootstrap p 0.0002; Holm over the 5 comparisons with the baseline: 0.0002 x 5 = 0.001
    assert "**0.93 [0.86, 0.97]**" in row and "+0.88 [+0.82, +0.94] | 0.0002 | 0.001 |" in row
    assert "| Arm | Kind | Correctness | Domain adherence | Helpfulness (proxy) | General-ability retention |" in md
    assert "Helpfulness is a proxy" in md
    assert "<script" not in md and "&lt;script>" in md  # escaped answer
    assert "About 50 people \\| give or take" in md  # a pipe inside a cell does not break the table


def test_md_escape():
    assert md_escape("a | b\nc <b>x</b> [l](http://x) *y* _z_ snake_case") == \
        "a \\| b c &lt;b>x&lt;/b> [l]\\(http://x) \\*y\\* \\_z\\_ snake_case"


# --------------------------------------------------------------------------- html

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr", "source"}
SVG_VOID = {"rect", "line", "path", "circle"}  # self-closed in our SVG


class TagChecker(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.counts = [], [], {}

    def handle_starttag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def test_html_is_well_formed_complete_and_escaped(sample):
    html = render_html(sample, verdict(sample))
    p = TagChecker()
    p.feed(html)
    p.close()
    assert p.errors == [] and p.stack == []
    for tag in ("html", "head", "body", "main", "table", "caption", "thead", "tbody", "figure", "figcaption", "svg"):
        assert p.counts.get(tag, 0) >= 1, tag
    assert p.counts["table"] == p.counts["caption"]
    assert p.counts["figure"] == p.counts["svg"] == p.counts["figcaption"] == 6  # 4 criteria, loss curves, scatter
    for a in sample["arms"]:
        assert f">{a['id']}</th>" in html
    assert "<script" not in html.lower() and "&lt;script&gt;alert(" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "").replace("http://tarrowind.example", "")
    assert 'class="best"' in html and "Content-Security-Policy" in html


def test_every_svg_is_well_formed_xml(sample):
    html = render_html(sample, verdict(sample))
    svgs = [html[i: html.index("</svg>", i) + 6] for i in range(len(html)) if html.startswith("<svg", i)]
    assert len(svgs) == 6
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg") and root.find("{http://www.w3.org/2000/svg}title") is not None


def test_plots_escape_labels_and_handle_empty_input():
    svg = plots.bar_chart("<b>", [{"label": "<script>x</script>", "value": 0.5, "low": 0.4, "high": 0.6,
                                   "color": "#000", "best": True}])
    assert "<script" not in svg and "&lt;script&gt;" in svg
    ET.fromstring(svg)
    ET.fromstring(plots.line_chart("empty", []))
    ET.fromstring(plots.scatter_chart("empty", [], x_label="x", y_label="y"))
    assert plots._clip("lora-sft/smollm2-135m-instruct/seed0", 20) == "lora-sft/\u2026ruct/seed0"  # 20 characters
    assert plots.nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert plots.nice_ticks(0.21, 2.37)[0] <= 0.21 and plots.nice_ticks(0.21, 2.37)[-1] >= 2.37


def test_renders_the_runner_shapes_of_missing_data(sample):
    r = copy.deepcopy(sample)
    for a in r["arms"]:
        a["pairwise"] = {c: {o: None for o in row} for c, row in a["pairwise"].items()}
        a["vs_baseline"] = {c: None for c in a["vs_baseline"]}
        a["overfitting"], a["data"], a["curves"] = None, {"train_records": None, "test_records": None}, {}
        a["extra"] = {"retrieval_recall": {"recall@3": 0.8}, "preference_accuracy": 0.7}
    r["examples"], r["config_diff"], r["env"] = [], {}, {}
    v = verdict(r)
    assert v["criteria"]["correctness"]["winner"] is None  # no p-values: nothing is significant
    assert "recall@3" in render_markdown(r, v) and "No example answers" in render_html(r, v)


def test_write_report_writes_both_files_atomically(tmp_path, sample):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(sample))
    out = write_report(path)
    assert out == {"markdown": tmp_path / "report.md", "html": tmp_path / "report.html"}
    assert out["markdown"].read_text().startswith("# Study report: tarrowind-demo")
    assert out["html"].read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md", "results.json"]
