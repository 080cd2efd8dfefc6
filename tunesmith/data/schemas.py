"""Dataset types: recognise a file's layout, validate every record, normalise it.

A user's file arrives in one of many community layouts (Alpaca, ShareGPT, OpenAI chat,
prompt/completion, ...). This module maps each onto one of six dataset types with a fixed
record shape (plain dicts), so trainers and regimens only ever see normalised records.
The layout is recognised from the first parsable record; `type=` forces a type instead.
Every invalid record becomes a `Problem` (file, line, field, message, fix); nothing here
raises for bad content.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tunesmith.data.io import DEFAULT_MAX_LINE_BYTES, MAX_NESTING, _kind, nesting_depth, read_raw, too_deep
from tunesmith.errors import DataError, Problem, TunesmithError

DATASET_TYPES: tuple[str, ...] = (
    "text", "prompt_completion", "messages", "preference", "prompt_only", "classification",
)
ROLES = ("system", "user", "assistant")
UNKNOWN_TYPE = "unknown"  # Dataset.type when no layout could be recognised


@dataclass
class Record:
    """One normalised record and where it came from."""

    data: dict
    file: str
    line: int | None


@dataclass
class Dataset:
    """A validated dataset: its type, its normalised records and the files they came from."""

    type: str
    records: list[Record]
    files: list[str]
    layout: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def rows(self) -> list[dict]:
        return [r.data for r in self.records]


class _Fields:
    """Reads fields of one raw record, collecting a Problem for each defect."""

    def __init__(self, raw: dict, file: str, line: int | None):
        self.raw, self.file, self.line = raw, file, line
        self.problems: list[Problem] = []
        self.used: set[str] = set()

    def problem(self, fld: str | None, message: str, fix: str | None = None) -> None:
        self.problems.append(Problem(self.file, self.line, fld, message, fix))

    def text(self, key: str, *, required: bool = True, allow_empty: bool = False) -> str | None:
        """A string field. Optional fields that are absent, null or blank read as None."""
        self.used.add(key)
        value = self.raw.get(key)
        if value is None:
            if required:
                self.problem(key, "field is missing", f"add a '{key}' string to every record, or pass --type")
            return None
        if not isinstance(value, str):
            self.problem(key, f"must be a string, got {_kind(value)}", "put the text in a quoted JSON string")
            return None
        if not value.strip() and not allow_empty:
            if required:
                self.problem(key, "is empty", f"give '{key}' some text or drop the record")
            return None
        return value

    def parsed_list(self, key: str) -> list | None:
        """A list field; a string holding a JSON list (as in CSV cells) is parsed."""
        self.used.add(key)
        value = self.raw.get(key)
        if value is None:
            self.problem(key, "field is missing", f"add a '{key}' list to every record, or pass --type")
            return None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as err:
                self.problem(key, f"is a string that is not valid JSON ({err.msg}, column {err.colno})",
                             "give a JSON list of turns")
                return None
            except ValueError as err:  # e.g. an integer of 5,000 digits
                self.problem(key, f"is a string holding an unreadable JSON value ({str(err).split(';')[0]})", "give a JSON list of turns")
                return None
            except RecursionError:  # deeper than the decoder can go: clearly over the limit
                self.problems.append(too_deep(self.file, self.line, key))
                return None
            if nesting_depth(value) > MAX_NESTING:
                self.problems.append(too_deep(self.file, self.line, key))
                return None
        if not isinstance(value, list):
            self.problem(key, f"must be a list of turns, got {_kind(value)}", "give a JSON list of turns")
            return None
        if not value:
            self.problem(key, "has no turns", "add the user and assistant turns, or drop the record")
            return None
        return value

    def result(self, out: dict) -> dict | None:
        """The normalised dict with unknown fields kept, or None if the record is invalid."""
        if self.problems:
            return None
        for key, value in self.raw.items():
            if key not in self.used and key not in out:
                out[key] = value
        return out


# --- converters: raw dict -> normalised dict (one per layout) -------------------------------

def _conv_text(f: _Fields) -> dict | None:
    return f.result({"text": f.text("text")})


def _prompt_completion(prompt_key: str, completion_key: str) -> Callable[[_Fields], dict | None]:
    def convert(f: _Fields) -> dict | None:
        prompt, completion = f.text(prompt_key), f.text(completion_key)
        return f.result({"prompt": prompt, "completion": completion, "system": f.text("system", required=False)})
    return convert


def _conv_alpaca(f: _Fields) -> dict | None:
    instruction = f.text("instruction")
    extra = f.text("input", required=False, allow_empty=True)
    output = f.text("output")
    prompt = instruction if not extra or not extra.strip() or instruction is None else f"{instruction}\n\n{extra}"
    return f.result({"prompt": prompt, "completion": output, "system": f.text("system", required=False)})


def _conv_preference(f: _Fields) -> dict | None:
    prompt, chosen, rejected = f.text("prompt"), f.text("chosen"), f.text("rejected")
    if chosen is not None and chosen == rejected:
        f.problem("rejected", "is identical to 'chosen'", "a preference pair needs two different answers")
    out = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "system": f.text("system", required=False)}
    context = f.raw.get("context")  # optional earlier turns of a multi-turn prompt
    if context is not None:
        f.used.add("context")
        ok = isinstance(context, list) and all(isinstance(m, dict) and m.get("role") in ("user", "assistant")
                                               and isinstance(m.get("content"), str) for m in context)
        if not ok:
            f.problem("context", "must be a list of {role: user|assistant, content: string} turns",
                      "give the turns before the prompt in that form, or drop the field")
        out["context"] = context
    return f.result(out)


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


def _hh_turns(transcript: str) -> list[tuple[str, str]] | None:
    """[(role, text)] of an Anthropic HH transcript ("\\n\\nHuman: ... \\n\\nAssistant: ..."), or None."""
    parts = _HH_TURN.split(transcript)
    if len(parts) < 3 or parts[0].strip():
        return None
    return [("user" if who == "Human" else "assistant", text.strip()) for who, text in zip(parts[1::2], parts[2::2])]


def _conv_hh(f: _Fields) -> dict | None:
    """chosen/rejected as whole dialogues (Anthropic HH-RLHF): everything up to chosen's last
    "Assistant:" is the shared prompt (as TRL's HH preprocessing cuts it): its last user turn is
    `prompt`, the turns before it `context`; what follows on each side is the answer."""
    chosen, rejected = f.text("chosen"), f.text("rejected")
    if chosen is None or rejected is None:
        return None
    marker = "\n\nAssistant:"
    cut = chosen.rfind(marker) + len(marker)
    turns = _hh_turns(chosen[:cut] + " x") if cut >= len(marker) else None
    if turns is None or len(turns) < 2 or turns[-2][0] != "user":
        f.problem("chosen", "has no prompt and is not a '\\n\\nHuman: ... \\n\\nAssistant: ...' dialogue",
                  "add a 'prompt' field (prompt/chosen/rejected layout) or give whole HH dialogues")
        return None
    if not rejected.startswith(chosen[:cut]):
        f.problem("rejected", "does not continue the same dialogue as 'chosen' up to its last Assistant turn",
                  "both sides must be the same dialogue ending in two different Assistant answers")
        return None
    good, bad = chosen[cut:].strip(), rejected[cut:].strip()
    if not good or not bad:
        f.problem("chosen" if not good else "rejected", "has an empty last Assistant answer", "drop the record")
    elif good == bad:
        f.problem("rejected", "is identical to 'chosen'", "a preference pair needs two different answers")
    context = [{"role": role, "content": text} for role, text in turns[:-2]]
    return f.result({"prompt": turns[-2][1], "chosen": good, "rejected": bad, "context": context,
                     "system": f.text("system", required=False)})


def _prompt_only(prompt_key: str) -> Callable[[_Fields], dict | None]:
    def convert(f: _Fields) -> dict | None:
        return f.result({"prompt": f.text(prompt_key), "system": f.text("system", required=False)})
    return convert


def _classification(text_key: str) -> Callable[[_Fields], dict | None]:
    def convert(f: _Fields) -> dict | None:
        text = f.text(text_key)
        f.used.add("label")
        return f.result({"text": text, "label": _label(f)})
    return convert


def _label(f: _Fields) -> str | None:
    value = f.raw.get("label")
    if isinstance(value, float) and math.isnan(value):  # pandas-written files use NaN for missing
        value = None
    if value is None:
        f.problem("label", "label is missing", "give every record a label")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        f.problem("label", f"must be a string or integer, got {_kind(value)}", "use a class name or number")
        return None
    if isinstance(value, float):
        if not value.is_integer():
            f.problem("label", f"must be a string or integer, got {value}", "use a class name or number")
            return None
        value = int(value)
    label = str(value).strip()
    if not label:
        f.problem("label", "label is empty", "give every record a label")
        return None
    if label.lower() in MISSING_MARKERS:  # what spreadsheets and pandas write for "no value"
        f.problem("label", f"label is missing ({label!r} marks a missing value, not a class)",
                  "give the record its label or drop it; rename the class if it really is one")
        return None
    return label


MISSING_MARKERS = frozenset({"nan", "n/a", "na", "null", "none", "nil", "-", "?", "#n/a"})

_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "model": "assistant", "system": "system"}
_OPENAI_ROLES = {r: r for r in ROLES}


def _chat(key: str, role_key: str, content_key: str, role_map: dict[str, str]) -> Callable[[_Fields], dict | None]:
    def convert(f: _Fields) -> dict | None:
        turns = _read_turns(f, key, role_key, content_key, role_map)
        if turns is not None and key == "conversations":
            system = f.text("system", required=False)  # some ShareGPT dumps keep it at top level
            if system and turns[0][1] != "system":
                turns.insert(0, (-1, "system", system))
        if turns is not None:
            _check_turn_order(f, turns, key, role_key, content_key)
        messages = [{"role": role, "content": content} for _, role, content in turns or []]
        return f.result({"messages": messages})
    return convert


def _read_turns(f: _Fields, key: str, role_key: str, content_key: str,
                role_map: dict[str, str]) -> list[tuple[int, str, str]] | None:
    """(index, role, content) per turn, or None after reporting bad turns."""
    value = f.parsed_list(key)
    if value is None:
        return None
    turns, before = [], len(f.problems)
    for i, turn in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            f.problem(where, f"turn must be an object with '{role_key}' and '{content_key}', got {_kind(turn)}")
            continue
        role, content = turn.get(role_key), turn.get(content_key)
        mapped = role_map.get(role.strip().lower()) if isinstance(role, str) else None
        if role is None:
            f.problem(f"{where}.{role_key}", "role is missing", f"use one of: {', '.join(sorted(role_map))}")
        elif mapped is None:
            f.problem(f"{where}.{role_key}", f"unknown role {role!r}", f"use one of: {', '.join(sorted(role_map))}")
        if content is None:
            f.problem(f"{where}.{content_key}", "content is missing", "give every turn its text")
        elif not isinstance(content, str):
            f.problem(f"{where}.{content_key}", f"must be a string, got {_kind(content)}", "give every turn its text")
        if mapped is not None and isinstance(content, str):
            turns.append((i, mapped, content))
    return turns if len(f.problems) == before else None


def _check_turn_order(f: _Fields, turns: list[tuple[int, str, str]], key: str, role_key: str,
                      content_key: str) -> None:
    """Optional leading system turn, then user/assistant alternating, ending with assistant."""
    spoken = 0  # user/assistant turns seen so far
    for pos, (i, role, content) in enumerate(turns):
        where = f"{key}[{i}]" if i >= 0 else "system"
        if role == "system" and pos != 0:
            f.problem(f"{where}.{role_key}", "system turn must come first",
                      "move the system turn to the start of the conversation or merge it")
            return
        if role != "system":
            expected = "user" if spoken % 2 == 0 else "assistant"
            if role != expected:
                f.problem(f"{where}.{role_key}", f"expected a {expected} turn here, got {role}",
                          "turns must alternate user/assistant, starting with user")
                return
            spoken += 1
        if not content.strip():
            f.problem(f"{where}.{content_key}", f"{role} turn is empty",
                      f"give the {role} turn its text, or drop the turn")
    last_i, last_role, _ = turns[-1]
    if spoken == 0:
        f.problem(key, "conversation has no user or assistant turns", "add the user and assistant turns")
    elif last_role != "assistant":
        f.problem(f"{key}[{last_i}].{role_key}", f"conversation ends with a {last_role} turn",
                  "end every conversation with the assistant reply to train on")


@dataclass(frozen=True)
class Layout:
    """A community file layout: the keys that identify it and how it maps onto a type."""

    name: str
    type: str
    keys: tuple[tuple[str, ...], ...]  # any one of these key sets identifies the layout
    description: str
    convert: Callable[[_Fields], dict | None]


# Order matters: the first layout whose keys the first record has wins, so more specific
# layouts come first (prompt+chosen+rejected before prompt+completion before prompt alone;
# question+answer is prompt_completion; a prompt with an `answer` column stays prompt_only).
LAYOUTS: tuple[Layout, ...] = (
    Layout("openai", "messages", (("messages",),), "OpenAI chat layout: messages -> messages",
           _chat("messages", "role", "content", _OPENAI_ROLES)),
    Layout("sharegpt", "messages", (("conversations",),),
           "ShareGPT layout: conversations (from/value; human -> user, gpt -> assistant) -> messages",
           _chat("conversations", "from", "value", _SHAREGPT_ROLES)),
    Layout("preference", "preference", (("prompt", "chosen", "rejected"),),
           "Preference layout: prompt, chosen, rejected -> preference pair", _conv_preference),
    Layout("hh", "preference", (("chosen", "rejected"),),
           "Anthropic HH layout: chosen/rejected dialogues ('\\n\\nHuman: ... \\n\\nAssistant: ...') -> prompt (last Human turn, "
           "earlier turns as context), chosen, rejected (the two last Assistant turns)", _conv_hh),
    Layout("alpaca", "prompt_completion", (("instruction", "output"),),
           "Alpaca layout: instruction + input -> prompt, output -> completion", _conv_alpaca),
    Layout("prompt_completion", "prompt_completion", (("prompt", "completion"),),
           "Prompt/completion layout: prompt -> prompt, completion -> completion",
           _prompt_completion("prompt", "completion")),
    Layout("question_answer", "prompt_completion", (("question", "answer"),),
           "Question/answer layout: question -> prompt, answer -> completion",
           _prompt_completion("question", "answer")),
    Layout("input_output", "prompt_completion", (("input", "output"),),
           "Input/output layout: input -> prompt, output -> completion", _prompt_completion("input", "output")),
    Layout("text_label", "classification", (("text", "label"),),
           "Classification layout: text -> text, label -> label", _classification("text")),
    Layout("sentence_label", "classification", (("sentence", "label"),),
           "Classification layout: sentence -> text, label -> label", _classification("sentence")),
    Layout("prompt_only", "prompt_only", (("prompt",),),
           "Prompt-only layout: prompt -> prompt (other columns such as answer kept)", _prompt_only("prompt")),
    Layout("text", "text", (("text",),), "Text layout: text -> text (raw corpus)", _conv_text),
    Layout("question_only", "prompt_only", (("question",),),
           "Question layout: question -> prompt (other columns such as answer kept)", _prompt_only("question")),
)
# The layout assumed when `type=` is forced and the first record matches none of the type's.
_CANONICAL = {"text": "text", "prompt_completion": "prompt_completion", "messages": "openai",
              "preference": "preference", "prompt_only": "prompt_only", "classification": "text_label"}
_BY_NAME = {layout.name: layout for layout in LAYOUTS}


def check_type_name(type: str | None) -> str | None:
    """Validate a `type=` argument ('prompt-completion' is accepted); raise with a suggestion."""
    if type is None:
        return None
    name = type.strip().lower().replace("-", "_")
    if name in DATASET_TYPES:
        return name
    close = difflib.get_close_matches(name, DATASET_TYPES, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise TunesmithError(f"unknown dataset type '{type}': {hint}use one of: {', '.join(DATASET_TYPES)}")


def detect_layout(raw: dict, type: str | None = None) -> Layout | None:
    """The layout of a raw record (restricted to `type` when given; then never None)."""
    keys = {k for k, v in raw.items() if v is not None}
    for layout in LAYOUTS:
        if type is not None and layout.type != type:
            continue
        if any(set(needed) <= keys for needed in layout.keys):
            return layout
    return _BY_NAME[_CANONICAL[type]] if type is not None else None


# Fields that name a dataset type: present (or null) but unread by the detected layout, they
# mean the record was probably written as that type with a field missing.
_TELLTALES = {"chosen": "preference", "rejected": "preference", "label": "classification",
              "completion": "prompt_completion", "messages": "messages", "conversations": "messages"}


def _probably_meant(raw: dict, layout: Layout) -> tuple[str, list[str]] | None:
    """(type, telltale fields) when `raw` has fields of another type that `layout` ignores."""
    used = {k for keys in layout.keys for k in keys}
    hits = [k for k in _TELLTALES if k in raw and k not in used and _TELLTALES[k] != layout.type]
    return (_TELLTALES[hits[0]], [k for k in hits if _TELLTALES[k] == _TELLTALES[hits[0]]]) if hits else None


def _choose_layout(records: list, forced: str | None) -> tuple[Layout | None, str | None]:
    """The layout of the file, and a warning when it was probably meant as another type.

    The first record decides, except when it has half of another type's fields (a null
    `label`, `chosen` without `rejected`) and a later record has them all: then the file is
    that type and the first record is the faulty one (its problems say what is missing)."""
    first = records[0]
    layout = detect_layout(first.data, forced)
    meant = _probably_meant(first.data, layout) if layout is not None and forced is None else None
    if meant is None:
        return layout, None
    mtype, fields = meant
    better = next((lay for r in records[1:] if (lay := detect_layout(r.data)) is not None and lay.type == mtype), None)
    if better is not None:
        return better, None
    where = f"{first.file}:{first.line}" if first.line is not None else first.file
    why = ", ".join(f"'{k}'" + (" (null)" if first.data[k] is None else "") for k in fields)
    need = next(lay for lay in LAYOUTS if lay.type == mtype).keys[0]
    missing = [k for k in need if first.data.get(k) is None]
    return layout, (f"warning: {where}: read as {layout.type}, ignoring {why}: this looks like {mtype} data "
                    f"missing {', '.join(repr(k) for k in missing) or 'fields'} (complete the records for "
                    f"{mtype}, or pass --type {layout.type} if {layout.type} is meant)")


def _layout_help() -> str:
    return ("use a known layout (instruction/input/output, prompt/completion, question/answer, input/output, "
            "messages, conversations, prompt/chosen/rejected, text/label, prompt, text) or pass --type")


def read_dataset(path: str | Path, type: str | None = None,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> tuple[Dataset, list[Problem]]:
    """Read, recognise, validate and normalise a dataset; every defect is a returned Problem.

    Raises TunesmithError only for an unknown `type` name."""
    forced = check_type_name(type)
    raw = read_raw(path, max_line_bytes)
    problems = list(raw.problems)
    if not raw.records:
        return Dataset(forced or UNKNOWN_TYPE, [], raw.files, "no records", raw.notes), problems
    first = raw.records[0]
    layout, warning = _choose_layout(raw.records, forced)
    notes = raw.notes + ([warning] if warning else [])
    if layout is None:
        fields = ", ".join(sorted(first.data)) or "none"
        problems.append(Problem(first.file, first.line, None, f"no known dataset layout for fields: {fields}",
                                _layout_help()))
        return Dataset(UNKNOWN_TYPE, [], raw.files, "unrecognised", notes), _sorted(problems)
    records = []
    for rec in raw.records:
        fields_ = _Fields(rec.data, rec.file, rec.line)
        data = layout.convert(fields_)
        problems.extend(fields_.problems)
        if data is not None:
            records.append(Record(data, rec.file, rec.line))
    return Dataset(layout.type, records, raw.files, layout.description, notes), _sorted(problems)


def _sorted(problems: list[Problem]) -> list[Problem]:
    """File order, then line order (file-level problems first), so reports read top-down."""
    order = {}
    for p in problems:
        order.setdefault(p.file, len(order))
    return sorted(problems, key=lambda p: (order[p.file], p.line or 0))


def load_dataset(path: str | Path, type: str | None = None, accept: tuple[str, ...] | None = None) -> Dataset:
    """Like read_dataset, but raise DataError if any record is invalid and TunesmithError
    if the dataset's type is not one of `accept`."""
    dataset, problems = read_dataset(path, type)
    if accept is not None and dataset.type in DATASET_TYPES and dataset.type not in accept:
        # Checked first: with the wrong type, per-record problems are beside the point.
        warned = "".join(f"; {n.removeprefix('warning: ')}" for n in dataset.notes if n.startswith("warning:"))
        raise TunesmithError(f"{path}: dataset type '{dataset.type}' is not accepted here "
                             f"(accepted: {', '.join(accept)}); convert the file or pass --type{warned}")
    if problems:
        raise DataError(problems)
    for note in dataset.notes:  # the data are usable, but not necessarily as the user meant
        if note.startswith("warning:"):
            print(note, file=sys.stderr)
    return dataset


# --- text views of normalised records, per type -------------------------------------------

def record_text(row: dict, type: str) -> str:
    """All the text of a record (prompt + completion / all turns / text): used for
    duplicate detection and word counts."""
    if type == "messages":
        return "\n".join(m["content"] for m in row.get("messages", []))
    keys = {"prompt_completion": ("system", "prompt", "completion"),
            "preference": ("system", "prompt", "chosen", "rejected"),
            "prompt_only": ("system", "prompt")}.get(type, ("text",))
    return "\n".join(row[k] for k in keys if isinstance(row.get(k), str))


def prompt_side_text(row: dict, type: str) -> str:
    """The prompt side of a record (prompt / first user turn / text): used for train/eval overlap."""
    if type == "messages":
        return next((m["content"] for m in row.get("messages", []) if m["role"] == "user"), "")
    value = row.get("prompt") if type in ("prompt_completion", "preference", "prompt_only") else row.get("text")
    return value if isinstance(value, str) else ""
