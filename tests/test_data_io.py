"""Tests for reading datasets: file formats, layout recognition and every broken-file case.

Each broken-file test writes a real file to tmp_path and asserts the exact file, line and
field of the reported Problem, and that reading raised nothing.
"""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path

import pytest

from tunesmith.data import DATASET_TYPES, file_sha256, load_dataset, read_dataset
from tunesmith.errors import DataError, Problem, TunesmithError


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def only_problem(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def at(problems: list[Problem]) -> list[tuple]:
    return [(p.file, p.line, p.field) for p in problems]


# --- broken files ------------------------------------------------------------------------

def test_malformed_json_line_reports_decoder_message_and_column_and_continues(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "a"}\n{"text": "b"\n{"text": "c"}\n')
    ds, problems = read_dataset(f)
    p = only_problem(problems)
    assert (p.file, p.line, p.field) == (str(f), 2, None)
    assert "malformed JSON" in p.message and "column 13" in p.message and "Expecting" in p.message
    assert [r.line for r in ds.records] == [1, 3]


def test_line_that_is_not_an_object(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "a"}\n[1, 2]\n"just a string"\n')
    _, problems = read_dataset(f)
    assert at(problems) == [(str(f), 2, None), (str(f), 3, None)]
    assert "JSON list, not an object" in problems[0].message
    assert "JSON string, not an object" in problems[1].message


@pytest.mark.parametrize("bad, kind", [(42, "number"), (["a", "b"], "list"), ({"x": 1}, "object")])
def test_wrong_field_type(tmp_path, bad, kind):
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}, {"prompt": "p", "completion": bad}])
    ds, problems = read_dataset(f)
    p = only_problem(problems)
    assert (p.file, p.line, p.field) == (str(f), 2, "completion")
    assert p.message == f"must be a string, got {kind}"
    assert len(ds) == 1


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    f = tmp_path / "d.jsonl"
    f.write_text(content)
    ds, problems = read_dataset(f)
    p = only_problem(problems)
    assert (p.file, p.line, p.field, p.message) == (str(f), None, None, "file is empty")
    assert len(ds) == 0


def test_invalid_utf8_reports_line_and_continues(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_bytes(b'{"text": "ok"}\n{"text": "ok"}\n{"text": "caf\xe9"}\n{"text": "fine"}\n')
    ds, problems = read_dataset(f)
    p = only_problem(problems)
    assert (p.file, p.line, p.field) == (str(f), 3, None)
    assert "invalid UTF-8" in p.message and "0xe9" in p.message and "column 14" in p.message
    assert [r.line for r in ds.records] == [1, 2, 4]


def test_invalid_utf8_in_csv(tmp_path):
    f = tmp_path / "d.csv"
    f.write_bytes(b"prompt,completion\nhello,world\nbad \xff,x\nfine,ok\n")
    ds, problems = read_dataset(f)
    assert at(problems) == [(str(f), 3, None)]
    assert [r.line for r in ds.records] == [2, 4]


def test_huge_line_is_skipped_without_loading_it(tmp_path):
    f = tmp_path / "d.jsonl"
    with f.open("wb") as fh:
        fh.write(b'{"text": "first"}\n')
        fh.write(b'{"text": "' + b"x" * 50_000_000 + b'"}\n')
        fh.write(b'{"text": "third"}\n')
    tracemalloc.start()
    try:
        ds, problems = read_dataset(f)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    p = only_problem(problems)
    assert (p.file, p.line, p.field) == (str(f), 2, None)
    assert "50,000,013 bytes" in p.message and "10,000,000-byte limit" in p.message
    assert [r.data["text"] for r in ds.records] == ["first", "third"]
    assert peak < 25_000_000  # the 50 MB line was never held whole


def test_missing_required_field(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}, {"prompt": "p2"}])
    _, problems = read_dataset(f)
    p = only_problem(problems)
    assert (p.file, p.line, p.field, p.message) == (str(f), 2, "completion", "field is missing")


def test_empty_string_where_text_is_required(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}, {"prompt": "  ", "completion": "c"}])
    _, problems = read_dataset(f)
    p = only_problem(problems)
    assert (p.file, p.line, p.field, p.message) == (str(f), 2, "prompt", "is empty")


def chat(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


GOOD_CHAT = chat(("system", "be brief"), ("user", "hi"), ("assistant", "hello"))


@pytest.mark.parametrize("record, field, words", [
    (chat(("user", "a"), ("user", "b"), ("assistant", "c")), "messages[1].role", "expected a assistant turn"),
    (chat(("assistant", "a"), ("user", "b"), ("assistant", "c")), "messages[0].role", "expected a user turn"),
    (chat(("user", "a"), ("bot", "b")), "messages[1].role", "unknown role 'bot'"),
    (chat(("user", "a"), ("system", "s"), ("assistant", "c")), "messages[1].role", "system turn must come first"),
    (chat(("user", "a"), ("assistant", " ")), "messages[1].content", "assistant turn is empty"),
    (chat(("user", "a"), ("assistant", "b"), ("user", "c")), "messages[2].role", "ends with a user turn"),
    (chat(("user", "a"), ("assistant", 3)), "messages[1].content", "must be a string, got number"),
    ({"messages": []}, "messages", "has no turns"),
])
def test_conversation_problems(tmp_path, record, field, words):
    f = write_jsonl(tmp_path / "d.jsonl", [GOOD_CHAT, record])
    ds, problems = read_dataset(f)
    p = only_problem(problems)
    assert (p.file, p.line, p.field) == (str(f), 2, field)
    assert words in p.message
    assert len(ds) == 1 and ds.type == "messages"


@pytest.mark.parametrize("label, message", [(None, "label is missing"), ("", "label is empty"), ("  ", "label is empty")])
def test_classification_label_missing_or_empty(tmp_path, label, message):
    bad = {"text": "t2"} if label is None else {"text": "t2", "label": label}
    f = write_jsonl(tmp_path / "d.jsonl", [{"text": "t1", "label": "pos"}, bad])
    _, problems = read_dataset(f, type="classification")
    p = only_problem(problems)
    assert (p.file, p.line, p.field, p.message) == (str(f), 2, "label", message)


def test_unsupported_extension(tmp_path):
    f = tmp_path / "d.xlsx"
    f.write_bytes(b"PK")
    _, problems = read_dataset(f)
    p = only_problem(problems)
    assert (p.file, p.line, p.field) == (str(f), None, None)
    assert "unsupported file extension '.xlsx'" in p.message and ".jsonl" in p.fix


def test_file_not_found(tmp_path):
    f = tmp_path / "nope.jsonl"
    _, problems = read_dataset(f)
    p = only_problem(problems)
    assert (p.file, p.line, p.message) == (str(f), None, "file not found")


def test_all_problems_of_a_file_are_collected(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "p", "completion": "c"}\n{bad\n{"prompt": "p"}\n{"prompt": 1, "completion": "c"}\n')
    _, problems = read_dataset(f)
    assert at(problems) == [(str(f), 2, None), (str(f), 3, "completion"), (str(f), 4, "prompt")]


def test_malformed_json_document_reports_line_and_keeps_earlier_records(tmp_path):
    f = tmp_path / "d.json"
    f.write_text('[\n  {"text": "a"},\n  {"text": "b"},\n  {"text": \n]\n')
    ds, problems = read_dataset(f)
    p = only_problem(problems)
    assert (p.line, p.field) == (5, None) and "malformed JSON" in p.message
    assert [r.line for r in ds.records] == [2, 3]


def test_forced_type_reports_records_lacking_its_fields(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": "b"}])
    ds, problems = read_dataset(f, type="prompt_completion")
    assert at(problems) == [(str(f), 1, "prompt"), (str(f), 1, "completion"),
                            (str(f), 2, "prompt"), (str(f), 2, "completion")]
    assert ds.type == "prompt_completion"


def test_unknown_layout_is_a_problem(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"foo": 1, "bar": 2}])
    ds, problems = read_dataset(f)
    p = only_problem(problems)
    assert (p.line, p.field) == (1, None) and "bar, foo" in p.message
    assert ds.type == "unknown"


def test_unknown_type_name_raises_with_suggestion(tmp_path):
    with pytest.raises(TunesmithError, match="did you mean 'preference'"):
        read_dataset(tmp_path / "x.jsonl", type="preferance")
    ds, _ = read_dataset(write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}]), type="Prompt-Only")
    assert ds.type == "prompt_only"


def test_load_dataset_raises_data_error_and_accept(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "a"}])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a"}, {"text": 3}])
    assert load_dataset(good).rows() == [{"text": "a"}]
    with pytest.raises(DataError) as err:
        load_dataset(bad)
    assert err.value.problems[0].line == 2
    with pytest.raises(TunesmithError) as err:
        load_dataset(good, accept=("prompt_completion", "messages"))
    assert str(err.value) == (f"{good}: dataset type 'text' is not accepted here "
                              "(accepted: prompt_completion, messages); convert the file or pass --type")


# --- layouts -------------------------------------------------------------------------------

LAYOUT_CASES = [
    ({"instruction": "Translate", "input": "bonjour", "output": "hello"}, "prompt_completion", "Alpaca",
     {"prompt": "Translate\n\nbonjour", "completion": "hello", "system": None}),
    ({"instruction": "Say hi", "input": "", "output": "hi"}, "prompt_completion", "Alpaca",
     {"prompt": "Say hi", "completion": "hi", "system": None}),
    ({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"},
                        {"from": "gpt", "value": "a"}]}, "messages", "ShareGPT",
     {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                   {"role": "assistant", "content": "a"}]}),
    (GOOD_CHAT, "messages", "OpenAI", GOOD_CHAT),
    ({"prompt": "p", "completion": "c", "id": 7}, "prompt_completion", "Prompt/completion",
     {"prompt": "p", "completion": "c", "system": None, "id": 7}),
    ({"question": "q", "answer": "a"}, "prompt_completion", "Question/answer",
     {"prompt": "q", "completion": "a", "system": None}),
    ({"input": "i", "output": "o"}, "prompt_completion", "Input/output",
     {"prompt": "i", "completion": "o", "system": None}),
    ({"prompt": "p", "chosen": "good", "rejected": "bad", "system": "s"}, "preference", "Preference",
     {"prompt": "p", "chosen": "good", "rejected": "bad", "system": "s"}),
    ({"text": "great", "label": 1}, "classification", "text -> text, label", {"text": "great", "label": "1"}),
    ({"sentence": "bad", "label": "neg"}, "classification", "sentence -> text", {"text": "bad", "label": "neg"}),
    ({"prompt": "2+2?", "answer": "4", "fact_id": "f1"}, "prompt_only", "Prompt-only",
     {"prompt": "2+2?", "system": None, "answer": "4", "fact_id": "f1"}),
    ({"text": "corpus", "title": "T", "id": 1}, "text", "Text layout", {"text": "corpus", "title": "T", "id": 1}),
]


@pytest.mark.parametrize("record, type_, layout, row", LAYOUT_CASES)
def test_layout_recognition(tmp_path, record, type_, layout, row):
    f = write_jsonl(tmp_path / "d.jsonl", [record])
    ds, problems = read_dataset(f)
    assert problems == []
    assert ds.type == type_ and layout in ds.layout and "->" in ds.layout
    assert ds.rows() == [row]


def test_forced_type_overrides_detection(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"question": "2+2?", "answer": "4"}])
    ds, problems = read_dataset(f, type="prompt_only")
    assert problems == [] and ds.type == "prompt_only"
    assert ds.rows() == [{"prompt": "2+2?", "system": None, "answer": "4"}]
    assert set(DATASET_TYPES) == {"text", "prompt_completion", "messages", "preference", "prompt_only",
                                  "classification"}


# --- formats -------------------------------------------------------------------------------

def test_json_list_gets_line_numbers(tmp_path):
    f = tmp_path / "d.json"
    f.write_text(json.dumps([{"text": "a"}, {"text": "b\nc"}, {"text": "d"}], indent=2))
    ds, problems = read_dataset(f)
    assert problems == []
    assert [r.line for r in ds.records] == [2, 5, 8]
    assert [r.data["text"] for r in ds.records] == ["a", "b\nc", "d"]


def test_json_object_with_data_list(tmp_path):
    f = tmp_path / "d.json"
    f.write_text('{"version": 1,\n "data": [\n  {"prompt": "p", "completion": "c"},\n  7\n]}\n')
    ds, problems = read_dataset(f)
    assert [r.line for r in ds.records] == [3]
    assert at(problems) == [(str(f), 4, None)]


def test_csv_rows_lines_and_json_list_cells(tmp_path):
    f = tmp_path / "d.csv"
    msgs = json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    f.write_text('messages,id\n"' + msgs.replace('"', '""') + '",1\n\n"' + msgs.replace('"', '""') + '",2\n')
    ds, problems = read_dataset(f)
    assert problems == [] and ds.type == "messages"
    assert [r.line for r in ds.records] == [2, 4]
    assert ds.rows()[0]["messages"][1] == {"role": "assistant", "content": "yo"}
    assert ds.rows()[0]["id"] == "1"


def test_csv_multiline_cell_and_bad_row(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text('prompt,completion\n"line one\nline two",done\nonly-one-cell\nok,fine\n')
    ds, problems = read_dataset(f)
    assert [r.line for r in ds.records] == [2, 5]
    assert ds.rows()[0]["prompt"] == "line one\nline two"
    assert at(problems) == [(str(f), 4, None)]


def test_csv_unbalanced_quote_is_reported_at_the_row_start(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text('text\nfine\n"unterminated\nmore\n')
    ds, problems = read_dataset(f)
    p = only_problem(problems)
    assert (p.file, p.line, p.field) == (str(f), 3, None) and "malformed CSV" in p.message
    assert [r.line for r in ds.records] == [2]


def test_tsv(tmp_path):
    f = tmp_path / "d.tsv"
    f.write_text("text\tlabel\ngood film\tpos\nbad film\tneg\n")
    ds, problems = read_dataset(f)
    assert problems == [] and ds.type == "classification"
    assert ds.rows() == [{"text": "good film", "label": "pos"}, {"text": "bad film", "label": "neg"}]


def test_parquet_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", "c"], "completion": ["x", None, "z"]}), f)
    ds, problems = read_dataset(f)
    assert ds.type == "prompt_completion" and [r.line for r in ds.records] == [1, 3]
    assert at(problems) == [(str(f), 2, "completion")]


def test_txt_and_md_files(tmp_path):
    for name in ("notes.txt", "notes.md"):
        f = tmp_path / name
        f.write_text("# Title\n\nSome domain text.\n")
        ds, problems = read_dataset(f)
        assert problems == [] and ds.type == "text" and ds.layout.startswith("Text layout")
        assert [(r.file, r.line) for r in ds.records] == [(str(f), 1)]
        assert ds.rows()[0]["text"].startswith("# Title")


def test_directory_of_text_files(tmp_path):
    root = tmp_path / "corpus"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "b" / "deep" / "z.md").write_text("zed")
    (root / "a.txt").write_text("alpha")
    (root / "b" / "c.txt").write_text("charlie")
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / "empty.txt").write_text("  ")
    ds, problems = read_dataset(root)
    assert [r.data["source"] for r in ds.records] == ["a.txt", "b/c.txt", "b/deep/z.md"]
    assert [r.data["text"] for r in ds.records] == ["alpha", "charlie", "zed"]
    assert at(problems) == [(str(root / "empty.txt"), 1, "text")]
    assert ds.notes and "image.png" in ds.notes[0]
    assert ds.type == "text" and len(ds.files) == 4


def test_file_sha256_for_file_and_directory(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    assert file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    root = tmp_path / "dir"
    root.mkdir()
    (root / "x.txt").write_text("x")
    (root / "y.txt").write_text("y")
    before = file_sha256(root)
    assert before == file_sha256(root)
    (root / "y.txt").write_text("changed")
    assert file_sha256(root) != before


# --- Anthropic HH preference dialogues ----------------------------------------------------------

def test_hh_dialogues_become_prompt_context_and_two_answers(tmp_path):
    from tunesmith.data.templating import to_messages

    shared = "\n\nHuman: Hi, can you help me bake bread?\n\nAssistant: Sure. What kind?\n\nHuman: Sourdough.\n\nAssistant:"
    f = write_jsonl(tmp_path / "hh.jsonl", [
        {"chosen": shared + " Start with a lively starter.", "rejected": shared + " Buy some bread."},
        {"chosen": "\n\nHuman: Tell me a joke\n\nAssistant: Why did the owl...", "rejected": "\n\nHuman: Tell me a joke\n\nAssistant: No."},
        {"chosen": shared + " Same.", "rejected": shared + " Same."},                       # line 3: identical answers
        {"chosen": shared + " A.", "rejected": "\n\nHuman: Something else\n\nAssistant: B."},  # line 4: different dialogues
        {"chosen": "no dialogue here", "rejected": "nor here"},                              # line 5
    ])
    ds, problems = read_dataset(f)
    assert ds.type == "preference" and len(ds) == 2
    first = ds.rows()[0]
    assert first["prompt"] == "Sourdough." and first["chosen"] == "Start with a lively starter." and first["rejected"] == "Buy some bread."
    assert first["context"] == [{"role": "user", "content": "Hi, can you help me bake bread?"}, {"role": "assistant", "content": "Sure. What kind?"}]
    assert ds.rows()[1]["context"] == [] and ds.rows()[1]["prompt"] == "Tell me a joke"
    assert [(p.line, p.field) for p in problems] == [(3, "rejected"), (4, "rejected"), (5, "chosen")]
    assert "identical" in problems[0].message and "same dialogue" in problems[1].message
    # the earlier turns come before the prompt in the chat the model sees
    msgs = to_messages(first, "preference", "Be kind.")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"] and msgs[-1]["content"] == "Sourdough."


def test_preference_context_must_be_turns(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b", "context": [{"role": "robot", "content": "x"}]}])
    _, problems = read_dataset(f)
    p = only_problem(problems)
    assert (p.line, p.field) == (1, "context") and "role" in p.message
