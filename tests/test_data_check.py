"""Tests for duplicate detection and the `data check` report (duplicates, overlap, labels,
length statistics, formatting)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from tunesmith.data import check_dataset, find_duplicates, find_overlap

WORDS = ("the quick brown fox jumps over the lazy dog while seven wizards quietly brew potent "
         "elixirs beneath a violet moon and curious owls watch from ancient oak branches late tonight").split()
assert len(WORDS) == 30


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def changed(words: list[str], index: int, new: str = "CHANGED") -> str:
    out = list(words)
    out[index] = new
    return " ".join(out)


# --- find_duplicates -----------------------------------------------------------------------

def test_exact_duplicates_ignore_case_punctuation_and_spacing():
    texts = ["Hello, world!", "something else", "hello   WORLD", "Hello world."]
    groups, near = find_duplicates(texts)
    assert groups == [[0, 2, 3]]
    assert near == []  # exact copies are not repeated as near pairs


def test_near_duplicate_one_word_changed_and_different_text_not_flagged():
    base = " ".join(WORDS)
    different = ("completely unrelated sentence about tax law filings and quarterly revenue reports for "
                 "small companies operating in rural regions with limited broadband access during winter months")
    # One word changed at the end of a 30-word text: Jaccard of word 3-grams = 27/29.
    groups, near = find_duplicates([base, different, changed(WORDS, 29)])
    assert groups == []
    assert [(i, j) for i, j, _ in near] == [(0, 2)]
    assert near[0][2] == round(27 / 29, 4)
    # One word changed in the middle touches 3 shingles: 25/31 = 0.81, below the 0.85 default.
    _, near = find_duplicates([base, different, changed(WORDS, 15)], near_threshold=0.8)
    assert [(i, j) for i, j, _ in near] == [(0, 2)] and near[0][2] == round(25 / 31, 4)
    assert find_duplicates([base, changed(WORDS, 15)])[1] == []


def test_find_duplicates_is_deterministic_and_fast_on_20k_texts():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)]
    texts = [" ".join(rng.choices(vocab, k=rng.randint(20, 80))) for _ in range(20_000)]
    texts.append(texts[123] + " extra")  # near copy of 123
    start = time.perf_counter()
    groups, near = find_duplicates(texts)
    assert time.perf_counter() - start < 8
    assert groups == []
    assert [(i, j) for i, j, _ in near] == [(123, 20_000)]
    assert find_duplicates(texts[:200]) == find_duplicates(texts[:200])


def test_find_overlap_crosses_sides_only():
    train = [" ".join(WORDS), "train only text here", "Exact Same Prompt!"]
    evals = ["exact same prompt", changed(WORDS, 29), "eval only"]
    exact, near = find_overlap(train, evals)
    assert exact == [(2, 0)]
    assert [(i, j) for i, j, _ in near] == [(0, 1)]


# --- check_dataset -------------------------------------------------------------------------

def test_clean_file_is_ok(tmp_path):
    f = write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"question {i}", "completion": f"answer {i}"}
                                               for i in range(5)])
    report = check_dataset(f)
    assert report.ok and report.problems == []
    assert (report.type, report.n_records) == ("prompt_completion", 5)
    assert report.exact_duplicates == [] and report.near_duplicates == []
    assert report.length_stats == {"min": 4, "median": 4, "p95": 4, "max": 4, "n_over_max": 0,
                                   "max_length": None, "unit": "words (no tokenizer given)"}
    assert "Result: OK" in report.format()


def test_check_reports_duplicates_as_file_line(tmp_path):
    f = write_jsonl(tmp_path / "t.jsonl", [
        {"text": " ".join(WORDS)}, {"text": "Unrelated."}, {"text": " ".join(WORDS).upper()},
        {"text": changed(WORDS, 29)}, {"text": "another unrelated thing entirely"},
    ])
    report = check_dataset(f)
    assert report.exact_duplicates == [[f"{f}:1", f"{f}:3"]]
    assert report.near_duplicates == [(f"{f}:1", f"{f}:4", round(27 / 29, 4))]
    text = report.format()
    assert f"{f}:1 = {f}:3" in text and f"{f}:1 ~ {f}:4 (0.93)" in text


def test_overlap_between_train_and_eval(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [
        {"prompt": "What is the capital of France?", "completion": "Paris"},
        {"prompt": " ".join(WORDS), "completion": "x"},
        {"prompt": "train only", "completion": "y"},
    ])
    evals = write_jsonl(tmp_path / "eval.jsonl", [
        {"messages": [{"role": "user", "content": "what is the capital of france"},
                      {"role": "assistant", "content": "Paris."}]},
        {"messages": [{"role": "user", "content": changed(WORDS, 0)}, {"role": "assistant", "content": "z"}]},
        {"messages": [{"role": "user", "content": "eval only"}, {"role": "assistant", "content": "w"}]},
    ])
    report = check_dataset(train, eval_path=evals)
    assert report.eval_report is not None and report.eval_report.type == "messages"
    assert report.overlap["exact"] == [(f"{train}:1", f"{evals}:1")]
    assert [(a, b) for a, b, _ in report.overlap["near"]] == [(f"{train}:2", f"{evals}:2")]
    assert "train/eval overlap (prompt side): 1 exact, 1 near" in report.format()
    json.dumps(report.to_dict())


def test_eval_problems_make_report_not_ok(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "a b c"}])
    evals = write_jsonl(tmp_path / "eval.jsonl", [{"text": "d e f"}, {"text": ""}])
    report = check_dataset(train, eval_path=evals)
    assert report.problems == [] and not report.ok
    assert [(p.file, p.line, p.field) for p in report.eval_report.problems] == [(str(evals), 2, "text")]


def test_label_counts_and_imbalance_warning(tmp_path):
    rows = [{"text": f"good {i}", "label": "pos"} for i in range(8)] + [{"text": "bad", "label": "neg"},
                                                                       {"text": "meh", "label": 2}]
    report = check_dataset(write_jsonl(tmp_path / "c.jsonl", rows))
    assert report.label_counts == {"pos": 8, "neg": 1, "2": 1}
    text = report.format()
    assert "pos: 8 (80.0%)" in text and "warning: classes are imbalanced" in text
    balanced = check_dataset(write_jsonl(tmp_path / "b.jsonl", rows[:2] + rows[8:9] + [rows[8] | {"text": "x"}]))
    assert "imbalanced" not in balanced.format()


def test_token_counter_and_max_length(tmp_path):
    f = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "p" * n, "completion": "c"} for n in (1, 2, 3, 4)])
    report = check_dataset(f, token_counter=lambda rows, dtype: [len(r["prompt"]) + 1 for r in rows], max_length=3)
    s = report.length_stats
    assert (s["min"], s["median"], s["p95"], s["max"], s["n_over_max"], s["unit"]) == (2, 3.5, 5, 5, 2, "tokens")
    assert "2 over max_length 3" in report.format()


def test_check_with_one_problem_formats_everything_without_raising(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "hi", "completion": "hello"}\n{"prompt": "hey", "completion": 5}\n')
    report = check_dataset(f)
    assert not report.ok and report.n_records == 1
    text = report.format()
    assert "type:    prompt_completion (detected)" in text
    assert f"{f}:2: completion: must be a string, got number (put the text in a quoted JSON string)" in text
    assert "Result: 1 problem(s)" in text
    d = report.to_dict()
    assert d["problems"][0]["line"] == 2 and d["ok"] is False
    json.dumps(d)


def test_check_of_missing_file_reports_instead_of_raising(tmp_path):
    report = check_dataset(tmp_path / "missing.jsonl")
    assert not report.ok and report.length_stats is None
    assert "file not found" in report.format()
