"""The `tunesmith data check` report: what a dataset is and what is wrong with it.

Reads a dataset (and optionally its eval file), then reports the detected type and
layout, record count, length statistics, exact and near duplicates, train/eval overlap,
label balance and every problem, as `file:line: field: message (fix)`. Records are
located as "file:line" strings so the report is unambiguous for directories, where every
text file's record is line 1.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tunesmith.data.dedup import find_duplicates, find_overlap
from tunesmith.data.schemas import Dataset, prompt_side_text, read_dataset, record_text
from tunesmith.errors import Problem

TokenCounter = Callable[[list[dict], str], list[int]]  # (normalised rows, dataset type) -> token counts
WORDS_UNIT = "words (no tokenizer given)"
NEAR_THRESHOLD = 0.85
EXAMPLES = 5  # duplicates / overlaps shown per section in format()
IMBALANCE_RATIO = 3.0


@dataclass
class CheckReport:
    """Everything `data check` found. Locations are "file:line" strings."""

    path: str
    type: str
    layout: str
    n_records: int
    problems: list[Problem]
    length_stats: dict | None = None
    exact_duplicates: list[list[str]] = field(default_factory=list)
    near_duplicates: list[tuple[str, str, float]] = field(default_factory=list)
    overlap: dict | None = None  # {"exact": [(train, eval)], "near": [(train, eval, sim)]}
    label_counts: dict | None = None
    eval_report: CheckReport | None = None
    notes: list[str] = field(default_factory=list)
    type_forced: bool = False

    @property
    def ok(self) -> bool:
        """No problems in the train file nor in the eval file."""
        return not self.problems and (self.eval_report is None or self.eval_report.ok)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (tuples become lists, problems carry their rendered text)."""
        return {
            "path": self.path, "type": self.type, "layout": self.layout, "type_forced": self.type_forced,
            "n_records": self.n_records, "ok": self.ok,
            "problems": [{"file": p.file, "line": p.line, "field": p.field, "message": p.message,
                          "fix": p.fix, "text": str(p)} for p in self.problems],
            "length_stats": self.length_stats,
            "exact_duplicates": [list(g) for g in self.exact_duplicates],
            "near_duplicates": [list(p) for p in self.near_duplicates],
            "overlap": None if self.overlap is None else {k: [list(p) for p in v] for k, v in self.overlap.items()},
            "label_counts": self.label_counts,
            "notes": list(self.notes),
            "eval_report": self.eval_report.to_dict() if self.eval_report else None,
        }

    def format(self) -> str:
        """A readable multi-line report."""
        lines = _format_body(self)
        if self.eval_report is not None:
            lines.append("")
            lines.append("Eval file:")
            lines.extend("  " + line for line in _format_body(self.eval_report))
        n = len(self.problems) + (len(self.eval_report.problems) if self.eval_report else 0)
        lines.append("")
        lines.append("Result: OK" if self.ok else f"Result: {n} problem(s); fix them before training")
        return "\n".join(lines)


def _format_body(r: CheckReport) -> list[str]:
    how = "forced by --type" if r.type_forced else "detected"
    lines = [f"Dataset: {r.path}", f"  type:    {r.type} ({how})", f"  layout:  {r.layout}",
             f"  records: {r.n_records} valid, {len(r.problems)} problem(s)"]
    lines.extend(f"  {n}" if n.startswith("warning:") else f"  note: {n}" for n in r.notes)
    s = r.length_stats
    if s:
        over = f"; {s['n_over_max']} over max_length {s['max_length']}" if s.get("max_length") else ""
        lines.append(f"  length in {s['unit']}: min {s['min']}, median {s['median']:g}, "
                     f"p95 {s['p95']}, max {s['max']}{over}")
    lines.extend(_format_duplicates(r))
    lines.extend(_format_labels(r.label_counts))
    if r.problems:
        lines.append(f"  problems ({len(r.problems)}):")
        lines.extend(f"    {p}" for p in r.problems)
    return lines


def _format_duplicates(r: CheckReport) -> list[str]:
    lines = []
    if r.exact_duplicates:
        extra = sum(len(g) - 1 for g in r.exact_duplicates)
        lines.append(f"  exact duplicates: {len(r.exact_duplicates)} group(s), {extra} redundant record(s)")
        lines.extend("    " + " = ".join(g[:EXAMPLES]) + (" = ..." if len(g) > EXAMPLES else "")
                     for g in r.exact_duplicates[:EXAMPLES])
    else:
        lines.append("  exact duplicates: none")
    if r.near_duplicates:
        lines.append(f"  near duplicates (Jaccard >= {NEAR_THRESHOLD}): {len(r.near_duplicates)} pair(s)")
        lines.extend(f"    {a} ~ {b} ({sim:.2f})" for a, b, sim in r.near_duplicates[:EXAMPLES])
    else:
        lines.append("  near duplicates: none")
    if r.overlap is not None:
        exact, near = r.overlap["exact"], r.overlap["near"]
        lines.append(f"  train/eval overlap (prompt side): {len(exact)} exact, {len(near)} near")
        lines.extend(f"    {a} = {b}" for a, b in exact[:EXAMPLES])
        lines.extend(f"    {a} ~ {b} ({sim:.2f})" for a, b, sim in near[:EXAMPLES])
        if exact or near:
            lines.append("    warning: eval prompts seen in training inflate eval scores; remove them from one side")
    return lines


def _format_labels(counts: dict | None) -> list[str]:
    if not counts:
        return []
    total = sum(counts.values())
    lines = [f"  labels: {len(counts)} class(es)"]
    lines.extend(f"    {label}: {n} ({n / total:.1%})" for label, n in counts.items())
    (big, n_big), (small, n_small) = max(counts.items(), key=lambda kv: kv[1]), min(counts.items(), key=lambda kv: kv[1])
    if n_big > IMBALANCE_RATIO * n_small:
        lines.append(f"    warning: classes are imbalanced: '{big}' has {n_big / n_small:.1f}x the records of "
                     f"'{small}'; consider rebalancing or class weights")
    return lines


def _length_stats(lengths: list[int], unit: str, max_length: int | None) -> dict | None:
    if not lengths:
        return None
    ordered = sorted(lengths)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest-rank percentile
    return {"min": ordered[0], "median": statistics.median(ordered), "p95": p95, "max": ordered[-1],
            "n_over_max": sum(1 for n in lengths if max_length is not None and n > max_length),
            "max_length": max_length, "unit": unit}


def _locations(ds: Dataset) -> list[str]:
    return [f"{r.file}:{r.line}" if r.line is not None else r.file for r in ds.records]


def _report(path: str | Path, type: str | None, ds: Dataset, problems: list[Problem],
            token_counter: TokenCounter | None, max_length: int | None) -> CheckReport:
    """Analyse one already-read dataset (no eval)."""
    rows, locs = ds.rows(), _locations(ds)
    texts = [record_text(row, ds.type) for row in rows]
    if token_counter is not None:
        lengths, unit = [int(n) for n in token_counter(rows, ds.type)], "tokens"
        if len(lengths) != len(rows):
            raise ValueError(f"token_counter returned {len(lengths)} counts for {len(rows)} records")
    else:
        lengths, unit = [len(t.split()) for t in texts], WORDS_UNIT
    exact, near = find_duplicates(texts, NEAR_THRESHOLD)
    labels = None
    if ds.type == "classification":
        labels = dict(Counter(row["label"] for row in rows).most_common())
    return CheckReport(
        path=str(path), type=ds.type, layout=ds.layout, n_records=len(ds), problems=problems,
        length_stats=_length_stats(lengths, unit, max_length),
        exact_duplicates=[[locs[i] for i in g] for g in exact],
        near_duplicates=[(locs[i], locs[j], sim) for i, j, sim in near],
        label_counts=labels, notes=list(ds.notes), type_forced=type is not None)


def check_dataset(path: str | Path, type: str | None = None, *, token_counter: TokenCounter | None = None,
                  max_length: int | None = None, eval_path: str | Path | None = None) -> CheckReport:
    """Check a dataset (and its eval file): never raises for bad content, only for an
    unknown `type` name. `token_counter` maps normalised records to token counts; without
    it lengths are whitespace words."""
    ds, problems = read_dataset(path, type)
    report = _report(path, type, ds, problems, token_counter, max_length)
    if eval_path is None:
        return report
    # The eval file is detected on its own: an RL eval set may be prompt_only while the
    # train set is prompt_completion; overlap compares prompt sides, which both have.
    eval_ds, eval_problems = read_dataset(eval_path, type)
    report.eval_report = _report(eval_path, type, eval_ds, eval_problems, token_counter, max_length)
    train_prompts = [prompt_side_text(row, ds.type) for row in ds.rows()]
    eval_prompts = [prompt_side_text(row, eval_ds.type) for row in eval_ds.rows()]
    exact, near = find_overlap(train_prompts, eval_prompts, NEAR_THRESHOLD)
    train_locs, eval_locs = _locations(ds), _locations(eval_ds)
    report.overlap = {"exact": [(train_locs[i], eval_locs[j]) for i, j in exact],
                      "near": [(train_locs[i], eval_locs[j], sim) for i, j, sim in near]}
    report.notes.extend(_unseen_labels(ds, eval_ds, eval_locs))
    return report


def _unseen_labels(ds: Dataset, eval_ds: Dataset, eval_locs: list[str]) -> list[str]:
    """A warning per eval label that no training record has: no model trained on this file
    can predict it, so its eval items are lost points that say nothing about training."""
    if ds.type != "classification" or eval_ds.type != "classification":
        return []
    seen = {row["label"] for row in ds.rows()}
    unseen: dict[str, list[str]] = {}
    for row, loc in zip(eval_ds.rows(), eval_locs):
        if row["label"] not in seen:
            unseen.setdefault(row["label"], []).append(loc)
    return [f"warning: eval label {label!r} never occurs in training ({len(locs)} eval record(s), e.g. {locs[0]}); "
            "add training examples of it or drop it from the eval set" for label, locs in unseen.items()]
