"""Prompting and retrieval regimens, and runs chained on runs (init_from, rag on a fine-tuned
model): the recipe is recorded and applied identically by evaluation and generation."""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith import api
from tunesmith.config import load_train_config
from tunesmith.prompting import Recipe


def _cfg(tmp_path, model, demo_dir, regimen, *extra):
    return load_train_config(None, [f"regimen={regimen}", f"model.name={model}", f"data.train={demo_dir / 'qa_train.jsonl'}",
                                    f"name={regimen}", f"output_dir={tmp_path}", "data.system_prompt=Be brief.", *extra])


def test_zero_and_few_shot_prompt_runs(tmp_path, tiny_model_dir, demo_dir):
    r = api.train(_cfg(tmp_path, tiny_model_dir, demo_dir, "prompt", "prompting.shots=2", "prompting.template=Q: {question}"), progress=False)
    run = tmp_path / "prompt"
    meta = json.loads((run / "run.json").read_text())
    assert meta["regimen"] == "prompt" and meta["trains_weights"] is False and meta["status"] == "completed"
    assert r["trainable_params"] == 0 and (run / "config.yaml").exists() and (run / "data_manifest.json").exists()
    recipe = Recipe.load(run)
    msgs, _ = recipe.apply(["Who designed the Vossel altimeter?"])
    # system, two fixed (seeded) examples as earlier turns, then the templated question
    assert [m["role"] for m in msgs[0]] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[0][-1]["content"] == "Q: Who designed the Vossel altimeter?" and msgs[0][1]["content"].startswith("Q: ")
    # the same seed picks the same examples
    api.train(_cfg(tmp_path, tiny_model_dir, demo_dir, "prompt", "prompting.shots=2", "name=again", "prompting.template=Q: {question}"), progress=False)
    assert Recipe.load(tmp_path / "again").shots == recipe.shots
    # and the run generates through its recipe
    assert len(api.generate(str(run), ["Who designed it?"], max_new_tokens=3)) == 1


def test_similar_shots_never_include_the_question_itself(tmp_path, tiny_model_dir, demo_dir):
    api.train(_cfg(tmp_path, tiny_model_dir, demo_dir, "prompt", "prompting.shots=3", "prompting.shot_selection=similar"), progress=False)
    recipe = Recipe.load(tmp_path / "prompt")
    q = recipe.shots[5]["user"]
    msgs, _ = recipe.apply([q])
    users = [m["content"] for m in msgs[0][1:-1] if m["role"] == "user"]
    assert len(users) == 3 and q not in users
    # the chosen examples are about the same entity (most similar questions)
    entity = " ".join(q.split()[-2:]).rstrip("?")
    assert sum(entity in u for u in users) >= 2, (q, users)


def test_rag_run_retrieves_and_eval_reports_recall(tmp_path, tiny_model_dir, demo_dir):
    r = api.train(_cfg(tmp_path, tiny_model_dir, demo_dir, "rag", f"rag.corpus={demo_dir / 'corpus.jsonl'}", "rag.method=bm25", "rag.top_k=3"), progress=False)
    run = tmp_path / "rag"
    assert r["chunks"] > 0 and (run / "index" / "meta.json").exists()
    res = api.evaluate(str(run), progress=False, data=str(demo_dir / "qa_test.jsonl"), task="qa", limit=8, max_new_tokens=3, output_dir=str(tmp_path))
    samples = [json.loads(x) for x in (run / "eval" / "qa_test.samples.jsonl").read_text().splitlines()]
    tests = [json.loads(x) for x in (demo_dir / "qa_test.jsonl").read_text().splitlines()][:8]
    found = sum(t["doc_id"] in s["retrieved"] for s, t in zip(samples, tests)) / 8
    assert res["retrieval"]["recall@3"]["value"] == pytest.approx(found) and found >= 0.75
    assert all(len(s["retrieved"]) == 3 for s in samples)


def test_rag_requires_a_corpus(tmp_path, tiny_model_dir, demo_dir):
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError, match="rag.corpus"):
        _cfg(tmp_path, tiny_model_dir, demo_dir, "rag")


def test_init_from_stacks_adapters(tmp_path, tiny_model_dir, demo_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunesmith.models.loading import load_model

    common = ["adapter.mode=lora", "training.max_steps=3", "training.learning_rate=5e-3", "training.warmup_ratio=0"]
    api.train(_cfg(tmp_path, tiny_model_dir, demo_dir, "sft", *common, "name=first"), progress=False)
    api.train(_cfg(tmp_path, tiny_model_dir, demo_dir, "sft", *common, "name=second", f"init_from={tmp_path / 'first'}"), progress=False)
    meta = json.loads((tmp_path / "second" / "run.json").read_text())
    assert meta["chain"] == [str(tmp_path / "first")] and meta["init_from"] == str(tmp_path / "first")
    model, tok, ref = load_model(str(tmp_path / "second"))
    assert ref.base is not None and ref.base.adapter == tmp_path / "first" / "model"
    # the same as composing by hand with transformers and peft
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    manual = PeftModel.from_pretrained(PeftModel.from_pretrained(base, tmp_path / "first" / "model").merge_and_unload(), tmp_path / "second" / "model").eval()
    ids = tok("The depot is in", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, manual(ids).logits, atol=1e-5)
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()(ids).logits
    assert not torch.allclose(model(ids).logits, plain, atol=1e-4)  # training changed something
    # retrieval on top of the fine-tuned run is an arm too
    api.train(_cfg(tmp_path, tmp_path / "second", demo_dir, "rag", f"rag.corpus={demo_dir / 'corpus.jsonl'}", "rag.method=bm25", "name=rag-on-ft"), progress=False)
    _, _, ref2 = load_model(str(tmp_path / "rag-on-ft"))
    assert ref2.adapter == tmp_path / "second" / "model"


def test_a_chain_recorded_with_relative_paths_loads_from_another_folder(tmp_path, tiny_model_dir, demo_dir, monkeypatch):
    """Runs name their base as given (here runs/base, relative to where they were trained); they
    still load when the current folder is elsewhere."""
    from tunesmith.models.loading import resolve_model

    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    api.train(load_train_config(None, ["regimen=prompt", f"model.name={tiny_model_dir}", f"data.train={demo_dir / 'qa_train.jsonl'}",
                                       "name=base", "output_dir=runs"]), progress=False)
    api.train(load_train_config(None, ["regimen=prompt", "model.name=runs/base", f"data.train={demo_dir / 'qa_train.jsonl'}",
                                       "name=top", "output_dir=runs"]), progress=False)
    assert json.loads((project / "runs" / "top" / "run.json").read_text())["base_model"] == "runs/base"
    monkeypatch.chdir(tmp_path)
    ref = resolve_model(str(project / "runs" / "top"))
    assert ref.path == resolve_model(str(tiny_model_dir)).path
