"""Atomic writes: the target holds the old content or the whole new one, never a part, and no
temporary file is left behind when the writer fails."""

import json

import pytest

from tunesmith.atomic import write_atomic, write_json_atomic, write_jsonl_atomic, write_text_atomic


def test_writes_whole_files_and_creates_folders(tmp_path):
    write_jsonl_atomic(tmp_path / "a" / "b.jsonl", [{"q": "café"}, {"q": 2}])
    assert (tmp_path / "a" / "b.jsonl").read_text(encoding="utf-8") == '{"q": "café"}\n{"q": 2}\n'
    write_json_atomic(tmp_path / "c.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2]}
    write_atomic(tmp_path / "d.bin", lambda f: f.write(b"\x00\x01"), binary=True)
    assert (tmp_path / "d.bin").read_bytes() == b"\x00\x01"


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "data.jsonl"
    write_text_atomic(target, "old\n")

    def rows():
        yield {"ok": 1}
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(target, rows())
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]

    def half_then_fail(fh):  # the temporary file exists and holds part of the data when this raises
        fh.write("new, part")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]
