"""Hostile and careless inputs (issue 11): every one ends in a clear one-line error (or, where
the input is usable, a run that says what it changed), never a traceback, a hang, a silent
success on nonsense or silently lost data.

Probes run through the CLI as a subprocess where the CLI is what a user meets; the sweep over
every numeric config field runs in-process (hundreds of cases, each a config parse). Set
PROBE_TALLY=path to get the outcome counts (tried / clean / traceback / hang / wrong success /
data lost) written there as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import typing
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tunesmith import configlib
from tunesmith.config import TrainConfig
from tunesmith.errors import ConfigError
from tunesmith.eval.config import EvalConfig
from tunesmith.study.config import StudyConfig

TIMEOUT = 90
_TALLY: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def _tally():
    yield
    if os.environ.get("PROBE_TALLY"):
        Path(os.environ["PROBE_TALLY"]).write_text(json.dumps(dict(_TALLY), indent=1))


def _record(outcome: str) -> str:
    _TALLY["tried"] += 1
    _TALLY[outcome] += 1
    return outcome


# ---------------------------------------------------------------- running the CLI

@dataclass
class Result:
    rc: int | None
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def cli(*args, cwd=None, timeout=TIMEOUT, as_nobody=False) -> Result:
    cmd = [sys.executable, "-m", "tunesmith", *map(str, args)]
    if as_nobody:  # root reads anything: drop the capabilities that bypass permissions
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        return Result(None, str(exc.stdout or ""), str(exc.stderr or ""))
    return Result(r.returncode, r.stdout, r.stderr)


def _not_an_error(r: Result) -> str | None:
    """How a probe that should have failed did not fail cleanly at all (hang, traceback, exit 0)."""
    if r.rc is None:
        return "hang"
    if "Traceback" in r.text:
        return "traceback"
    return "wrong success" if r.rc == 0 else None


def classify_error(r: Result, needle: str | None = None) -> str:
    """An error was the right answer: was it one clean line?"""
    if kind := _not_an_error(r):
        return kind
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    if len(lines) != 1 or (needle is not None and needle.lower() not in lines[0].lower()):
        return "messy error"
    return "clean"


def classify_report(r: Result, needle: str) -> str:
    """`data check` answers with a report on stdout and exit 1: is the problem in it?"""
    if kind := _not_an_error(r):
        return kind
    return "clean" if needle.lower() in r.out.lower() else "messy error"


def classify_said(r: Result, needle: str) -> str:
    """The input is usable: success is fine as long as what was changed or ignored is said."""
    if r.rc is None:
        return "hang"
    if "Traceback" in r.text:
        return "traceback"
    return "clean" if needle.lower() in r.text.lower() else "data lost"


def expect_clean(outcome: str, r: Result) -> None:
    assert _record(outcome) == "clean", f"{outcome}\nrc={r.rc}\nstdout:\n{r.out[-2000:]}\nstderr:\n{r.err[-3000:]}"


# ---------------------------------------------------------------- numbers in every config field (in-process)

_BASES = {TrainConfig: {"data": {"train": "x.jsonl"}}, EvalConfig: {"data": "x.jsonl"},
          StudyConfig: {"data": {"train": "a.jsonl", "test": "b.jsonl"}, "arms": [{"name": "zs"}]}}
_BAD = [float("inf"), float("-inf"), float("nan"), 1e300, -1e300]


def _numeric(tp) -> str | None:
    """'scalar', 'list' or 'dict' for a numeric field type, else None."""
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(tp) if a is not type(None)] if union else [tp]
    for a in args:
        if a in (int, float):
            return "scalar"
        if typing.get_origin(a) in (list, tuple) and typing.get_args(a)[:1] in ((int,), (float,)):
            return "list"
        if typing.get_origin(a) is dict and typing.get_args(a)[1:] in ((int,), (float,)):
            return "dict"
    return None


def _numeric_fields():
    out = []
    for cls in _BASES:
        for path in configlib.field_paths(cls):
            kind = _numeric(configlib._resolve(cls, path))
            if kind:
                out.append((cls, path, kind))
    return out


def _set(data: dict, path: str, value) -> dict:
    data = json.loads(json.dumps(data))
    node, parts = data, path.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return data


@pytest.mark.parametrize("bad", _BAD, ids=["inf", "-inf", "nan", "huge", "-huge"])
@pytest.mark.parametrize("cls,path,kind", _numeric_fields(), ids=lambda x: getattr(x, "__name__", str(x)))
def test_every_numeric_field_has_finite_bounds(tmp_path, cls, path, kind, bad):
    value = {"scalar": bad, "list": [bad, bad], "dict": {"exact_match": bad}}[kind]
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(_set(_BASES[cls], path, value)))
    try:
        configlib.load_config(cls, f)
        outcome = "wrong success"
    except ConfigError as err:
        outcome = "clean" if "\n" not in str(err) and path.split(".")[-1] in str(err) else "messy error"
    except Exception as err:  # noqa: BLE001 - any other exception is the traceback a user would see
        outcome = "traceback"
        print(repr(err))
    assert _record(outcome) == "clean", (path, bad, outcome)


# ---------------------------------------------------------------- numbers through `tunesmith train`

@pytest.fixture(scope="module")
def qa(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"What is item {i}?", "completion": f"It is {i}."}) + "\n"
                         for i in range(12)))
    return p


def _train_yaml(tmp_path, model, data, extra: str = "") -> Path:
    f = tmp_path / "t.yaml"
    f.write_text(f"model:\n  name: {model}\ndata:\n  train: {data}\noutput_dir: {tmp_path}\n"
                 f"training:\n  max_steps: 2\n  batch_size: 4\n  threads: 1\n{extra}")
    return f


TRAIN_NUMBER_PROBES = [
    "  learning_rate: .inf", "  learning_rate: .nan", "  learning_rate: -.inf", "  epochs: .inf",
    "  epochs: .nan", "  adam_betas: [2, 3]", "  adam_betas: [0.9, .nan]", "  adam_betas: [-1, 0.5]",
    "  weight_decay: .inf", "  max_grad_norm: .nan", "  warmup_ratio: .nan", "  batch_size: 1e300",
    "  gradient_accumulation_steps: -1", "  eval_every: 0", "  save_every: .inf",
]
TOP_NUMBER_PROBES = ["seed: -1", "seed: 1e30", "seed: .nan", "data:\n  max_length: 1e12",
                     "data:\n  val_fraction: .nan", "adapter:\n  lora_dropout: .inf", "adapter:\n  lora_r: 0",
                     "dpo:\n  beta: .inf", "grpo:\n  temperature: .nan", "grpo:\n  rewards: {exact_match: .inf}"]


@pytest.mark.parametrize("line", TRAIN_NUMBER_PROBES)
def test_train_rejects_bad_training_numbers(tmp_path, tiny_model_dir, qa, line):
    f = _train_yaml(tmp_path, tiny_model_dir, qa, line + "\n")
    r = cli("train", f, "--quiet")
    expect_clean(classify_error(r, line.split(":")[0].strip()), r)


@pytest.mark.parametrize("text", TOP_NUMBER_PROBES)
def test_train_rejects_bad_numbers_anywhere(tmp_path, tiny_model_dir, qa, text):
    f = tmp_path / "t.yaml"
    merged = yaml.safe_load(_train_yaml(tmp_path, tiny_model_dir, qa).read_text())
    for k, v in yaml.safe_load(text).items():
        merged[k] = {**merged.get(k, {}), **v} if isinstance(v, dict) else v
    f.write_text(yaml.safe_dump(merged))
    r = cli("train", f, "--quiet")
    expect_clean(classify_error(r, _leaf_key(yaml.safe_load(text))), r)


def _leaf_key(data: dict) -> str:
    """The innermost key of a one-path mapping: what the error must name."""
    key, value = next(iter(data.items()))
    return _leaf_key(value) if isinstance(value, dict) else key


@pytest.mark.parametrize("item", ["training.learning_rate=inf", "training.learning_rate=.nan", "training.epochs=1e999",
                                  "seed=-5", "training.adam_betas=[1.5, 0.9]", "training.batch_size=-3"])
def test_train_rejects_bad_numbers_in_set(tmp_path, tiny_model_dir, qa, item):
    r = cli("train", _train_yaml(tmp_path, tiny_model_dir, qa), "--set", item, "--quiet")
    expect_clean(classify_error(r, item.split("=")[0]), r)


@pytest.fixture(scope="module")
def nan_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with a NaN in its final norm: every loss it gives is NaN."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    bad = tmp_path_factory.mktemp("nan") / "nan-model"
    shutil.copytree(tiny_model_dir, bad)
    model = AutoModelForCausalLM.from_pretrained(bad)
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    model.save_pretrained(bad)
    return bad


_REGIMEN_DATA = {
    "sft": [{"prompt": f"What is item {i}?", "completion": f"It is {i}."} for i in range(12)],
    "cpt": [{"text": f"Item {i} is a thing that sits on shelf {i % 3} of the store."} for i in range(12)],
    "dpo": [{"prompt": f"Item {i}?", "chosen": f"It is {i}.", "rejected": "No idea."} for i in range(12)],
    "head": [{"text": f"item {i} review", "label": "pos" if i % 2 else "neg"} for i in range(12)],
}


@pytest.mark.parametrize("regimen", list(_REGIMEN_DATA))
def test_training_stops_on_a_non_finite_loss(tmp_path, nan_model, regimen):
    # Weights holding a NaN make the first loss NaN: the run must stop and say so, not export
    # a NaN model and report "completed".
    data = _write(tmp_path, "d.jsonl", _REGIMEN_DATA[regimen])
    r = cli("train", _train_yaml(tmp_path, nan_model, data, f"regimen: {regimen}\n"), "--quiet")
    expect_clean(classify_error(r, "not finite"), r)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_check_finite_loss_refuses_non_finite(value):
    from tunesmith.errors import TunesmithError
    from tunesmith.training.losses import check_finite_loss

    assert check_finite_loss(2.5, 3) == 2.5
    with pytest.raises(TunesmithError, match="step 7 is not finite") as info:
        check_finite_loss(value, 7)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- YAML bombs and deep nesting

_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def _yaml_bombs() -> dict[str, str]:
    deep = 5000
    return {
        "billion-laughs": _LAUGHS,
        "laughs-under-a-real-key": _LAUGHS.replace("i: &i", "training:\n  adam_betas: &i"),
        "merge-keys": "a: &a {x: 1, y: 2}\n" + "".join(f"{c}: &{c}\n  <<: [{', '.join(['*' + p] * 1)}]\n  {c}{i}: [{', '.join(['*' + p] * 8)}]\n"
                                                        for i, (p, c) in enumerate(zip("abcdefgh", "bcdefghi"))),
        "deep-flow-list": "data: " + "[" * deep + "]" * deep + "\n",
        "deep-flow-map": "data: " + "{a: " * deep + "1" + "}" * deep + "\n",
        "very-deep-flow-list": "data: " + "[" * 100_000 + "]" * 100_000 + "\n",
    }


@pytest.mark.parametrize("command", ["train", "study", "eval"])
@pytest.mark.parametrize("name", list(_yaml_bombs()))
def test_yaml_bombs_are_refused_quickly(tmp_path, name, command):
    f = tmp_path / "bomb.yaml"
    f.write_text(_yaml_bombs()[name])
    args = {"train": ["train", f], "study": ["study", f, "--dry-run"],
            "eval": ["eval", "some-model", "--config", f]}[command]
    r = cli(*args, timeout=30)
    expect_clean(classify_error(r, str(f)), r)


@pytest.mark.parametrize("depth", [5000, 60_000])  # 2 x 60k characters: near the OS limit on one argument
def test_deep_override_is_refused(tmp_path, depth):
    f = tmp_path / "t.yaml"
    f.write_text("data:\n  train: x.jsonl\n")
    r = cli("train", f, "--set", "training.adam_betas=" + "[" * depth + "]" * depth)
    expect_clean(classify_error(r, "adam_betas"), r)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def _deep_files(tmp: Path, n: int) -> dict[str, Path]:
    files = {
        "jsonl-line": ("deep.jsonl", '{"prompt": "q", "completion": "a"}\n{"prompt": "q2", "completion": "a", "extra": ' + _deep(n) + "}\n"),
        "jsonl-top": ("top.jsonl", '{"prompt": "q", "completion": "a"}\n' + _deep(n) + "\n"),
        "json-record": ("deep.json", '[{"prompt": "q", "completion": "a"},\n {"prompt": "q2", "completion": "a", "x": ' + _deep(n) + "}]"),
        "json-top": ("top.json", _deep(n)),
        "json-data": ("data.json", '{"meta": ' + _deep(n) + ', "data": [{"prompt": "q", "completion": "a"}]}'),
        "csv-cell": ("deep.csv", "messages\n" + _deep(n) + "\n"),
        "tsv-cell": ("deep.tsv", "conversations\n" + _deep(n) + "\n"),
    }
    out = {}
    for key, (name, text) in files.items():
        (tmp / name).write_text(text)
        out[key] = tmp / name
    return out


@pytest.mark.parametrize("depth", [5000, 100_000])
@pytest.mark.parametrize("fmt", ["jsonl-line", "jsonl-top", "json-record", "json-top", "json-data", "csv-cell", "tsv-cell"])
def test_deep_json_in_data_check(tmp_path, fmt, depth):
    f = _deep_files(tmp_path, depth)[fmt]
    r = cli("data", "check", f)
    outcome = classify_report(r, "nested")
    expect_clean(outcome, r)


@pytest.mark.parametrize("fmt", ["jsonl-line", "json-record", "csv-cell"])
def test_deep_json_in_train(tmp_path, tiny_model_dir, fmt):
    f = _deep_files(tmp_path, 100_000)[fmt]
    r = cli("train", _train_yaml(tmp_path, tiny_model_dir, f), "--quiet")
    expect_clean(classify_error(r, "nested"), r)


def test_eval_overlap_is_not_quadratic(tmp_path):
    # 20k records sharing a handful of prompts: every train copy "overlaps" every eval copy.
    rows = "".join(json.dumps({"prompt": f"What is the answer {i % 3}?", "completion": str(i)}) + "\n" for i in range(20_000))
    (tmp_path / "a.jsonl").write_text(rows)
    (tmp_path / "b.jsonl").write_text(rows)
    r = cli("data", "check", tmp_path / "a.jsonl", "--eval", tmp_path / "b.jsonl", timeout=40)
    outcome = "hang" if r.rc is None else "traceback" if "Traceback" in r.text else "clean" if "overlap" in r.out else "messy error"
    expect_clean(outcome, r)


# ---------------------------------------------------------------- silently lost or reinterpreted data

def _write(tmp: Path, name: str, rows: list[dict] | str) -> Path:
    p = tmp / name
    p.write_text(rows if isinstance(rows, str) else "".join(json.dumps(r) + "\n" for r in rows))
    return p


@pytest.mark.parametrize("marker", ["NaN", "nan", "N/A", "NA", "null", "None", "", "  "])
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_missing_value_labels_are_not_classes(tmp_path, marker, fmt):
    rows = [{"text": f"t{i}", "label": "pos" if i % 2 else "neg"} for i in range(6)]
    rows[3]["label"] = marker
    if fmt == "csv":
        f = _write(tmp_path, "c.csv", "text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows))
    else:
        f = _write(tmp_path, "c.jsonl", rows)
    r = cli("data", "check", f)
    expect_clean(classify_report(r, "label"), r)


@pytest.mark.parametrize("value", [None, float("nan")])
def test_null_labels_are_not_silently_text(tmp_path, value):
    rows = [{"text": f"t{i}", "label": "pos" if i % 2 else "neg"} for i in range(6)]
    rows[0]["label"] = value  # the first record decides the layout
    f = _write(tmp_path, "c.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    r = cli("data", "check", f)
    expect_clean(classify_report(r, "label"), r)


def test_all_null_labels_warn_and_name_the_type(tmp_path):
    f = _write(tmp_path, "c.jsonl", [{"text": f"t{i}", "label": None} for i in range(4)])
    r = cli("data", "check", f)
    expect_clean(classify_said(r, "classification"), r)


def test_eval_labels_unseen_in_training_are_flagged(tmp_path):
    train = _write(tmp_path, "tr.jsonl", [{"text": f"t{i}", "label": "pos" if i % 2 else "neg"} for i in range(6)])
    ev = _write(tmp_path, "ev.jsonl", [{"text": "e1", "label": "pos"}, {"text": "e2", "label": "neutral"}])
    r = cli("data", "check", train, "--eval", ev)
    expect_clean(classify_said(r, "label 'neutral' never occurs in training"), r)  # not just its count


@pytest.mark.parametrize("case", ["first-half", "later-half", "all-half", "rejected-only", "null-rejected"])
def test_half_preference_records(tmp_path, case):
    full = [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(4)]
    if case == "first-half":
        del full[0]["rejected"]
    elif case == "later-half":
        del full[2]["rejected"]
    elif case == "all-half":
        full = [{"prompt": r["prompt"], "chosen": r["chosen"]} for r in full]
    elif case == "rejected-only":
        full = [{"prompt": r["prompt"], "rejected": r["rejected"]} for r in full]
    else:
        full[0]["rejected"] = None
    r = cli("data", "check", _write(tmp_path, "p.jsonl", full))
    outcome = classify_report(r, "rejected") if case in ("first-half", "later-half", "null-rejected") else classify_said(r, "preference")
    expect_clean(outcome, r)


def test_half_preference_in_dpo_names_the_missing_field(tmp_path, tiny_model_dir):
    f = _write(tmp_path, "p.jsonl", [{"prompt": f"p{i}", "chosen": f"good {i}"} for i in range(4)])
    r = cli("train", _train_yaml(tmp_path, tiny_model_dir, f, "regimen: dpo\n"), "--quiet")
    expect_clean(classify_error(r, "rejected"), r)


def test_over_long_examples_are_not_silently_dropped(tmp_path, tiny_model_dir):
    rows = [{"prompt": ("word " * (400 if i % 2 else 3)) + "?", "completion": f"answer {i}"} for i in range(8)]
    f = _write(tmp_path, "long.jsonl", rows)
    r = cli("train", _long_cfg(tmp_path, tiny_model_dir, f), "--quiet")
    if r.rc is None or "Traceback" in r.text:
        outcome = "hang" if r.rc is None else "traceback"
    elif r.rc != 0:
        outcome = "messy error"
    else:
        enc = json.loads((tmp_path / "t" / "run.json").read_text()).get("encoding", {})
        outcome = "data lost" if enc.get("dropped") else "clean" if "prompt" in r.text.lower() else "data lost"
    expect_clean(outcome, r)


def _long_cfg(tmp_path, model, data) -> Path:
    f = tmp_path / "t.yaml"
    f.write_text(f"model:\n  name: {model}\ndata:\n  train: {data}\n  max_length: 32\n  val_fraction: 0\n"
                 f"output_dir: {tmp_path}\ntraining:\n  max_steps: 1\n  batch_size: 8\n  threads: 1\n")
    return f


def test_unreadable_corpus_folder_is_not_ok(tmp_path):
    root = tmp_path / "corpus"
    (root / "locked").mkdir(parents=True)
    (root / "a.txt").write_text("some text\n")
    (root / "locked" / "b.txt").write_text("hidden text\n")
    (root / "locked").chmod(0)
    try:
        r = cli("data", "check", root, as_nobody=os.getuid() == 0)
    finally:
        (root / "locked").chmod(0o755)
    expect_clean(classify_report(r, "locked"), r)


# ---------------------------------------------------------------- study references and CLI flags

_STUDY = "data:\n  train: a.jsonl\n  test: b.jsonl\narms:\n  - {name: base, regimen: prompt}\n"


@pytest.mark.parametrize("arm", [
    "{name: loop, regimen: sft, after: loop}", "{name: loop, regimen: rag, on: loop}",
    "{name: x, regimen: sft, after: later}", "{name: x, regimen: sft, on: nowhere}",
    "{name: x, regimen: sft, after: x, on: x}", "{name: x, regimen: sft, after: ''}",
])
def test_study_arm_references(tmp_path, arm):
    f = tmp_path / "s.yaml"
    f.write_text(_STUDY + f"  - {arm}\n  - {{name: later, regimen: sft}}\n")
    r = cli("study", f, "--dry-run", cwd=tmp_path)
    expect_clean(classify_error(r, "arms"), r)


@pytest.mark.parametrize("args", [
    ["eval", "m", "--data", "x.jsonl", "--field", "answer"],
    ["eval", "m", "--data", "x.jsonl", "--field", "=x"],
    ["eval", "m", "--data", "x.jsonl", "--field", "answer="],
    ["eval", "m", "--data", "x.jsonl", "--shots", "-1"],
    ["eval", "m", "--data", "x.jsonl", "--shots", "abc"],
    ["eval", "m", "--data", "x.jsonl", "--limit", "0"],
    ["data", "check", "x.jsonl", "--max-length", "-5"],
    ["data", "check", "x.jsonl", "--max-length", "nan"],
    ["data", "pairs", "x.jsonl", "--out", "o.jsonl", "--samples", "0"],
    ["data", "pairs", "x.jsonl", "--out", "o.jsonl", "--temperature", "nan"],
    ["data", "pairs", "x.jsonl", "--out", "o.jsonl", "--reward", "exact_match=inf"],
    ["data", "preview", "x.jsonl", "--index", "-1"],
    ["generate", "m", "--prompt", "hi", "--max-new-tokens", "-1"],
    ["generate", "m", "--prompt", "hi", "--temperature", "inf"],
    ["chat", "m", "--temperature", "-1"],
    ["quickstart", "--epochs", "nan"],
    ["train", "t.yaml", "--set", "foo"],
    ["train", "t.yaml", "--set", "=1"],
    ["train", "t.yaml", "--set", "a\nb=1"],
    ["train", "t.yaml", "--set", "training.learning_rate=1\n2"],
    ["train", "line-break-key.yaml"],
    ["train"],
    ["nonsense-command"],
])
def test_malformed_cli_flags(tmp_path, args):
    (tmp_path / "t.yaml").write_text("data:\n  train: x.jsonl\n")
    (tmp_path / "line-break-key.yaml").write_text('data:\n  train: x.jsonl\n"lr\\nx": 1\n')
    (tmp_path / "x.jsonl").write_text('{"prompt": "q", "completion": "a"}\n')
    r = cli(*args, cwd=tmp_path)
    expect_clean(classify_error(r), r)


# ---------------------------------------------------------------- numbers too long for Python to read

_HUGE = "9" * 5000  # over Python's 4,300-digit limit on int(str)


@pytest.mark.parametrize("name,text", [
    ("big.jsonl", '{"prompt": "q", "completion": "a"}\n{"prompt": "q", "completion": "a", "n": ' + _HUGE + "}\n"),
    ("big.json", '[{"prompt": "q", "completion": "a"},\n {"n": ' + _HUGE + "}]"),
    ("big.csv", "messages\n[" + _HUGE + "]\n"),
])
def test_huge_integers_in_data(tmp_path, name, text):
    r = cli("data", "check", _write(tmp_path, name, text))
    expect_clean(classify_report(r, "unreadable"), r)


@pytest.mark.parametrize("where", ["file", "set"])
def test_huge_integers_in_config(tmp_path, where):
    f = tmp_path / "t.yaml"
    f.write_text("data:\n  train: x.jsonl\n" + (f"seed: {_HUGE}\n" if where == "file" else ""))
    r = cli("train", f, *(["--set", f"training.adam_betas=[{_HUGE}, 0.9]"] if where == "set" else []))
    expect_clean(classify_error(r, "seed" if where == "file" else "adam_betas"), r)


@pytest.mark.parametrize("marker", ["NaN", "N/A", ""])
def test_eval_missing_labels_are_not_classes(tmp_path, tiny_model_dir, marker):
    rows = "text,label\n" + "".join(f"item {i},{'pos' if i % 2 else 'neg'}\n" for i in range(4)) + f"item 9,{marker}\n"
    r = cli("eval", tiny_model_dir, "--data", _write(tmp_path, "ev.csv", rows), "--task", "classification", "--quiet")
    expect_clean(classify_error(r, "label"), r)


# ---------------------------------------------------------------- files that never end

@pytest.mark.parametrize("args", [["train", "/dev/zero"], ["study", "/dev/urandom", "--dry-run"],
                                  ["eval", "m", "--config", "/dev/zero"], ["train", "big.yaml"]])
def test_endless_config_files(tmp_path, args):
    (tmp_path / "big.yaml").write_text("# " + "a" * 2_000_000 + "\n")
    r = cli(*args, cwd=tmp_path, timeout=30)
    expect_clean(classify_error(r, "bytes"), r)


@pytest.mark.parametrize("name", ["zero.jsonl", "zero.json", "zero.csv", "zero.txt"])
def test_device_as_data_file(tmp_path, name):
    (tmp_path / name).symlink_to("/dev/zero")
    r = cli("data", "check", tmp_path / name, timeout=30)
    expect_clean(classify_report(r, "regular file"), r)
