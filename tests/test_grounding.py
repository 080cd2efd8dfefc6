"""Content adherence (tunesmith.eval.grounding): claims, support in passages, and the verdict,
on hand-written answers whose right verdict is known."""

from __future__ import annotations

import pytest

from tunesmith.eval.adherence import adherence_report, is_policy_decline
from tunesmith.eval.grounding import ContentJudge, claims, judge, stem, terms

PASSAGE = ("Introducing the Vossel altimeter\nTarrowind Instruments makes the Vossel altimeter. The Vossel altimeter "
           "was launched in 1986. The casing of every Vossel altimeter is finished in charcoal. It was designed by "
           "Hollis Mercer.")
Q = "The Vossel altimeter came out in which year?"


def test_stem_and_terms():
    assert stem("launched") == stem("launch") == "launch"
    assert stem("crowns") == "crown" and stem("1,986.") == "1986" and stem("Mercer's") == "mercer"
    assert terms("The Vossel altimeter was launched in 1986.") == {"vossel", "altimeter", "launch", "1986"}


def test_claims_drop_function_words_and_the_questions_words():
    cs = claims("The Vossel altimeter was launched in 1986 by Hollis Mercer.", Q)
    assert [c.term for c in cs] == ["launch", "1986", "holli", "mercer"]  # stems: "Hollis" meets "Hollis" only
    assert [c.specific for c in cs] == [False, True, True, True]  # a number and mid-sentence names
    assert claims("In which year? The Vossel altimeter came out.", Q) == []  # an echo asserts nothing
    # A capital that starts a sentence is not a name by itself.
    assert [c.specific for c in claims("Charcoal.", Q)] == [False]


@pytest.mark.parametrize("answer, adheres", [
    ("1986", 1),                                                   # a bare correct answer from the corpus
    ("The Vossel altimeter was launched in 1986.", 1),             # the same in a sentence
    ("It was designed by Hollis Mercer.", 1),                      # a true fact of another attribute
    ("It was launched in 1990.", 0),                               # an invented date
    ("1986, and it was designed by John Smith.", 0),               # a true value plus an invented person
    ("The Vossel altimeter came out in which year?", 0),           # the question's own words
    ("I don't know.", 0),                                          # a decline asserts nothing from the domain
    ("Paris is the capital of France.", 0),                        # another subject
    ("1986 was a wonderful, glorious, magnificent, splendid era", 0),  # mostly general-world content
])
def test_judge_on_known_answers(answer, adheres):
    v = judge(answer, Q, [PASSAGE])
    assert v["adheres"] == adheres, v


def test_words_common_to_the_corpus_are_not_enough():
    # "launched" is in the passage, but when it is in most documents it says nothing about this one.
    assert judge("It was launched.", Q, [PASSAGE])["adheres"] == 1
    v = judge("It was launched.", Q, [PASSAGE], common=frozenset({"launch"}))
    assert v["adheres"] == 0 and "common" in v["why"]
    assert judge("It was launched in 1986.", Q, [PASSAGE], common=frozenset({"launch"}))["adheres"] == 1


DOCS = [
    {"id": "d1", "title": "Introducing the Vossel altimeter", "text": "The Vossel altimeter was launched in 1986 and sells for 472 crowns."},
    {"id": "d2", "title": "Introducing the Orvell barometer", "text": "The Orvell barometer was launched in 1972 and sells for 310 crowns."},
    {"id": "d3", "title": "Profile of the Brackmoor office", "text": "The Brackmoor office opened in 1955 and is managed by Ada Quill."},
    {"id": "d4", "title": "Day-to-day at the Brackmoor office", "text": "All parcels from the Brackmoor office are shipped with Dobbin Freight."},
]


def test_content_judge_retrieves_for_the_question_not_the_answer():
    cj = ContentJudge(DOCS, k=1, method="bm25")
    qs = ["When did the Vossel altimeter come out?"] * 3 + ["Who manages the Brackmoor office?"]
    out = cj.judge_all(["1986", "1972", "It came out in 1972, like the Orvell barometer.", "Ada Quill"], qs)
    # Another product's year is a real corpus value but not supported for this question.
    assert [o["adheres"] for o in out] == [1, 0, 0, 1]
    # Terms in more than a quarter of the 4 documents (here: in 2 of them) are common to the domain.
    assert cj.common == {"launch", "sell", "crown", "introduc", "brackmoor", "office"}
    assert cj.settings()["k"] == 1


def test_adherence_report_content_first_topic_second_and_the_policy():
    cj = ContentJudge(DOCS, k=1, method="bm25")
    answers = ["1986", "I made it up in 2001.", "I can only answer questions about Tarrowind Instruments.", "Paris"]
    questions = ["When did the Vossel altimeter come out?", "When did the Vossel altimeter come out?",
                 "What is the capital of France?", "What is the capital of Italy?"]
    rep = adherence_report(answers, content=cj, ood_mask=[False, False, True, True], questions=questions,
                           decline_message="I can only answer questions about Tarrowind Instruments.")
    assert rep["per_item"] == [1, 0] and rep["on_domain_share"] == 0.5
    assert rep["ood_per_item"] == [1, 0] and rep["ood_handled_share"] == 0.5
    assert "topic_per_item" not in rep and rep["method"]["k"] == 1
    assert len(rep["details"]) == 2 and rep["details"][1]["ungrounded"] == ["2001"]


def test_policy_decline_matches_the_message_or_a_decline_phrasing():
    msg = "Please ask our help desk about Tarrowind products only."
    assert is_policy_decline("please ask our HELP desk about tarrowind products only!", msg)
    assert is_policy_decline("Sorry, I cannot answer that.", msg)
    assert not is_policy_decline("Rome", msg)
