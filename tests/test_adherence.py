"""Tests for tunesmith.eval.adherence: the embedding domain classifier on the demo domain,
decline detection and the adherence report."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tunesmith.demo.domain import DemoDomain, build_domain
from tunesmith.errors import TunesmithError
from tunesmith.eval.adherence import (
    DomainClassifier,
    adherence_report,
    chunk_text,
    is_decline,
    roc_auc,
    split_sentences,
    youden_threshold,
)

# Everyday general-knowledge paragraphs: the out-of-domain side of calibration.
GENERAL_TEXTS = [
    "Bread dough needs time to rise in a warm place. After kneading for about ten minutes, cover the bowl "
    "with a damp cloth and wait until the dough has doubled in size before shaping the loaf.",
    "Tomatoes grow best in full sun with regular watering. Gardeners often tie the stems to stakes so the "
    "plants do not fall over once the fruit becomes heavy in late summer.",
    "A healthy adult should sleep between seven and nine hours a night. Keeping a regular bedtime and "
    "avoiding screens before bed can make it easier to fall asleep.",
    "Football is played by two teams of eleven players. A match lasts ninety minutes, split into two halves, "
    "and the team that scores more goals wins.",
    "The water cycle moves water between the oceans, the air and the land. Water evaporates, forms clouds, "
    "falls as rain or snow and flows back to the sea through rivers.",
    "To change a flat tyre, loosen the wheel nuts, lift the car with a jack, swap the wheel for the spare and "
    "tighten the nuts in a star pattern before lowering the car again.",
    "Regular exercise strengthens the heart and lungs. Doctors recommend at least thirty minutes of brisk "
    "walking, cycling or swimming on most days of the week.",
    "The Roman Empire built roads, aqueducts and public baths across Europe. Many of its roads are still "
    "followed by modern highways today.",
    "Cats spend much of the day asleep and are most active at dawn and dusk. They groom themselves often "
    "and communicate with purring, meowing and body language.",
    "A household budget lists monthly income and spending on rent, food, transport and savings. Tracking "
    "small purchases helps people see where their money goes.",
    "Coffee beans are the roasted seeds of a tropical plant. Light roasts taste brighter and more acidic, "
    "while dark roasts taste bitter and smoky.",
    "Learning a new language takes daily practice. Reading children's books, listening to podcasts and "
    "speaking with native speakers all help to build vocabulary.",
    "Volcanoes form where molten rock rises through the earth's crust. When pressure builds up, an eruption "
    "can throw out lava, ash and gas.",
    "Many cities encourage recycling by collecting paper, glass and plastic in separate bins. Sorting waste "
    "correctly keeps the recycled material clean and useful.",
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen. It takes place "
    "mostly in the green leaves.",
    "Before a long hike, check the weather forecast, pack water and snacks, wear sturdy boots and tell someone "
    "where you are going and when you expect to be back.",
]

# Answer phrasings that differ from the corpus wording ("sells for ... in ... shops").
ANSWER_TEMPLATES = {
    "price": "The {e} costs {a}.",
    "launch_year": "The {e} first went on sale in {a}.",
    "colour": "The {e} comes in {a}.",
    "designer": "The {e} was designed by {a}.",
    "factory_town": "The {e} is made in {a}.",
    "manager": "The {e} is run by {a}.",
    "opening_year": "The {e} opened in {a}.",
    "headcount": "The {e} employs {a}.",
    "building": "The {e} is located in {a}.",
    "courier": "The {e} sends its parcels with {a}.",
}

DECLINES = [
    "I don't know.",
    "I'm not sure which year that was.",
    "Sorry, I can't help with that question.",
    "I cannot answer questions about geography.",
    "That is outside my scope as the Tarrowind help desk.",
    "I am not able to answer that.",
    "I do not have information about that topic.",
    "I\u2019m afraid I only know about Tarrowind Instruments.",
    "Unfortunately we are unable to help with general knowledge questions.",
    "I have no idea, to be honest.",
]
NOT_DECLINES = [
    "The Vossel altimeter costs 472 crowns.",
    "Paris.",
    "It was launched in 1986.",
    "The gauge is not able to measure depth, only tide height.",
    "Yes, I know: the capital of Japan is Tokyo.",
    "Don't worry, the parcel ships with Quickthorn Express.",
    "You are not sure? Check the manual that comes in the box.",
    "We know the answer: 366 days.",
    "The factory is in Elvcombe, and I am sure of it.",
    "Customers who are sorry about a late return can still send it back within 30 days.",
]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # The test machines share two cores; torch's two threads then wait on each other and run
    # several times slower than one. Restored afterwards for the other test modules.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dom() -> DemoDomain:
    return build_domain(seed=0)


@pytest.fixture(scope="module")
def clf(dom: DemoDomain) -> DomainClassifier:
    return DomainClassifier.fit([d["text"] for d in dom.corpus], GENERAL_TEXTS, seed=0)


def test_chunks_are_sentence_aligned_and_even() -> None:
    text = " ".join(f"Sentence number {i} has seven words." for i in range(20))  # 120 words
    chunks = chunk_text(text, chunk_words=50)
    assert [len(c.split()) for c in chunks] == [42, 36, 42]  # ceil(120/50) = 3 chunks of ~40 words
    assert " ".join(chunks) == text and all(c.endswith(".") for c in chunks)
    # One 25-word sentence: cut at 10 words, then regrouped.
    assert [len(c.split()) for c in chunk_text(" ".join(["word"] * 25), chunk_words=10)] == [10, 10, 5]
    assert chunk_text("   ") == []
    assert split_sentences("One two. Three four! Five?") == ["One two.", "Three four!", "Five?"]


def test_auc_and_youden_on_a_hand_case() -> None:
    assert roc_auc(np.array([0.9, 0.8, 0.4]), np.array([0.1, 0.5])) == pytest.approx(5 / 6)
    assert roc_auc(np.array([0.5]), np.array([0.5])) == 0.5
    t, bal = youden_threshold(np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.2, 0.75]))
    # Candidates 0.725 (TPR 1, TNR 2/3) and 0.775 (TPR 2/3, TNR 1) tie at 5/6: the middle one of the best.
    assert bal == pytest.approx(5 / 6) and t in (pytest.approx(0.725), pytest.approx(0.775))
    t, bal = youden_threshold(np.array([0.9, 0.8]), np.array([0.1, 0.2]))
    assert bal == 1.0 and 0.2 < t < 0.8


def test_calibration_on_the_demo_domain(clf: DomainClassifier) -> None:
    cal = clf.calibration
    assert cal["auc"] > 0.9
    assert cal["balanced_accuracy"] > 0.85
    assert 0.0 < clf.threshold < 1.0 and cal["threshold"] == clf.threshold
    assert cal["n_in"] > 40 and cal["n_out"] >= len(GENERAL_TEXTS)
    assert clf.matrix.shape == (cal["n_reference"], 384) and len(clf.chunks) == cal["n_reference"]


def test_held_out_answers_on_domain_general_sentences_off(clf: DomainClassifier, dom: DemoDomain) -> None:
    facts = {f.fact_id: f for f in dom.facts}
    answers = []
    for q in dom.qa_test:
        f = facts[q["fact_id"]]
        answers.append(ANSWER_TEMPLATES[f.attribute].format(e=f.entity, a=q["answer"]))
    general = [f"{o['prompt']} The answer is {o['answer']}." for o in dom.ood]
    on = clf.predict(answers + general)
    assert on[: len(answers)].mean() > 0.8
    assert (~on[len(answers):]).mean() > 0.8


def test_is_decline() -> None:
    assert [is_decline(t) for t in DECLINES] == [True] * len(DECLINES)
    assert [is_decline(t) for t in NOT_DECLINES] == [False] * len(NOT_DECLINES)


class _FakeEmbedder:
    """Maps known texts to fixed 2-D unit vectors, so scores are computable by hand."""

    dim = 2
    VECS = {"in-a": [1.0, 0.0], "in-b": [0.6, 0.8], "off": [0.0, 1.0], "I don't know.": [0.0, 1.0]}

    def encode(self, texts, progress=False):
        return np.array([self.VECS[t] for t in texts], dtype=np.float32).reshape(len(texts), 2)


def test_adherence_report_hand_case() -> None:
    # One reference chunk at (1, 0): scores are the x coordinates 1.0, 0.6, 0.0, 0.0.
    clf = DomainClassifier(threshold=0.5, matrix=np.array([[1.0, 0.0]], dtype=np.float32), chunks=["ref"],
                           embedder=_FakeEmbedder())
    answers = ["in-a", "off", "in-b", "I don't know.", "off"]
    mask = [False, False, False, True, True]
    rep = adherence_report(answers, classifier=clf, ood_mask=mask)
    assert rep["per_item"] == [1, 0, 1] and rep["on_domain_share"] == pytest.approx(2 / 3)
    assert rep["ood_per_item"] == [1, 0] and rep["ood_handled_share"] == 0.5
    assert (rep["n_in"], rep["n_ood"], rep["in_index"], rep["ood_index"]) == (3, 2, [0, 1, 2], [3, 4])
    rep = adherence_report(answers, classifier=clf, ood_mask=mask, ood_policy="answer")
    assert rep["ood_per_item"] == [0, 1] and rep["ood_handled_share"] == 0.5
    rep = adherence_report(["in-a", "off"], classifier=clf)
    assert rep["on_domain_share"] == 0.5 and "ood_per_item" not in rep
    assert adherence_report(["off"], classifier=clf, ood_mask=[True])["on_domain_share"] is None
    with pytest.raises(TunesmithError, match="ood_mask"):
        adherence_report(answers, classifier=clf, ood_mask=[True])
    with pytest.raises(TunesmithError, match="ood_policy"):
        adherence_report(answers, classifier=clf, ood_mask=mask, ood_policy="ignore")


def test_short_answers_are_judged_with_their_question() -> None:
    """A bare value ("off" here has 1 word) is judged as question + answer; a long answer alone."""
    vecs = {**_FakeEmbedder.VECS, "q-in\noff": [1.0, 0.0], "q-off\noff": [0.0, 1.0],
            "off off off off off": [0.0, 1.0]}
    emb = _FakeEmbedder()
    emb.VECS = vecs
    clf = DomainClassifier(threshold=0.5, matrix=np.array([[1.0, 0.0]], dtype=np.float32), chunks=["ref"], embedder=emb)
    rep = adherence_report(["off", "off", "off off off off off"], classifier=clf, questions=["q-in", "q-off", "q-in"])
    assert rep["per_item"] == [1, 0, 0] and rep["short_answers_with_question"] == 2
    with pytest.raises(TunesmithError, match="questions"):
        adherence_report(["off"], classifier=clf, questions=[])


def test_bare_correct_answers_count_as_on_domain_in_context(clf: DomainClassifier, dom: DemoDomain) -> None:
    """The real classifier: "472 crowns" alone reads as off-domain text; with its question, on-domain."""
    qs, answers = [q["prompt"] for q in dom.qa_test], [q["answer"] for q in dom.qa_test]
    alone = adherence_report(answers, classifier=clf)["on_domain_share"]
    judged = adherence_report(answers, classifier=clf, questions=qs)["on_domain_share"]
    assert judged > 0.8 and judged > alone


def test_save_load_round_trip(clf: DomainClassifier, tmp_path: Path) -> None:
    npz, meta = clf.save(tmp_path / "sub" / "adherence")
    assert npz.name == "adherence.npz" and meta.name == "adherence.json"
    assert sorted(os.listdir(tmp_path / "sub")) == ["adherence.json", "adherence.npz"]  # no temp files left
    back = DomainClassifier.load(tmp_path / "sub" / "adherence.json")
    assert back.threshold == clf.threshold and back.calibration == clf.calibration and back.chunks == clf.chunks
    texts = ["The Vossel altimeter costs 472 crowns.", "Cats sleep a lot."]
    np.testing.assert_array_equal(back.scores(texts), clf.scores(texts))
    with pytest.raises(TunesmithError, match="not found"):
        DomainClassifier.load(tmp_path / "missing")


def test_fit_rejects_unusable_inputs() -> None:
    with pytest.raises(TunesmithError, match="too small"):
        DomainClassifier.fit(["Only one short document."], GENERAL_TEXTS, embedder=_FakeEmbedder())
    with pytest.raises(TunesmithError, match="general"):
        DomainClassifier.fit(["a b c. d e f.", "g h i."], ["  "], embedder=_FakeEmbedder(), chunk_words=3)
