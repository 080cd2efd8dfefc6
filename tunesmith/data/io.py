"""File readers: turn a dataset path into raw records (plain dicts) with their line numbers.

This module knows about file formats only (JSONL, JSON, CSV/TSV, Parquet, text files and
directories of them); it does not know what the fields mean. Every defect it finds is
returned as a `Problem` rather than raised, so one pass over a file lists all of them:
`tunesmith data check` shows the full list and `load_dataset` refuses the file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import Problem

DEFAULT_MAX_LINE_BYTES = 10_000_000
JSONL_SUFFIXES = (".jsonl", ".ndjson")
TEXT_SUFFIXES = (".txt", ".md")
SUPPORTED = ".jsonl, .json, .csv, .tsv, .parquet, .txt, .md or a directory of .txt/.md files"
_SKIP_CHUNK = 1 << 20  # bytes read at a time while skipping the tail of an over-long line
_MAX_UTF8_REPORTS = 50  # beyond this a file is clearly not UTF-8; more lines add nothing
_WS = re.compile(r"[ \t\n\r]*")
# Real records are a few levels deep; thousands of levels exhaust Python's recursion limit in
# the JSON decoder and in everything that walks a record later (copies, JSON writes).
MAX_NESTING = 100
_DEEP_FIX = f"flatten it to at most {MAX_NESTING} levels of lists and objects"


@dataclass
class RawRecord:
    """One record as read from disk, before layout recognition."""

    data: dict[str, Any]
    file: str
    line: int | None


@dataclass
class RawRead:
    """Everything a reader found: records, problems, the files it read and notes."""

    records: list[RawRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_raw(path: str | Path, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> RawRead:
    """Read any supported path into raw records; never raises for bad content."""
    p = Path(path)
    name = str(path)
    out = RawRead()
    if not p.exists():
        out.problems.append(Problem(name, None, None, "file not found", "check the path"))
        return out
    if p.is_dir():
        _read_directory(p, name, max_line_bytes, out)
        return out
    if not p.is_file():  # a device or a pipe (/dev/zero): reading it may never end
        out.problems.append(Problem(name, None, None, "not a regular file", "point at a data file"))
        return out
    suffix = p.suffix.lower()
    readers = {".json": _read_json, ".csv": _read_csv, ".tsv": _read_csv, ".parquet": _read_parquet}
    readers.update({s: _read_jsonl for s in JSONL_SUFFIXES})
    readers.update({s: _read_text_file for s in TEXT_SUFFIXES})
    reader = readers.get(suffix)
    if reader is None:
        what = f"unsupported file extension '{suffix}'" if suffix else "file has no extension"
        out.problems.append(Problem(name, None, None, what, f"use {SUPPORTED}"))
        return out
    out.files.append(name)
    try:
        reader(p, name, max_line_bytes, out)
    except OSError as err:  # unreadable file, permissions, a device: report, never trace back
        out.problems.append(Problem(name, None, None, f"cannot read file: {err.strerror or err}", None))
    if not out.records and not out.problems:
        out.problems.append(Problem(name, None, None, "file is empty", "add at least one record"))
    return out


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, or of every file of a directory (relative path + content, sorted)."""
    p = Path(path)
    digest = hashlib.sha256()
    if p.is_dir():
        for f in sorted((f for f in p.rglob("*") if f.is_file()), key=lambda f: f.relative_to(p).as_posix()):
            # Names are hashed too, so renaming or moving a file changes the fingerprint.
            digest.update(f.relative_to(p).as_posix().encode() + b"\0")
            digest.update(_sha256_bytes(f).encode() + b"\n")
        return digest.hexdigest()
    return _sha256_bytes(p)


def _sha256_bytes(p: Path) -> str:
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_SKIP_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _kind(value: Any) -> str:
    """JSON-ish name of a value's type, for messages a user can act on."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def nesting_depth(value: Any, limit: int = MAX_NESTING) -> int:
    """Levels of lists/objects in `value`, counted without recursion; stops past `limit`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple, dict)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def too_deep(name: str, line: int | None, fld: str | None = None) -> Problem:
    return Problem(name, line, fld, f"value is nested more than {MAX_NESTING} levels deep", _DEEP_FIX)


def _too_big(name: str, line: int | None, size: int, limit: int, what: str = "line") -> Problem:
    return Problem(name, line, None, f"{what} is {size:,} bytes, over the {limit:,}-byte limit",
                   "split or shorten it, or raise max_line_bytes")


def _utf8_problem(name: str, line: int, col: int, byte: int) -> Problem:
    return Problem(name, line, None, f"invalid UTF-8 (byte 0x{byte:02x} at column {col})",
                   "re-save the file as UTF-8")


# --- JSONL -------------------------------------------------------------------------------

def _read_jsonl(p: Path, name: str, limit: int, out: RawRead) -> None:
    """One object per line. Read in binary with a bounded readline so a huge line is never
    held in memory whole: its first `limit + 1` bytes prove it is too long, the rest is
    skipped in chunks."""
    with p.open("rb") as fh:
        lineno = 0
        while True:
            raw = fh.readline(limit + 1)
            if not raw:
                break
            lineno += 1
            if len(raw) > limit and not raw.endswith(b"\n"):
                size = len(raw) + _skip_rest_of_line(fh)
                out.problems.append(_too_big(name, lineno, size, limit))
                continue
            _parse_jsonl_line(raw, lineno, name, out)


def _skip_rest_of_line(fh: io.BufferedReader) -> int:
    skipped = 0
    while True:
        chunk = fh.readline(_SKIP_CHUNK)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def _parse_jsonl_line(raw: bytes, lineno: int, name: str, out: RawRead) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        out.problems.append(_utf8_problem(name, lineno, err.start + 1, raw[err.start]))
        return
    if lineno == 1:
        text = text.lstrip("\ufeff")  # a BOM from Windows editors is not content
    if not text.strip():
        return
    try:
        obj = json.loads(text.rstrip("\r\n"))  # without the newline, errors point into the line
    except json.JSONDecodeError as err:
        out.problems.append(Problem(name, lineno, None, f"malformed JSON: {err.msg} (column {err.colno})",
                                    "each line must be one complete JSON object"))
        return
    except RecursionError:
        out.problems.append(too_deep(name, lineno))
        return
    except ValueError as err:  # a valid-looking value Python refuses, e.g. an integer of 5,000 digits
        out.problems.append(Problem(name, lineno, None, f"unreadable JSON value: {str(err).split(';')[0]}", "shorten or quote the value"))
        return
    if nesting_depth(obj) > MAX_NESTING:
        out.problems.append(too_deep(name, lineno))
        return
    if not isinstance(obj, dict):
        out.problems.append(Problem(name, lineno, None, f"line is a JSON {_kind(obj)}, not an object",
                                    'wrap it as an object, e.g. {"text": ...}'))
        return
    out.records.append(RawRecord(obj, name, lineno))


# --- whole-file decoding (JSON, CSV, text) ------------------------------------------------

def _decode(data: bytes, name: str, out: RawRead) -> tuple[str, set[int]]:
    """Decode UTF-8, reporting every bad byte's line; returns text (bad bytes replaced) and
    the set of bad line numbers so readers can drop records that span them."""
    try:
        return data.decode("utf-8").lstrip("\ufeff"), set()
    except UnicodeDecodeError:
        pass
    parts: list[str] = []
    bad: set[int] = set()
    pos = 0
    while pos < len(data):
        try:
            parts.append(data[pos:].decode("utf-8"))
            break
        except UnicodeDecodeError as err:
            at = pos + err.start
            parts.append(data[pos:at].decode("utf-8"))
            line = data.count(b"\n", 0, at) + 1
            if line not in bad and len(bad) < _MAX_UTF8_REPORTS:
                col = at - (data.rfind(b"\n", 0, at) + 1) + 1
                out.problems.append(_utf8_problem(name, line, col, data[at]))
            bad.add(line)
            parts.append("\ufffd")
            pos = pos + err.end
            if len(bad) >= _MAX_UTF8_REPORTS:
                parts.append(data[pos:].decode("utf-8", errors="replace"))
                break
    return "".join(parts).lstrip("\ufeff"), bad


class _LineCounter:
    """Line number of a character offset, counted incrementally as offsets grow."""

    def __init__(self, text: str):
        self.text, self.pos, self.line = text, 0, 1

    def at(self, pos: int) -> int:
        if pos < self.pos:
            self.pos, self.line = 0, 1
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


# --- JSON ----------------------------------------------------------------------------------

class _JsonStop(Exception):
    """Raised inside the JSON scanner when the document cannot be read any further."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def _read_json(p: Path, name: str, limit: int, out: RawRead) -> None:
    """A list of objects, or an object with a `data` list. The list is scanned element by
    element so each record gets the line where it starts and a syntax error late in the
    file does not hide the records (and their problems) before it."""
    text, bad = _decode(p.read_bytes(), name, out)
    pos = _WS.match(text, 0).end()
    if pos == len(text):
        return
    scanner = _JsonScanner(text, name, limit, bad, out)
    try:
        if text[pos] == "[":
            end = scanner.array(pos)
        elif text[pos] == "{":
            end, found = scanner.object_with_data(pos)
            if not found:
                raise _JsonStop(_no_data_problem(name, text, end))
        else:
            value, _ = scanner.value(pos)
            raise _JsonStop(Problem(name, 1, None, f"top-level JSON value is a {_kind(value)}",
                                    "make the file a JSON list of objects, or use .jsonl"))
        end = _WS.match(text, end).end()
        if end != len(text):
            raise _JsonStop(scanner.syntax(end, "extra data after the JSON document"))
    except _JsonStop as stop:
        out.problems.append(stop.problem)


def _no_data_problem(name: str, text: str, end: int) -> Problem:
    if _WS.match(text, end).end() != len(text):  # `{...}\n{...}`: JSON Lines saved as .json
        return Problem(name, 1, None, "file holds several JSON objects, not one JSON document",
                       "if it is JSON Lines (one object per line), rename it to .jsonl")
    return Problem(name, 1, "data", "top-level JSON object has no 'data' list",
                   'make the file a JSON list of objects, or put them under "data"')


class _JsonScanner:
    def __init__(self, text: str, name: str, limit: int, bad: set[int], out: RawRead):
        self.text, self.name, self.limit, self.bad, self.out = text, name, limit, bad, out
        self.decoder = json.JSONDecoder()
        self.lines = _LineCounter(text)

    def syntax(self, pos: int, msg: str) -> Problem:
        line = self.text.count("\n", 0, pos) + 1
        col = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return Problem(self.name, line, None, f"malformed JSON: {msg} (column {col})", "fix the JSON syntax")

    def value(self, pos: int) -> tuple[Any, int]:
        try:
            return self.decoder.raw_decode(self.text, pos)
        except json.JSONDecodeError as err:
            raise _JsonStop(Problem(self.name, err.lineno, None, f"malformed JSON: {err.msg} (column {err.colno})",
                                    "fix the JSON syntax")) from None
        except ValueError as err:  # e.g. an integer of 5,000 digits
            raise _JsonStop(Problem(self.name, self.lines.at(pos), None, f"unreadable JSON value: {str(err).split(';')[0]}; stopped reading",
                                    "shorten or quote the value")) from None
        except RecursionError:  # the decoder recurses once per level; the rest is unreadable
            raise _JsonStop(Problem(self.name, self.lines.at(pos), None,
                                    f"value is nested too deeply to read (over {MAX_NESTING} levels); stopped reading",
                                    _DEEP_FIX)) from None

    def _expect(self, pos: int, chars: str, what: str) -> int:
        pos = _WS.match(self.text, pos).end()
        if pos >= len(self.text) or self.text[pos] not in chars:
            raise _JsonStop(self.syntax(pos, f"expected {what}"))
        return pos

    def array(self, pos: int) -> int:
        """Scan a list of records starting at '['; returns the offset after ']'."""
        pos = _WS.match(self.text, pos + 1).end()
        if pos < len(self.text) and self.text[pos] == "]":
            return pos + 1
        while True:
            pos = _WS.match(self.text, pos).end()
            obj, end = self.value(pos)
            self._add(obj, pos, end)
            pos = self._expect(end, ",]", "',' or ']'")
            if self.text[pos] == "]":
                return pos + 1
            pos += 1

    def _add(self, obj: Any, start: int, end: int) -> None:
        line = self.lines.at(start)
        last = line + self.text.count("\n", start, end)
        if any(n in self.bad for n in range(line, last + 1)):
            return  # its invalid UTF-8 is already reported
        if end - start > self.limit // 4 and len(self.text[start:end].encode()) > self.limit:
            self.out.problems.append(_too_big(self.name, line, len(self.text[start:end].encode()), self.limit, "record"))
        elif not isinstance(obj, dict):
            self.out.problems.append(Problem(self.name, line, None, f"record is a JSON {_kind(obj)}, not an object",
                                             'make every list element an object, e.g. {"text": ...}'))
        elif nesting_depth(obj) > MAX_NESTING:
            self.out.problems.append(too_deep(self.name, line))
        else:
            self.out.records.append(RawRecord(obj, self.name, line))

    def object_with_data(self, pos: int) -> tuple[int, bool]:
        """Scan `{..., "data": [...], ...}`, reading records from the `data` list; returns
        the offset after '}' and whether a `data` list was found."""
        found = False
        pos = _WS.match(self.text, pos + 1).end()
        if pos < len(self.text) and self.text[pos] == "}":
            pos += 1
        else:
            while True:
                pos = self._expect(pos, '"', "a quoted key")
                key, pos = self.value(pos)
                pos = _WS.match(self.text, self._expect(pos, ":", "':'") + 1).end()
                if key == "data" and pos < len(self.text) and self.text[pos] == "[":
                    pos, found = self.array(pos), True
                else:
                    _, pos = self.value(pos)
                pos = self._expect(pos, ",}", "',' or '}'")
                pos += 1
                if self.text[pos - 1] == "}":
                    break
        return pos, found


# --- CSV / TSV -----------------------------------------------------------------------------

def _read_csv(p: Path, name: str, limit: int, out: RawRead) -> None:
    """Header row, then one record per row; cells are strings (empty cell = "")."""
    text, bad = _decode(p.read_bytes(), name, out)
    delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, limit))  # the default (128 KiB) is far below our limit
    try:
        # strict: an unbalanced quote is an error instead of silently swallowing later rows
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        _csv_rows(reader, name, bad, out)
    finally:
        csv.field_size_limit(old_limit)


def _csv_rows(reader: Any, name: str, bad: set[int], out: RawRead) -> None:
    header: list[str] | None = None
    prev_line = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:  # the reader's state is unreliable after this: stop here
            out.problems.append(Problem(name, prev_line + 1, None, f"malformed CSV: {err}; stopped reading",
                                        "fix the quoting of the row that starts here"))
            return
        start, prev_line = prev_line + 1, reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if any(n in bad for n in range(start, reader.line_num + 1)):
            continue
        if header is None:
            header = [h.strip() for h in row]
            dupes = sorted({h for h in header if header.count(h) > 1})
            if dupes:
                out.problems.append(Problem(name, start, None, f"duplicate column name(s): {', '.join(dupes)}",
                                            "give every column a unique name"))
            continue
        if len(row) != len(header):
            out.problems.append(Problem(name, start, None, f"row has {len(row)} cells, header has {len(header)}",
                                        "check the delimiter and quoting on this row"))
            continue
        out.records.append(RawRecord(dict(zip(header, row)), name, start))


# --- Parquet -------------------------------------------------------------------------------

def _read_parquet(p: Path, name: str, limit: int, out: RawRead) -> None:
    """Columnar file: the `line` of each record is its 1-based row number."""
    try:
        import pyarrow.parquet as pq  # imported here: only parquet users pay for it
    except ImportError:
        out.problems.append(Problem(name, None, None, "reading .parquet needs pyarrow", "pip install pyarrow"))
        return
    try:
        table = pq.read_table(p)
    except Exception as err:  # pyarrow raises several types for corrupt files; report them all
        out.problems.append(Problem(name, None, None, f"cannot read parquet: {err}", "re-export the file"))
        return
    for i, row in enumerate(table.to_pylist(), start=1):
        if nesting_depth(row) > MAX_NESTING:
            out.problems.append(too_deep(name, i))
            continue
        out.records.append(RawRecord(row, name, i))


# --- text files and directories ----------------------------------------------------------

def _read_text_file(p: Path, name: str, limit: int, out: RawRead, source: str | None = None) -> None:
    """One file = one `text` record at line 1."""
    size = p.stat().st_size
    if size > limit:
        out.problems.append(_too_big(name, 1, size, limit, "file"))
        return
    text, bad = _decode(p.read_bytes(), name, out)
    if bad:
        return
    if not text.strip():
        out.problems.append(Problem(name, 1, "text", "file is empty", "add text or remove the file"))
        return
    out.records.append(RawRecord({"text": text, "source": source or p.name}, name, 1))


def _walk(root: Path, name: str, out: RawRead) -> list[Path]:
    """Every regular file under `root`. Path.rglob skips folders it cannot list, symlinked
    folders and broken links without a word; here each is a problem or a note instead."""
    files: list[Path] = []

    def unreadable(err: OSError) -> None:
        where = Path(name) / Path(err.filename).relative_to(root) if err.filename else Path(name)
        out.problems.append(Problem(str(where), None, None, f"cannot read folder: {err.strerror or err}",
                                    "fix its permissions, or move it out of the corpus"))

    for folder, dirs, names in os.walk(root, onerror=unreadable):
        here = Path(folder)
        for d in sorted(dirs):
            if (here / d).is_symlink():
                out.notes.append(f"{Path(name) / (here / d).relative_to(root)}: symlinked folder not followed")
        for n in names:
            f = here / n
            if f.is_file():
                files.append(f)
            elif f.suffix.lower() in TEXT_SUFFIXES:  # a broken link, a pipe, a socket
                out.problems.append(Problem(str(Path(name) / f.relative_to(root)), None, None,
                                            "not a readable regular file (a broken link?)", "fix or remove it"))
    return files


def _read_directory(root: Path, name: str, limit: int, out: RawRead) -> None:
    """Every .txt/.md file under `root`, recursively, sorted by relative path."""
    files = sorted(_walk(root, name, out), key=lambda f: f.relative_to(root).as_posix())
    texts = [f for f in files if f.suffix.lower() in TEXT_SUFFIXES]
    others = [f.relative_to(root).as_posix() for f in files if f.suffix.lower() not in TEXT_SUFFIXES]
    if others:
        shown = ", ".join(others[:5]) + (f", ... ({len(others) - 5} more)" if len(others) > 5 else "")
        out.notes.append(f"{name}: ignored {len(others)} file(s) that are not .txt/.md: {shown}")
    if not texts and not out.problems:
        out.problems.append(Problem(name, None, None, "directory has no .txt or .md files",
                                    "put the corpus in .txt/.md files, or point at a data file"))
        return
    for f in texts:
        fname = str(Path(name) / f.relative_to(root))
        out.files.append(fname)
        try:
            _read_text_file(f, fname, limit, out, source=f.relative_to(root).as_posix())
        except OSError as err:
            out.problems.append(Problem(fname, None, None, f"cannot read file: {err.strerror or err}", None))
