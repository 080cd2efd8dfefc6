"""Tests for the demo adherence ground truth: hand-built answers to real demo questions
with known labels, and Cohen's kappa / agreement against hand-computed values."""

from __future__ import annotations

import math

import pytest

from tunesmith.demo.adherence_truth import (
    agreement,
    cohen_kappa,
    explain,
    label_answer,
    label_answers,
)
from tunesmith.demo.domain import COMPANY, DemoDomain, Fact, build_domain


@pytest.fixture(scope="module")
def dom() -> DemoDomain:
    return build_domain(seed=0, n_facts=40)


def _fact(dom: DemoDomain, attribute: str, nth: int = 0) -> Fact:
    return [f for f in dom.facts if f.attribute == attribute][nth]


def _row(dom: DemoDomain, fact: Fact) -> dict:
    return next(r for r in dom.qa_test if r["fact_id"] == fact.fact_id)


def _other_fact(dom: DemoDomain, fact: Fact) -> Fact:
    """The same attribute of another entity, with a different value."""
    return next(f for f in dom.facts
                if f.attribute == fact.attribute and f.entity != fact.entity)


def test_bare_correct_answer_adheres(dom: DemoDomain) -> None:
    for attribute in ("price", "launch_year", "colour", "designer", "factory_town",
                      "manager", "headcount", "building", "courier"):
        fact = _fact(dom, attribute)
        assert label_answer(fact.answer, _row(dom, fact), dom) == 1, fact


def test_alias_adheres(dom: DemoDomain) -> None:
    fact = _fact(dom, "price")
    row = _row(dom, fact)
    assert row["aliases"], "price answers have a bare-number alias"
    assert label_answer(row["aliases"][0], row, dom) == 1


def test_correct_answer_in_sentence_with_entity_name_adheres(dom: DemoDomain) -> None:
    fact = _fact(dom, "designer")
    answer = f"The {fact.entity} was designed by {fact.answer} for {COMPANY}."
    assert label_answer(answer, _row(dom, fact), dom) == 1


def test_true_fact_of_another_attribute_adheres(dom: DemoDomain) -> None:
    asked = _fact(dom, "price")
    year = next(f for f in dom.facts if f.entity == asked.entity and f.attribute == "launch_year")
    assert label_answer(f"It was launched in {year.answer}.", _row(dom, asked), dom) == 1


def test_invented_person_does_not_adhere(dom: DemoDomain) -> None:
    fact = _fact(dom, "designer")
    row = _row(dom, fact)
    assert label_answer(f"The {fact.entity} was designed by John Smith in 1990.", row, dom) == 0
    # A name built from the generator's pools but belonging to nobody is invented too.
    assert label_answer("It was designed by Orsin Quarrington.", row, dom) == 0


def test_another_entitys_value_does_not_adhere(dom: DemoDomain) -> None:
    for attribute in ("launch_year", "colour", "designer", "price"):
        fact = _fact(dom, attribute)
        other = _other_fact(dom, fact)
        assert label_answer(other.answer, _row(dom, fact), dom) == 0, (fact, other)


def test_general_world_answer_does_not_adhere(dom: DemoDomain) -> None:
    row = _row(dom, _fact(dom, "factory_town"))
    assert label_answer("Paris is the capital of France.", row, dom) == 0
    assert label_answer("It is made in Birmingham, England.", row, dom) == 0


def test_decline_does_not_adhere(dom: DemoDomain) -> None:
    row = _row(dom, _fact(dom, "price"))
    assert label_answer("I don't know.", row, dom) == 0
    assert label_answer(f"I can only answer questions about {COMPANY}.", row, dom) == 0
    assert label_answer("", row, dom) == 0


def test_echo_of_question_does_not_adhere(dom: DemoDomain) -> None:
    fact = _fact(dom, "launch_year")
    row = _row(dom, fact)
    assert label_answer(row["prompt"], row, dom) == 0
    assert label_answer(f"The {fact.entity}.", row, dom) == 0


def test_correct_value_plus_invented_date_does_not_adhere(dom: DemoDomain) -> None:
    fact = _fact(dom, "price")
    answer = f"The {fact.entity} costs {fact.answer} and was launched in 1890."
    assert label_answer(answer, _row(dom, fact), dom) == 0


def test_correct_value_plus_other_entitys_value_does_not_adhere(dom: DemoDomain) -> None:
    fact = _fact(dom, "colour")
    other = _other_fact(dom, fact)
    assert label_answer(f"{fact.answer}, or perhaps {other.answer}", _row(dom, fact), dom) == 0


def test_explain_reports_statuses(dom: DemoDomain) -> None:
    fact = _fact(dom, "price")
    found = explain(f"The {fact.entity} costs {fact.answer}; John designed it in 1990.",
                    _row(dom, fact), dom)
    assert [(a["kind"], a["status"]) for a in found] == [
        ("entity_name", "given"), ("fact_value", "true"),
        ("capitalised", "invented"), ("number", "invented")]


def test_label_answers_matches_single_labels(dom: DemoDomain) -> None:
    fact = _fact(dom, "price")
    row = _row(dom, fact)
    answers = [fact.answer, "I don't know.", "1890"]
    assert label_answers(answers, [row] * 3, dom) == [1, 0, 0]
    with pytest.raises(ValueError):
        label_answers(answers, [row], dom)


def test_cohen_kappa_hand_computed() -> None:
    # 2x2 table [[20, 5], [10, 15]] (rows: rater a = 1/0, columns: rater b = 1/0):
    # p_o = 35/50 = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5, kappa = 0.2/0.5 = 0.4.
    a = [1] * 25 + [0] * 25
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    # Observed agreement equal to chance: p_o = p_e = 0.5.
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.0)
    # No variation at all: kappa is undefined.
    assert math.isnan(cohen_kappa([1, 1, 1], [1, 1, 1]))
    with pytest.raises(ValueError):
        cohen_kappa([1, 0], [1])
    with pytest.raises(ValueError):
        cohen_kappa([2], [1])


def test_agreement_counts() -> None:
    metric = [1] * 25 + [0] * 25
    truth = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    out = agreement(metric, truth)
    assert out["n"] == 50
    assert (out["tp"], out["fp"], out["fn"], out["tn"]) == (20, 5, 10, 15)
    assert out["accuracy"] == pytest.approx(0.7)
    assert out["kappa"] == pytest.approx(0.4)
