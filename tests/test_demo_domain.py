"""Tests for the deterministic demo domain: reproducibility, sizes and the invariants
that evaluation relies on (gold documents, held-out phrasings, no answer leakage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tunesmith.demo.domain import (
    COMPANY,
    LABELS,
    SYSTEM_PROMPT,
    DemoDomain,
    Fact,
    build_domain,
    write_domain,
)

EXPECTED_FILES = (
    "corpus.jsonl", "qa_train.jsonl", "qa_test.jsonl", "ood.jsonl", "ood_train.jsonl", "pref_train.jsonl",
    "pref_test.jsonl", "cls_train.jsonl", "cls_test.jsonl", "facts.jsonl", "README.md",
)
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dom() -> DemoDomain:
    return build_domain(seed=0)


def _read_all(paths: dict[str, Path]) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths.values()}


def test_build_is_deterministic(dom: DemoDomain) -> None:
    assert build_domain(seed=0) == dom


def test_different_seeds_give_different_worlds(dom: DemoDomain) -> None:
    other = build_domain(seed=1)
    assert [f.entity for f in other.facts] != [f.entity for f in dom.facts]
    assert [f.answer for f in other.facts] != [f.answer for f in dom.facts]
    assert other.corpus != dom.corpus
    assert other.cls_train != dom.cls_train


def test_written_bytes_identical_across_calls(tmp_path: Path) -> None:
    a = write_domain(tmp_path / "a", seed=3)
    b = write_domain(tmp_path / "b", seed=3)
    assert sorted(p.name for p in a.values()) == sorted(EXPECTED_FILES)
    assert _read_all(a) == _read_all(b)
    # Atomic writes must not leave temp files behind.
    assert sorted(os.listdir(tmp_path / "a")) == sorted(EXPECTED_FILES)


def test_written_bytes_identical_across_processes(tmp_path: Path) -> None:
    here = write_domain(tmp_path / "here", seed=5)
    code = ("import sys; from tunesmith.demo.domain import write_domain; "
            "write_domain(sys.argv[1], seed=5)")
    # A different hash seed would expose any accidental set/hash ordering.
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(REPO_ROOT))
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "there")],
                   check=True, env=env, cwd=REPO_ROOT)
    there = {name: (tmp_path / "there" / name).read_bytes() for name in EXPECTED_FILES}
    assert _read_all(here) == there


def test_written_files_parse_and_match_domain(tmp_path: Path, dom: DemoDomain) -> None:
    paths = write_domain(tmp_path, seed=0)
    assert set(paths) == {"corpus", "qa_train", "qa_test", "ood", "ood_train", "pref_train", "pref_test",
                          "cls_train", "cls_test", "facts", "readme"}
    for name in ("corpus", "qa_train", "qa_test", "ood", "ood_train", "pref_train", "pref_test",
                 "cls_train", "cls_test"):
        lines = paths[name].read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == getattr(dom, name)
    facts = [Fact(**json.loads(line)) for line in paths["facts"].read_text().splitlines()]
    assert facts == dom.facts
    assert "qa_test.jsonl" in paths["readme"].read_text()


def test_counts(dom: DemoDomain) -> None:
    assert len(dom.facts) == 80
    assert 30 <= len(dom.corpus) <= 50
    assert len(dom.qa_train) == 3 * 80
    assert len(dom.qa_test) == 80
    assert len(dom.pref_train) == len(dom.qa_train)
    assert len(dom.pref_test) == len(dom.qa_test)
    assert 25 <= len(dom.ood) <= 40
    assert len(dom.cls_train) == 320
    assert len(dom.cls_test) == 120


def test_n_facts_parameter() -> None:
    small = build_domain(seed=2, n_facts=12)
    assert len(small.facts) == 12 and len(small.qa_test) == 12
    assert {f.doc_id for f in small.facts} == {d["id"] for d in small.corpus}
    with pytest.raises(ValueError):
        build_domain(n_facts=0)


def test_facts_are_well_formed(dom: DemoDomain) -> None:
    assert len({f.fact_id for f in dom.facts}) == len(dom.facts)
    answers = [f.answer for f in dom.facts]
    assert len(set(answers)) == len(answers)
    for f in dom.facts:
        assert 1 <= len(f.answer.split()) <= 3, f
        assert f.answer.lower() not in f.entity.lower()


def test_corpus_documents(dom: DemoDomain) -> None:
    ids = [d["id"] for d in dom.corpus]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("doc-") for i in ids)
    assert {f.doc_id for f in dom.facts} == set(ids)  # every doc holds at least one fact
    for doc in dom.corpus:
        assert set(doc) == {"id", "title", "text"}
        assert 80 <= len(doc["text"].split()) <= 300, doc["id"]
    per_doc = Counter(f.doc_id for f in dom.facts)
    assert max(per_doc.values()) >= 2  # several facts per doc


def test_answer_stated_only_in_gold_doc(dom: DemoDomain) -> None:
    texts = {d["id"]: d["text"] for d in dom.corpus}
    for f in dom.facts:
        assert f.answer in texts[f.doc_id], f
        elsewhere = [i for i, t in texts.items() if i != f.doc_id and f.answer.lower() in t.lower()]
        assert elsewhere == [], f


def test_answers_not_in_questions(dom: DemoDomain) -> None:
    answer = {f.fact_id: f.answer.lower() for f in dom.facts}
    for row in dom.qa_train + dom.qa_test + dom.pref_train + dom.pref_test:
        assert answer[row["fact_id"]] not in row["prompt"].lower(), row
    for row in dom.qa_train:
        assert row["completion"] == next(f.answer for f in dom.facts if f.fact_id == row["fact_id"])


def test_held_out_question_differs_from_training(dom: DemoDomain) -> None:
    train_by_fact: dict[str, list[str]] = {}
    for row in dom.qa_train:
        train_by_fact.setdefault(row["fact_id"], []).append(row["prompt"])
    all_train = {row["prompt"] for row in dom.qa_train}
    for row in dom.qa_test:
        assert len(set(train_by_fact[row["fact_id"]])) == 3, row  # fact has training questions
        assert row["prompt"] not in all_train, row


def test_held_out_phrasing_is_a_new_template(dom: DemoDomain) -> None:
    # Strip the entity so we compare phrasings: the test template is unseen for the attribute.
    facts = {f.fact_id: f for f in dom.facts}

    def template(row: dict) -> tuple[str, str]:
        f = facts[row["fact_id"]]
        return f.attribute, row["prompt"].replace(f.entity, "{e}")

    train_templates = {template(r) for r in dom.qa_train}
    for row in dom.qa_test:
        assert template(row) not in train_templates, row


def test_qa_test_rows(dom: DemoDomain) -> None:
    facts = {f.fact_id: f for f in dom.facts}
    for row in dom.qa_test:
        f = facts[row["fact_id"]]
        assert row["answer"] == f.answer and row["doc_id"] == f.doc_id
        assert isinstance(row["aliases"], list)
        assert all(a.lower() not in row["prompt"].lower() for a in row["aliases"])
    assert any(row["aliases"] for row in dom.qa_test)  # numeric answers accept the bare number


def test_preference_pairs(dom: DemoDomain) -> None:
    facts = {f.fact_id: f for f in dom.facts}
    train_prompts = {r["prompt"] for r in dom.qa_train}
    test_prompts = {r["prompt"] for r in dom.qa_test}
    for split, prompts in ((dom.pref_train, train_prompts), (dom.pref_test, test_prompts)):
        for row in split:
            f = facts[row["fact_id"]]
            assert row["chosen"] == f.answer
            assert row["rejected"] != row["chosen"]
            assert row["prompt"] in prompts
            rivals = {g.answer for g in dom.facts if g.attribute == f.attribute and g is not f}
            assert row["rejected"] in rivals, row


def test_ood_questions(dom: DemoDomain) -> None:
    entities = {f.entity for f in dom.facts}
    for row in dom.ood + dom.ood_train:
        assert set(row) == {"prompt", "answer"} and row["answer"]
        assert COMPANY not in row["prompt"]
        assert not any(e in row["prompt"] for e in entities)
    # The questions that teach the policy are never the ones that score it.
    assert not {r["prompt"] for r in dom.ood} & {r["prompt"] for r in dom.ood_train}
    assert len(dom.ood_train) >= 30


def test_classification(dom: DemoDomain) -> None:
    assert {r["label"] for r in dom.cls_train} == set(LABELS) == {r["label"] for r in dom.cls_test}
    assert len(LABELS) == 4
    counts = Counter(r["label"] for r in dom.cls_train)
    assert min(counts.values()) >= 0.15 * len(dom.cls_train)
    train_texts = {r["text"] for r in dom.cls_train}
    assert len(train_texts) == len(dom.cls_train)
    assert not train_texts & {r["text"] for r in dom.cls_test}
    entities = [f.entity for f in dom.facts] + [f.entity.removesuffix(" office") for f in dom.facts]
    mentions = sum(any(e in r["text"] for e in entities) for r in dom.cls_train)
    assert mentions >= 0.9 * len(dom.cls_train)


def test_constants() -> None:
    assert COMPANY in SYSTEM_PROMPT
    assert SYSTEM_PROMPT.count(".") == 1 and SYSTEM_PROMPT.endswith(".")


@pytest.mark.parametrize("seed", [1, 7, 42])
def test_invariants_hold_for_other_seeds(seed: int) -> None:
    d = build_domain(seed=seed)
    texts = {doc["id"]: doc["text"] for doc in d.corpus}
    assert all(f.answer in texts[f.doc_id] for f in d.facts)
    assert len({f.answer for f in d.facts}) == len(d.facts)
