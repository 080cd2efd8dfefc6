"""The verdict's statistics on constructed results: one test per criterion (McNemar's exact test for
0/1 scores, the sign-flip permutation test otherwise), Holm-Bonferroni over the comparisons the
verdict makes, p-values never rounded onto the threshold, the majority-class reference, the
never-predicted-class warning, criteria that cannot separate the arms, and the code task's
show_tests setting. Pure Python except the results helpers (tiny files); well under a second."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tunesmith.errors import ConfigError
from tunesmith.eval.config import EvalConfig
from tunesmith.eval.tasks import build_items
from tunesmith.study.report import render_markdown, results_table
from tunesmith.study.results import _pair, majority_class, record_tests
from tunesmith.study.significance import fmt_p, p_digits
from tunesmith.study.verdict import comparisons, criterion_verdict, verdict

C = "correctness"


def arm(aid: str, kind: str = "prompting", value: float = 0.5, n: int = 200, pairs: dict | None = None, **kw) -> dict:
    """An arm with one correctness value and pairs {other: {field: value}} on correctness."""
    a = {"id": aid, "arm": aid, "kind": kind, "status": "completed",
         "results": {C: {"value": value, "low": value - 0.05, "high": value + 0.05, "n": n}},
         "pairwise": {C: pairs or {}}, "vs_baseline": {}, "extra": {}, "cost": {"train_seconds": 60.0},
         "data": {"train_records": 600, "test_records": n, "overlap_train_test": 0}}
    a.update(kw)
    return a


def study(*arms: dict, criterion: dict | None = None, **kw) -> dict:
    return {"criteria": {C: criterion or {"label": "Correctness", "metric": "accuracy", "higher_is_better": True}},
            "baseline": "zero-shot", "arms": list(arms), **kw}


# --------------------------------------------------------------------------- p-value formatting

def test_p_values_are_never_rounded_onto_the_threshold():
    assert fmt_p(0.04995) == "p = 0.04995"  # 3 digits would print 0.0500 -> '0.05': more digits
    assert fmt_p(0.0500001) == "p = 0.0500001"
    assert fmt_p(0.05) == "p = 0.05"
    assert fmt_p(0.0312) == "p = 0.0312" and fmt_p(0.081) == "p = 0.081" and fmt_p(0.5) == "p = 0.5"
    assert fmt_p(0.00002) == "p < 0.0001" and fmt_p(None) == "p n/a"
    for p in (0.049999, 0.0499999999, 0.050000001, 0.04951, 0.05049):
        assert (float(p_digits(p)) < 0.05) == (p < 0.05) and float(p_digits(p)) != 0.05


# --------------------------------------------------------------------------- one test per criterion, Holm

def test_the_issue_case_mcnemar_not_bootstrap_and_no_win_at_the_threshold():
    # bootstrap p 0.04995 (shown as 'p = 0.05' before), McNemar p 0.081: accuracy is 0/1 per item,
    # so McNemar's test decides, and lora-sft does not win.
    r = study(arm("zero-shot", value=0.08), arm("head", "training", value=0.80),
              arm("lora-sft", "training", value=0.86, pairs={
                  "head": {"diff": 0.06, "low": 0.0, "high": 0.12, "p_value": 0.04995, "mcnemar_p": 0.081},
                  "zero-shot": {"diff": 0.78, "low": 0.7, "high": 0.85, "p_value": 0.001, "mcnemar_p": 1e-9}}))
    v = criterion_verdict(r, C)
    assert v["winner"] is None and v["tied"] == ["lora-sft", "head"]
    assert "McNemar's exact test" in v["text"] and "0.05 " not in v["text"] + " "
    # the declared test wins over inference: with the bootstrap declared, 0.04995 is the raw p and
    # Holm over 2 comparisons (0.001 x 2, then max(0.002, 0.04995)) keeps it below 0.05
    r["criteria"][C]["test"] = "bootstrap"
    v = criterion_verdict(r, C)
    assert v["winner"] == "lora-sft"
    assert v["text"].endswith("next best: head, bootstrap p = 0.04995, adjusted p = 0.04995 by Holm-Bonferroni "
                              "over 2 comparisons.")


def test_holm_turns_two_raw_wins_into_a_tie():
    # raw 0.04 and 0.03 are each below 0.05; Holm: 0.03 x 2 = 0.06 -> no comparison is significant
    r = study(arm("zero-shot", value=0.50), arm("few-shot", value=0.52),
              arm("lora-sft", "training", value=0.60, pairs={
                  "zero-shot": {"diff": 0.10, "p_value": 0.5, "permutation_p": 0.03},
                  "few-shot": {"diff": 0.08, "p_value": 0.5, "permutation_p": 0.04}}))
    fam = comparisons(r, C)
    assert fam[("lora-sft", "few-shot")]["p_adj"] == pytest.approx(0.06)
    assert fam[("lora-sft", "zero-shot")]["p_adj"] == pytest.approx(0.06)
    v = criterion_verdict(r, C)
    assert v["winner"] is None and "a paired sign-flip permutation test" in v["text"]
    ft = verdict(r)["fine_tuning_vs_prompting"]
    assert ft.startswith("Fine-tuning does not significantly beat prompting")
    assert "permutation p = 0.04, adjusted p = 0.06 by Holm-Bonferroni over 2 comparisons" in ft


def test_fine_tuning_vs_prompting_reads_its_comparison_from_the_family():
    # rag (prompting) is best: the family is rag vs sft and rag vs zero-shot, which is also the
    # best trained vs best prompting comparison; sorted raw: 0.001 x 2 = 0.002, then 0.3 x 1 = 0.3
    r = study(arm("zero-shot", value=0.3), arm("sft", "training", value=0.5, pairs={
        "zero-shot": {"diff": 0.2, "mcnemar_p": 0.02}}),
        arm("rag", value=0.6, pairs={"zero-shot": {"diff": 0.3, "mcnemar_p": 0.001}, "sft": {"diff": 0.1, "mcnemar_p": 0.3}}))
    fam = comparisons(r, C)
    assert set(fam) == {("rag", "sft"), ("rag", "zero-shot")}
    assert [fam[k]["p_adj"] for k in [("rag", "zero-shot"), ("rag", "sft")]] == pytest.approx([0.002, 0.3])
    ft = verdict(r)["fine_tuning_vs_prompting"]
    assert ft.startswith("Fine-tuning does not significantly beat prompting on correctness: sft vs rag (0.50 vs 0.60, "
                         "-0.10, McNemar p = 0.3, adjusted p = 0.3 by Holm-Bonferroni over 2 comparisons)")


def test_results_record_the_test_of_each_criterion():
    binary = _pair({"a": 1, "b": 0, "c": 1}, {"a": 0, "b": 0, "c": 1})
    cont = _pair({"a": 0.4, "b": 0.9}, {"a": 0.3, "b": 0.2})
    assert binary["mcnemar_p"] == 1.0 and binary["permutation_p"] == pytest.approx(1.0)  # one discordant pair
    assert "mcnemar_p" not in cont and cont["permutation_p"] == pytest.approx(0.5)  # 2 of 4 sign flips reach 0.4
    criteria = {"correctness": {}, "helpfulness": {}, "retention": {}}
    arms = [{"pairwise": {"correctness": {"b": binary}, "helpfulness": {"b": cont}}},
            {"vs_baseline": {"helpfulness": binary}}]
    record_tests(criteria, arms)
    assert criteria["correctness"] == {"test": "mcnemar", "test_name": "McNemar's exact test", "correction": "Holm-Bonferroni"}
    assert criteria["helpfulness"]["test"] == "permutation"  # one pair is not 0/1: the whole criterion
    assert criteria["retention"] == {}  # nothing compared


# --------------------------------------------------------------------------- classification references and warnings

REF = {"positive": 118, "negative": 52, "neutral": 30}  # 200 test items


def cls_study(**kw) -> dict:
    zs = arm("zero-shot", value=0.41, label_counts={"predicted": {"positive": 150, "negative": 50}, "reference": REF})
    fs = arm("few-shot", value=0.55, label_counts={"predicted": {"positive": 120, "negative": 50, "neutral": 30}, "reference": REF})
    lora = arm("lora-sft", "training", value=0.92, label_counts={"predicted": REF, "reference": REF},
               pairs={"zero-shot": {"diff": 0.51, "mcnemar_p": 1e-12}, "few-shot": {"diff": 0.37, "mcnemar_p": 1e-8}})
    return study(zs, fs, lora, **kw)


def test_majority_class_reference_in_the_verdict_and_the_table():
    r = cls_study(majority_class={"label": "positive", "value": 0.59, "n": 200, "source": "training data"})
    v = verdict(r)
    assert v["criteria"][C]["winner"] == "lora-sft"
    assert ('Always answering the most frequent label of the training data, "positive", scores 0.59; few-shot and '
            "zero-shot do not beat that.") in v["criteria"][C]["text"]
    assert 'The best prompting arm does not beat always answering "positive"' in v["fine_tuning_vs_prompting"]
    assert "lora-sft is +0.33 above that reference" in v["fine_tuning_vs_prompting"]
    t = results_table(r)
    assert t["rows"][-1][:3] == ['always "positive" (most frequent label of the training data)', "reference", "0.59"]
    # without results' majority_class the test set's most frequent label is used, and said so
    t = results_table(cls_study())
    assert t["rows"][-1][0] == 'always "positive" (most frequent label of the test data)'
    assert any("no labelled training data" in n for n in t["notes"])


def test_an_arm_that_never_predicts_a_class_is_warned():
    ws = [w for w in verdict(cls_study())["warnings"] if "never predicts" in w]
    assert ws == ['zero-shot never predicts "neutral" (0 of 200 answers; 30 test items have that label): every item '
                  "of that class is scored wrong whatever the arm knows, and its accuracy hides it; check the prompt's "
                  "label wording or the label mapping."]
    # a configured label that no arm predicts and no test item has is still a class of the label set
    r = cls_study(study_config={"eval": {"labels": ["positive", "negative", "neutral", "mixed"]}})
    assert sum('"mixed" (0 of 200 answers; 0 test items' in w for w in verdict(r)["warnings"]) == 3


def test_majority_class_from_the_training_labels(tmp_path):
    train = tmp_path / "cls_train.jsonl"
    train.write_text("".join(json.dumps({"text": f"t{i}", "label": lab}) + "\n"
                             for i, lab in enumerate(["negative"] * 5 + ["positive"] * 3 + ["other"] * 9)))
    st = SimpleNamespace(eval=SimpleNamespace(task="classification", labels=None),
                         data=SimpleNamespace(classification_train=str(train), train=str(tmp_path / "missing.jsonl")))
    arms = [{"label_counts": None}, {"label_counts": {"predicted": {}, "reference": REF}}]
    # "other" is not a test label: the training majority among the test's labels is "negative"
    assert majority_class(st, arms) == {"label": "negative", "value": 0.26, "n": 200, "source": "training data",
                                        "criterion": "correctness"}
    st.data.classification_train = None  # no labelled training data: the test set's majority
    assert majority_class(st, arms)["source"] == "test data" and majority_class(st, arms)["label"] == "positive"
    st.eval.task = "qa"
    assert majority_class(st, arms) is None


# --------------------------------------------------------------------------- criteria that cannot separate the arms

def test_constant_criterion_cannot_separate():
    same = {"diff": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0, "mcnemar_p": 1.0}
    r = study(arm("zero-shot", value=0.57), arm("lora-sft", "training", value=0.57, pairs={"zero-shot": same}),
              criterion={"label": "Domain adherence", "metric": "on_domain_share"})
    v = criterion_verdict(r, C)
    assert v["separates"] is False and v["winner"] is None
    assert v["why"] == "Domain adherence cannot separate the arms: every arm scored 0.57 on the same 200 items, item for item."
    assert v["text"].startswith(v["why"]) and "tied" in v["text"]


def test_proxy_criterion_cannot_separate_even_with_a_significant_leader():
    r = study(arm("zero-shot", value=0.2), arm("lora-sft", "training", value=0.6,
                                               pairs={"zero-shot": {"diff": 0.4, "p_value": 0.001, "permutation_p": 0.0001}}),
              criterion={"label": "Helpfulness", "metric": "reference_similarity", "proxy": True})
    v = criterion_verdict(r, C)
    assert v["separates"] is False and v["winner"] is None
    assert v["text"].startswith("Helpfulness cannot separate the arms: it is measured only by a proxy (reference_similarity)")
    assert "By that proxy: lora-sft wins on helpfulness" in v["text"]


def test_too_few_items_or_too_wide_an_interval_cannot_separate():
    pair = {"zero-shot": {"diff": 0.05, "low": -0.2, "high": 0.3, "p_value": 0.6, "permutation_p": 0.6}}
    r = study(arm("zero-shot", value=0.50, n=20), arm("lora-sft", "training", value=0.55, n=20, pairs=pair))
    v = criterion_verdict(r, C)
    assert v["separates"] is False
    assert v["why"] == ("Correctness cannot separate the arms: only 20 items were scored, too few (under 30) to tell "
                        "differences like the observed 0.05 from chance.")
    # 200 items, but the paired interval is 0.5 wide: 0.71 x 0.5 = 0.355 detectable > the 0.05 gap
    r = study(arm("zero-shot", value=0.50), arm("lora-sft", "training", value=0.55, pairs=pair))
    assert criterion_verdict(r, C)["why"] == ("Correctness cannot separate the arms: with 200 items it can detect "
                                              "differences of about 0.35 or more (at 80% power), and the arms are at "
                                              "most 0.05 apart.")
    # interval 0.07 wide: 0.71 x 0.07 = 0.0497 detectable, under a 0.05 difference: a real tie
    pair["zero-shot"].update(low=-0.015, high=0.055)
    v = criterion_verdict(r, C)
    assert v["separates"] is True and v["why"] is None and v["tied"] == ["lora-sft", "zero-shot"]


# --------------------------------------------------------------------------- code: tests in the prompt

REC = {"id": "t1", "prompt": "Write add(a, b).", "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]}


def test_code_prompt_without_tests_when_show_tests_is_false():
    hidden = build_items([REC], EvalConfig(data="x", task="code", show_tests=False), None)[0]
    shown = build_items([REC], EvalConfig(data="x", task="code"), None)[0]
    assert "assert" not in hidden.messages[-1]["content"] and "Write add(a, b)." in hidden.messages[-1]["content"]
    assert hidden.tests == REC["tests"]  # still graded by them
    assert "assert add(1, 2) == 3" in shown.messages[-1]["content"]


def test_show_tests_effective_value_keys_the_cache():
    default, hidden = EvalConfig(data="x", task="code"), EvalConfig(data="x", task="code", show_tests=False)
    assert default.tests_in_prompt is True and hidden.tests_in_prompt is False
    assert default.cache_fields()["show_tests"] is True and hidden.cache_fields()["show_tests"] is False
    assert EvalConfig(data="x", task="code", show_tests=True).cache_fields() == default.cache_fields()
    assert "show_tests" not in EvalConfig(data="x").cache_fields()  # qa: no tests to show
    assert EvalConfig(data="x", task="code", prompt="{prompt}").tests_in_prompt is False
    with pytest.raises(ConfigError, match="contradicts the prompt template"):
        EvalConfig(data="x", task="code", prompt="{prompt}\n{tests}", show_tests=False).validate()


def test_report_states_whether_tests_were_shown():
    r = study(arm("zero-shot"), criterion={"label": "Correctness", "metric": "pass@1", "task": "code"},
              study_config={"eval": {"show_tests": False}}, schema_version=1, study="s", examples=[], config_diff={})
    assert "Code: tests shown in the prompt: no" in render_markdown(r, verdict(r))
    r["study_config"]["eval"]["show_tests"] = None  # unset: the MBPP default shows them
    assert "Code: tests shown in the prompt: yes" in render_markdown(r, verdict(r))


def test_forgetting_is_holm_adjusted_over_the_arms_compared_with_the_baseline():
    ret = {"label": "General-ability retention", "metric": "probe_accuracy", "higher_is_better": True}

    def ret_arm(aid: str, p: float) -> dict:
        a = arm(aid, "training", value=0.47)
        a["results"] = {"retention": {"value": 0.47, "low": 0.4, "high": 0.54, "n": 200}}
        a["vs_baseline"] = {"retention": {"diff": -0.03, "p_value": p, "mcnemar_p": p}}
        return a

    base = arm("zero-shot")
    base["results"] = {"retention": {"value": 0.50, "low": 0.43, "high": 0.57, "n": 200}}
    one = {"criteria": {"retention": ret}, "baseline": "zero-shot", "arms": [base, ret_arm("sft", 0.03)]}
    w = [x for x in verdict(one)["warnings"] if x.startswith("Forgetting")]
    assert w and "sft lost 0.03 (0.50 -> 0.47, McNemar p = 0.03, adjusted p = 0.03 by Holm-Bonferroni over 1 comparison)" in w[0]
    # two arms with raw p 0.03 each: Holm gives 0.06 for both, and a 0.03 drop is under the 5-point rule
    two = {**one, "arms": [base, ret_arm("sft", 0.03), ret_arm("dpo", 0.03)]}
    assert not [x for x in verdict(two)["warnings"] if x.startswith("Forgetting")]


def test_report_names_the_test_and_the_correction():
    notes = results_table(cls_study())["notes"]
    assert any("correctness: McNemar's exact test" in n and "Holm-Bonferroni-adjusted" in n for n in notes)
