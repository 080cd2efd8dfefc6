"""The example evaluation configs (examples/eval/*.yaml) on the real public datasets.

Every config must parse. Where ../shared/data is present, each one also runs end to end on
the tiny random model with 2 items and 8 new tokens: the items are built from the records
(prompt text, references, labels, tests) and the result files are written. The figures are
meaningless (random weights); what is checked is that the formats, field mappings and
templates fit the files as published. benchmarks/eval_shared.py's Markdown section writing is
checked without a model.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tunesmith.eval.config import load_eval_config

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CONFIG_DIR = ROOT / "examples" / "eval"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))

# config -> (the record field whose text must appear in the prompt, checks of the built item)
EXPECTED = {
    "gsm8k": "question",
    "mbpp": "prompt",
    "pubmedqa_decision": "QUESTION",
    "pubmedqa_long": "QUESTION",
    "sst2": "sentence",
    "dialogsum": "dialogue",
    "multi30k_en_de": "text",
}
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"the shared public datasets are absent ({SHARED_DATA})")


def _ids(paths):
    return [p.stem for p in paths]


def test_every_expected_config_exists():
    assert sorted(EXPECTED) == sorted(_ids(CONFIGS))


@pytest.mark.parametrize("path", CONFIGS, ids=_ids(CONFIGS))
def test_config_parses_and_is_documented(path):
    cfg = load_eval_config(path)
    assert cfg.name == path.stem  # distinct result files (both PubMedQA configs read one file)
    for p in (cfg.data, cfg.reference_file, cfg.ids_file):
        assert p is None or p.startswith("../shared/data/"), p  # relative to the repo root, never copied in
    assert cfg.limit and cfg.shuffle, "a default subset must be a seeded random sample"
    head = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    assert "Licence:" in head and f"--config examples/eval/{path.name}" in head and "Expected time" in head


@needs_shared_data
@pytest.mark.parametrize("path", CONFIGS, ids=_ids(CONFIGS))
def test_config_builds_items_from_the_real_data(path, monkeypatch):
    from tunesmith.eval.sources import read_records
    from tunesmith.eval.tasks import build_items

    monkeypatch.chdir(ROOT)  # the data paths are relative to the repository root
    cfg = load_eval_config(path, ["limit=2"])
    records = read_records(cfg)
    items = build_items(records, cfg, None)
    assert len(items) == 2
    for rec, it in zip(records, items):
        prompt = it.messages[-1]["content"]
        source = str(rec[EXPECTED[path.stem]]).strip()
        assert source and source[:60] in prompt, f"{path.stem}: the prompt lacks the record's {EXPECTED[path.stem]}"
        if cfg.task == "classification":
            assert it.label in cfg.labels, f"label {it.label!r} not in {cfg.labels}"
        elif cfg.task == "code":
            assert it.tests and all(t.startswith("assert") for t in it.tests)
            assert it.tests[0] in prompt
        else:
            assert it.refs and all(r.strip() for r in it.refs)
    if cfg.task == "math":
        assert all("####" in it.refs[0] for it in items)
    if cfg.name == "dialogsum":
        assert all(len(it.refs) == 3 for it in items)
    if cfg.name == "pubmedqa_decision":
        assert str(records[0]["CONTEXTS"][0])[:60] in items[0].messages[-1]["content"]
        assert len(read_records(load_eval_config(path, ["limit=null", "shuffle=false"]))) == 500  # the official test ids


@needs_shared_data
@pytest.mark.parametrize("path", CONFIGS, ids=_ids(CONFIGS))
def test_config_runs_on_the_tiny_model(path, tiny_model_dir, tmp_path, monkeypatch):
    from tunesmith import api

    monkeypatch.chdir(ROOT)
    r = api.evaluate(str(tiny_model_dir), str(path), ["limit=2", "max_new_tokens=8", f"output_dir={tmp_path}"], progress=False)
    assert r["n"] == 2 and r["dataset"] == path.stem
    assert r["primary_metric"] in r["metrics"]
    m = r["metrics"][r["primary_metric"]]
    assert m["low"] <= m["value"] <= m["high"]
    out = tmp_path / tiny_model_dir.name / "eval"
    assert json.loads((out / f"{path.stem}.json").read_text())["n"] == 2
    samples = [json.loads(x) for x in (out / f"{path.stem}.samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and all(s["input"] for s in samples)
    if r["task"] != "code":  # code items are scored by their tests, not a reference
        assert all(s["reference"] for s in samples)


# ------------------------------------------------------------ benchmarks/eval_shared.py

def _bench():
    spec = importlib.util.spec_from_file_location("eval_shared", ROOT / "benchmarks" / "eval_shared.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_script_writes_between_markers(tmp_path):
    b = _bench()
    env = {"date": "2025-01-01 10:00", "machine": "2 CPU cores, test", "os": "linux", "model": "m--x", "limit": "3",
           "versions": {"python": "3.11"}, "git": None, "load_start": "0.0", "load_end": "0.0"}
    row = {"dataset": "sst2", "task": "classification", "n": 3, "status": "ok", "primary": "accuracy",
           "metrics": {"accuracy": {"value": 0.5, "low": 0.0, "high": 1.0, "n": 3}, "bleu": {"value": 12.34, "low": 1.0, "high": 20.0, "n": 3}},
           "wall_s": 12.0, "s_per_item": 4.0, "config": "examples/eval/sst2.yaml", "date": env["date"], "model": "m--x"}
    doc = tmp_path / "b.md"
    doc.write_text(f"# Title\n\nintro\n\n{b.START}\nold placeholder\n{b.END}\n\nafter\n")
    b.write_section(doc, b.render_table([row], env), [row])
    text = doc.read_text()
    assert "old placeholder" not in text and text.startswith("# Title") and text.rstrip().endswith("after")
    assert "| sst2 | classification | 3 | accuracy 0.500 [0.000, 1.000] | bleu 12.3 [1.0, 20.0] | 4.00 | 12 s |" in text
    assert "--x" not in text.split(b._DATA_TAG)[1] and b.previous_rows(text) == [row]  # round-trips, comment-safe
    # A later run of another dataset keeps this row, marked with its date.
    later = {**env, "date": "2025-02-02 10:00"}
    rows = b.merge(b.previous_rows(text), [{**row, "dataset": "gsm8k", "config": "examples/eval/gsm8k.yaml", "date": later["date"]}])
    assert [r["dataset"] for r in rows] == ["gsm8k", "sst2"]
    assert "| sst2 (2025-01-01 10:00) |" in b.render_table(rows, later)


def test_benchmark_script_skips_absent_data(tmp_path):
    b = _bench()
    row = b.run_one(CONFIGS[0], "unused-model", [f"data={tmp_path / 'absent.jsonl'}"], force=False)
    assert row["status"].startswith("skipped:") and "absent.jsonl not found" in row["status"]
