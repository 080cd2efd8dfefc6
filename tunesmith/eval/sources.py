"""Read evaluation records from the file shapes real benchmarks come in: anything the data
layer reads (JSONL, JSON, CSV/TSV with header, Parquet), headerless TSV, a JSON object keyed by
id, and line-aligned text files (source and reference)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tunesmith.data.io import MAX_NESTING, nesting_depth, read_raw
from tunesmith.errors import DataError, Problem, TunesmithError


def _lines(path: str) -> list[str]:
    # split on "\n" only: splitlines() also breaks on form feeds and Unicode separators that can
    # occur inside a sentence, which would misalign line-aligned source and reference files.
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TunesmithError(f"{path}: cannot read ({e})") from e
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines


def _read_lines(cfg) -> list[dict]:
    src, ref = _lines(cfg.data), _lines(cfg.reference_file)
    if len(src) != len(ref):
        raise TunesmithError(f"{cfg.reference_file}: {len(ref)} lines but {cfg.data} has {len(src)}; the files must be line-aligned")
    return [{"id": str(i + 1), "text": s, "reference": r} for i, (s, r) in enumerate(zip(src, ref))]


def _read_tsv(cfg) -> list[dict]:
    out = []
    for i, line in enumerate(_lines(cfg.data), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != len(cfg.columns):
            raise DataError([Problem(cfg.data, i, None, f"{len(parts)} tab-separated columns, expected {len(cfg.columns)} ({', '.join(cfg.columns)})", "fix the row or the `columns` setting")])
        out.append({"id": str(i), **dict(zip(cfg.columns, parts))})
    return out


def _read_json_dict(cfg) -> list[dict]:
    try:
        obj = json.loads(Path(cfg.data).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TunesmithError(f"{cfg.data}: cannot read as JSON ({e})") from e
    except RecursionError:
        obj = None  # too deep for the decoder: reported as too deep below
    if obj is None or nesting_depth(obj) > MAX_NESTING + 1:  # +1: the object holding the records
        raise TunesmithError(f"{cfg.data}: JSON nested more than {MAX_NESTING} levels deep; flatten the records")
    if not isinstance(obj, dict):
        raise TunesmithError(f"{cfg.data}: format json_dict expects a JSON object of records keyed by id")
    bad = next((k for k, v in obj.items() if not isinstance(v, dict)), None)
    if bad is not None:
        raise TunesmithError(f"{cfg.data}: record {bad!r} is a JSON {type(obj[bad]).__name__}, not an object; "
                             "format json_dict expects {id: {field: value, ...}, ...}")
    keep = None
    if cfg.ids_file:
        try:
            ids = json.loads(Path(cfg.ids_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise TunesmithError(f"{cfg.ids_file}: cannot read the ids file as JSON ({e})") from e
        keep = {str(x) for x in (ids if isinstance(ids, list) else ids.keys())}  # JSON object keys are strings
    return [{"id": str(k), **v} for k, v in obj.items() if keep is None or k in keep]


def read_records(cfg) -> list[dict]:
    """All records of the eval data as plain dicts (each with an `id`), shuffled/limited per cfg."""
    if cfg.format == "lines":
        recs = _read_lines(cfg)
    elif cfg.format == "tsv":
        recs = _read_tsv(cfg)
    elif cfg.format == "json_dict":
        recs = _read_json_dict(cfg)
    else:
        raw = read_raw(cfg.data)
        if raw.problems:
            raise DataError(raw.problems)
        recs = [{"id": str(r.data.get("id", r.data.get("task_id", r.line))), **r.data} for r in raw.records]
    if not recs:
        raise TunesmithError(f"{cfg.data}: no records to evaluate")
    if cfg.shuffle:
        random.Random(cfg.seed).shuffle(recs)
    return recs[: cfg.limit] if cfg.limit else recs
