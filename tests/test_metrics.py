"""Tests for tunesmith.eval.metrics against values worked out by hand (see comments)."""

from __future__ import annotations

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.eval.metrics import (
    answer_contained,
    bleu,
    chrf,
    classification_metrics,
    exact_match,
    extract_final_number,
    math_correct,
    math_scores,
    normalize_answer,
    pass_at_k,
    qa_scores,
    rouge_scores,
    token_f1,
)
from tunesmith.registry import METRICS

# ---------------------------------------------------------------------------- QA


def test_normalize_answer():
    assert normalize_answer("  The Quick, brown fox!  ") == "quick brown fox"
    assert normalize_answer("An apple a day") == "apple day"
    # Articles only as whole words: "theory" and "another" keep their letters.
    assert normalize_answer("theory another") == "theory another"


def test_exact_match_and_multiple_refs():
    assert exact_match("The Cat!", "cat") == 1.0
    assert exact_match("dog", ["cat", "a dog"]) == 1.0  # max over references
    assert exact_match("dog", ["cat", "cow"]) == 0.0


def test_token_f1_hand_computed():
    # "the cat sat" -> [cat, sat]; "a cat sat down" -> [cat, sat, down].
    # overlap 2: P = 2/2, R = 2/3, F1 = 2*(1*2/3)/(1+2/3) = (4/3)/(5/3) = 0.8
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # bag of tokens: [cat, cat, dog] vs [cat, dog, dog]: overlap min(2,1)+min(1,2) = 2,
    # P = R = 2/3, F1 = 2/3
    assert token_f1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)
    # max over references: 0.8 vs exact 1.0
    assert token_f1("the cat sat", ["a cat sat down", "cat sat"]) == 1.0
    assert token_f1("bird", "cat") == 0.0
    # SQuAD v2 convention for empty answers: both empty -> 1, one empty -> 0.
    assert token_f1("the", "a") == 1.0
    assert token_f1("", "cat") == 0.0


def test_answer_contained_whole_words():
    assert answer_contained("It was the big red dog.", "Red dog") == 1.0
    assert answer_contained("I ate a hotdog", "dog") == 0.0  # not a whole word
    assert answer_contained("Paris, France", ["London", "paris"]) == 1.0
    assert answer_contained("anything", "the") == 0.0  # empty normalised reference


def test_qa_scores_keys_and_values():
    s = qa_scores("the cat sat", "a cat sat down")
    assert s == {"exact_match": 0.0, "f1": pytest.approx(0.8), "contains": 0.0}
    assert qa_scores("a cat sat down now", "cat sat down")["contains"] == 1.0


def test_missing_reference_raises():
    with pytest.raises(TunesmithError, match="no reference"):
        exact_match("x", [])


# ---------------------------------------------------------------- classification


def test_classification_three_classes_by_hand():
    golds = ["a", "a", "a", "a", "b", "b", "b", "c", "c", "c"]
    preds = ["a", "a", "b", "c", "b", "b", "a", "c", "c", "b"]
    m = classification_metrics(preds, golds)
    # rows gold, cols predicted (a, b, c):
    #   gold a -> a,a,b,c = [2,1,1]; gold b -> b,b,a = [1,2,0]; gold c -> c,c,b = [0,1,2]
    assert m["confusion_matrix"] == {"labels": ["a", "b", "c"], "matrix": [[2, 1, 1], [1, 2, 0], [0, 1, 2]]}
    assert m["accuracy"] == pytest.approx(6 / 10)  # diagonal 2+2+2
    # a: tp 2, predicted 3 (column), gold 4 -> P 2/3, R 1/2, F1 = 2tp/(2tp+fp+fn) = 4/7
    # b: tp 2, predicted 4, gold 3 -> P 1/2, R 2/3, F1 = 4/(4+2+1) = 4/7
    # c: tp 2, predicted 3, gold 3 -> P 2/3, R 2/3, F1 = 2/3
    pl = m["per_label"]
    assert pl["a"]["precision"] == pytest.approx(2 / 3) and pl["a"]["recall"] == pytest.approx(0.5)
    assert pl["a"]["f1"] == pytest.approx(4 / 7)
    assert pl["b"]["precision"] == pytest.approx(0.5) and pl["b"]["recall"] == pytest.approx(2 / 3)
    assert pl["b"]["f1"] == pytest.approx(4 / 7)
    assert pl["c"]["f1"] == pytest.approx(2 / 3)
    assert pl["a"]["support"] == 4
    # macro = (4/7 + 4/7 + 2/3) / 3 = (24/21 + 14/21) / 3 = 38/63
    assert m["macro_f1"] == pytest.approx(38 / 63)
    assert m["n"] == 10


def test_classification_label_edge_cases():
    golds = ["pos", "pos", "neg", "neg"]
    preds = ["pos", "???", "pos", "pos"]
    m = classification_metrics(preds, golds, labels=["pos", "neg", "neutral"])
    # Matrix: given labels first, then the predicted-only "???" as an extra column.
    assert m["confusion_matrix"]["labels"] == ["pos", "neg", "neutral", "???"]
    assert m["confusion_matrix"]["matrix"] == [[1, 0, 0, 1], [2, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    # pos: tp 1, predicted 3, gold 2 -> P 1/3, R 1/2, F1 = 2/(2+2+1) = 0.4
    # neg: never predicted -> P = 0 (zero division), R = 0, F1 = 0, still in the macro
    # neutral: no gold, no predictions -> excluded; "???" is not a label -> excluded
    assert m["per_label"]["neg"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["macro_f1"] == pytest.approx((0.4 + 0.0) / 2)
    assert m["accuracy"] == pytest.approx(1 / 4)


def test_classification_length_mismatch():
    with pytest.raises(TunesmithError):
        classification_metrics(["a"], ["a", "b"])


# -------------------------------------------------------------------------- math


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42.", 42.0),  # sentence period is not a decimal point
        ("#### 72", 72.0),
        ("5 + 3 = 8 apples\n#### 8", 8.0),
        ("She paid $1,234.50 in total", 1234.5),  # $ and thousands separator
        ("He has 1,000,000 coins", 1_000_000.0),
        ("it fell to -7 degrees", -7.0),
        ("It grew by 25%", 25.0),  # trailing % is dropped, the number is kept
        ("She ate 3/4 of the pie", 0.75),  # simple fraction
        ("x = 2.50.", 2.5),
        ("about .5 liters", 0.5),
        ("10 - 3 = 7", 7.0),
        ("pages 3-5", 5.0),  # a '-' after a digit is a range, not a sign
        ("steps 1,2,3", 3.0),  # not a thousands group: separate numbers
        ("first 3 then 4 #### 10 and later 99", 10.0),  # first number after the marker
        ("#### 1 then #### 2", 2.0),  # the last marker wins
        ("#### -$5", -5.0),
        ("no numbers here", None),
        ("reasoning 12 ####", None),  # marker without a number: no answer
        ("", None),
    ],
)
def test_extract_final_number(text, expected):
    assert extract_final_number(text) == expected


def test_math_correct():
    assert math_correct("so #### 72", "Natalia sold 48+24 = 72 clips\n#### 72") == 1.0
    assert math_correct("The answer is 72.0000001", 72) == 1.0  # rel diff 1.4e-9 < 1e-6
    assert math_correct("The answer is 72.01", 72) == 0.0
    assert math_correct("0.0000000001", 0) == 1.0  # abs diff 1e-10 < 1e-9
    assert math_correct("I don't know", 5) == 0.0
    assert math_correct("$1,200", "1200") == 1.0
    assert math_scores("#### 3", ["4", "3"]) == {"correct": 1.0}
    with pytest.raises(TunesmithError, match="contains no number"):
        math_correct("5", "no number")


# ------------------------------------------------------------------------ ROUGE


def test_rouge_exact_and_partial():
    assert rouge_scores("the cat sat on the mat", "the cat sat on the mat") == {
        "rouge1": pytest.approx(1.0), "rouge2": pytest.approx(1.0), "rougeL": pytest.approx(1.0)}
    s = rouge_scores("the cat sat on the mat", ["a dog", "the cat is on the mat"])
    # unigrams: pred {the:2,cat,sat,on,mat}, ref {the:2,cat,is,on,mat}: overlap 5 of 6 each
    #   -> P = R = F = 5/6
    # bigrams: pred the-cat,cat-sat,sat-on,on-the,the-mat; ref the-cat,cat-is,is-on,on-the,
    #   the-mat: overlap 3 of 5 -> 0.6
    # LCS "the cat on the mat" = 5 -> 5/6. ("a dog" scores 0; max per metric.)
    assert s["rouge1"] == pytest.approx(5 / 6)
    assert s["rouge2"] == pytest.approx(0.6)
    assert s["rougeL"] == pytest.approx(5 / 6)
    # Porter stemming: cats -> cat, running/runs -> run.
    assert rouge_scores("cats running", "cat runs")["rouge1"] == pytest.approx(1.0)


# ---------------------------------------------------------------- BLEU and chrF


def test_bleu_chrf_identical_and_disjoint():
    preds = ["the cat sat on the mat", "a quick brown fox jumps over the dog"]
    refs = [["the cat sat on the mat"], ["a quick brown fox jumps over the dog"]]
    assert bleu(preds, refs) == pytest.approx(100.0)
    assert chrf(preds, refs) == pytest.approx(100.0)
    assert bleu(["xx yy zz qq"], [["aa bb cc dd"]]) == pytest.approx(0.0)
    assert chrf(["xyz"], [["abc"]]) == pytest.approx(0.0)
    partial = chrf(["the cat sat on a mat"], [["the cat sat on the mat"]])
    assert 50.0 < partial < 100.0


def test_bleu_uneven_reference_counts():
    # Item 1 matches its *second* reference; item 2 has a single reference. The transpose
    # must keep each reference with its own item (and duplicate item 2's last reference).
    preds = ["the cat sat on the mat", "a quick brown fox jumps over the dog"]
    refs = [["dogs bark loudly at night", "the cat sat on the mat"], ["a quick brown fox jumps over the dog"]]
    assert bleu(preds, refs) == pytest.approx(100.0)
    assert chrf(preds, refs) == pytest.approx(100.0)
    # Duplicating a reference never changes the score.
    refs_b = [["the cat is on a mat"], ["a quick brown fox leaps over a dog"]]
    dup = [r + r for r in refs_b]
    assert bleu(preds, dup) == pytest.approx(bleu(preds, refs_b))
    assert chrf(preds, dup) == pytest.approx(chrf(preds, refs_b))
    # A bare string reference per item is accepted.
    assert bleu(preds, ["the cat sat on the mat", "a quick brown fox jumps over the dog"]) == pytest.approx(100.0)
    with pytest.raises(TunesmithError):
        bleu(preds, refs[:1])


# -------------------------------------------------------------------------- code


def test_pass_at_k():
    # 1 - C(3,1)/C(5,1) = 1 - 3/5 = 0.4
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    # 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 2, 4) == 1.0  # n - c < k: every 4-subset holds a correct sample
    assert pass_at_k(10, 0, 3) == 0.0
    assert pass_at_k(200, 13, 1) == pytest.approx(13 / 200)  # pass@1 = c/n
    with pytest.raises(TunesmithError):
        pass_at_k(5, 6, 1)


def test_metrics_registered():
    assert METRICS.get("qa") is qa_scores
    assert METRICS.get("math") is math_scores
    assert METRICS.get("rouge") is rouge_scores
