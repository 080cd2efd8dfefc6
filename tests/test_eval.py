"""Evaluation: task scoring against hand-computed values, the file shapes of real benchmarks,
the runner's outputs and cache, and paired comparison."""

from __future__ import annotations

import json

import pytest

from tunesmith.eval.config import EvalConfig
from tunesmith.eval.scoring import score
from tunesmith.eval.sources import read_records
from tunesmith.eval.tasks import Item, build_items, extract_code


def _items(refs_list, **kw):
    return [Item(id=str(i), messages=[], refs=r, **kw) for i, r in enumerate(refs_list)]


def test_qa_scores_by_hand():
    items = _items([["Elvcombe"], ["472 crowns", "472"], ["Gunnel Jessamine"]])
    per, m, _ = score("qa", items, [["elvcombe.", "It costs 472", "Gunnel"]], EvalConfig(data="x"))
    # EM: 1 (normalised), 1 (alias "472"? no: "it costs 472" != "472") -> 0, 0  => 1/3
    assert [p["exact_match"] for p in per] == [1.0, 0.0, 0.0]
    # contains: 1, 1 ("472" inside), 0 => 2/3;  F1 item 3: pred {gunnel} vs {gunnel, jessamine}: P=1, R=1/2 -> 2/3
    assert [p["contains"] for p in per] == [1.0, 1.0, 0.0]
    assert per[2]["f1"] == pytest.approx(2 / 3)
    assert m["exact_match"]["value"] == pytest.approx(1 / 3) and m["contains"]["value"] == pytest.approx(2 / 3)
    assert m["exact_match"]["low"] <= m["exact_match"]["value"] <= m["exact_match"]["high"]


def test_math_and_classification_by_hand():
    items = _items([["... #### 18"], ["#### 3"]])
    per, m, _ = score("math", items, [["so she makes $18 a day.\n#### 18", "the answer is 4"]], EvalConfig(data="x", task="math"))
    assert [p["correct"] for p in per] == [1.0, 0.0] and m["accuracy"]["value"] == 0.5
    items = [Item(id=str(i), messages=[], label=g) for i, g in enumerate(["pos", "pos", "neg", "neg"])]
    per, m, extra = score("classification", items, [["pos", "neg", "neg", "neg"]], EvalConfig(data="x", task="classification"))
    assert m["accuracy"]["value"] == 0.75
    # F1(pos) = 2*1*0.5/1.5 = 2/3; F1(neg) = 2*(2/3)*1/(5/3) = 0.8; macro = 0.7333
    assert m["macro_f1"]["value"] == pytest.approx((2 / 3 + 0.8) / 2)
    # rows are gold labels, columns predictions: gold neg -> [neg 2, pos 0]; gold pos -> [neg 1, pos 1]
    assert extra["confusion_matrix"] == {"labels": ["neg", "pos"], "matrix": [[2, 0], [1, 1]]}


def test_code_pass_at_k_runs_tests_in_the_sandbox():
    items = [Item(id="0", messages=[], tests=["assert add(2, 3) == 5"]), Item(id="1", messages=[], tests=["assert sq(3) == 9"])]
    good_add = "```python\ndef add(a, b):\n    return a + b\n```"
    bad_add = "def add(a, b):\n    return a - b"
    loops = "```python\ndef sq(x):\n    while True: pass\n```"
    good_sq = "def sq(x):\n    return x * x"
    cfg = EvalConfig(data="x", task="code", n_samples=2, pass_k=[1, 2], code_timeout_s=2)
    per, m, _ = score("code", items, [[good_add, loops], [bad_add, good_sq]], cfg)
    # item 0: samples pass/fail -> pass@1 = 1/2, pass@2 = 1; item 1: fail (timeout)/pass -> same
    assert [p["passed"] for p in per] == [[1, 0], [0, 1]]
    assert m["pass@1"]["value"] == 0.5 and m["pass@2"]["value"] == 1.0
    assert extract_code("text\n```python\nx = 1\n```\nmore") == "x = 1\n"


def test_summarization_and_translation_scores():
    items = _items([["the cat sat on the mat"], ["a dog runs"]])
    per, m, _ = score("summarization", items, [["the cat sat on the mat", "a cat walks"]], EvalConfig(data="x", task="summarization"))
    assert per[0]["rouge1"] == 1.0 and per[1]["rouge1"] == pytest.approx(1 / 3)  # "a" matches: P=R=1/3
    per, m, _ = score("translation", items, [["the cat sat on the mat", "a dog runs"]], EvalConfig(data="x", task="translation"))
    assert m["bleu"]["value"] == pytest.approx(100.0) and m["chrf"]["value"] == pytest.approx(100.0)


def test_sources_lines_tsv_json_dict(tmp_path):
    (tmp_path / "s.en").write_text("A dog.\nA cat.\n")
    (tmp_path / "s.de").write_text("Ein Hund.\nEine Katze.\n")
    recs = read_records(EvalConfig(data=str(tmp_path / "s.en"), task="translation", format="lines", reference_file=str(tmp_path / "s.de")))
    assert recs[1] == {"id": "2", "text": "A cat.", "reference": "Eine Katze."}
    (tmp_path / "d.tsv").write_text("1\tgreat film\n0\tdull\n")
    recs = read_records(EvalConfig(data=str(tmp_path / "d.tsv"), task="classification", format="tsv", columns=["label", "sentence"]))
    cfg = EvalConfig(data="x", task="classification", label_map={"0": "negative", "1": "positive"})
    items = build_items(recs, cfg, None)
    assert [i.label for i in items] == ["positive", "negative"] and items[0].messages[-1]["content"] == "great film"
    (tmp_path / "q.json").write_text(json.dumps({"11": {"QUESTION": "q1", "final_decision": "yes"}, "22": {"QUESTION": "q2", "final_decision": "no"}}))
    (tmp_path / "ids.json").write_text(json.dumps({"22": "no"}))
    recs = read_records(EvalConfig(data=str(tmp_path / "q.json"), format="json_dict", ids_file=str(tmp_path / "ids.json")))
    assert recs == [{"id": "22", "QUESTION": "q2", "final_decision": "no"}]


def test_few_shot_turns_exclude_the_item(demo_dir):
    cfg = EvalConfig(data=str(demo_dir / "qa_test.jsonl"), task="qa", shots=3, seed=1)
    recs = read_records(cfg)
    items = build_items(recs, cfg, "Be brief.")
    m = items[0].messages
    assert m[0]["role"] == "system" and len(m) == 1 + 2 * 3 + 1
    assert all(t["content"] != recs[0]["prompt"] for t in m[1:-1]) and m[-1]["content"] == recs[0]["prompt"]


def test_runner_writes_results_and_caches(tmp_path, tiny_model_dir, demo_dir, monkeypatch):
    from tunesmith import api
    from tunesmith.eval import runner

    kw = dict(data=str(demo_dir / "qa_test.jsonl"), task="qa", limit=6, max_new_tokens=4, output_dir=str(tmp_path))
    r = api.evaluate(str(tiny_model_dir), progress=False, **kw)
    run = tmp_path / tiny_model_dir.name
    meta = json.loads((run / "run.json").read_text())
    assert meta["regimen"] == "base" and meta["trains_weights"] is False  # the bare model's own run dir
    res = json.loads((run / "eval" / "qa_test.json").read_text())
    samples = [json.loads(x) for x in (run / "eval" / "qa_test.samples.jsonl").read_text().splitlines()]
    assert res["n"] == 6 == len(samples) and set(res["metrics"]) >= {"exact_match", "f1", "contains"}
    assert res["metrics"]["f1"]["value"] == pytest.approx(sum(s["scores"]["f1"] for s in samples) / 6)
    assert res["helpfulness"]["proxy"] is True and "proxy" in res["helpfulness"]["method"]
    assert len(res["model"]["hash"]) == 64 and len(res["data"]["hash"]) == 64 and not r["cached"]

    # The same evaluation again does not generate: make generation impossible and call again.
    monkeypatch.setattr(runner, "_generate", lambda *a, **k: pytest.fail("regenerated a cached evaluation"))
    again = api.evaluate(str(tiny_model_dir), progress=False, **kw)
    assert again["cached"] and again["metrics"] == res["metrics"]
    # a changed setting is a different evaluation
    monkeypatch.undo()
    third = api.evaluate(str(tiny_model_dir), progress=False, **{**kw, "limit": 5})
    assert not third["cached"] and third["n"] == 5


def test_classification_eval_uses_label_likelihood(tmp_path, tiny_model_dir, demo_dir):
    from tunesmith import api

    r = api.evaluate(str(tiny_model_dir), progress=False, data=str(demo_dir / "cls_test.jsonl"), task="classification", limit=8, output_dir=str(tmp_path))
    samples = [json.loads(x) for x in (tmp_path / tiny_model_dir.name / "eval" / "cls_test.samples.jsonl").read_text().splitlines()]
    labels = sorted({s["reference"] for s in samples})  # the label set found in the data
    for s in samples:  # the prediction is the label with the highest log-likelihood
        scores = s["option_logprobs"]
        assert len(scores) == len(labels) >= 2
        assert s["prediction"] == labels[max(range(len(labels)), key=scores.__getitem__)]
    acc = sum(s["prediction"] == s["reference"] for s in samples) / len(samples)
    assert r["metrics"]["accuracy"]["value"] == pytest.approx(acc) and "macro_f1" in r["metrics"]


def test_compare_paired(tmp_path):
    from tunesmith.eval.compare import compare

    def write(name, scores):
        d = tmp_path / name / "eval"
        d.mkdir(parents=True)
        (d / "t.json").write_text(json.dumps({"dataset": "t", "data": {"hash": "h", "path": "t"}}))
        (d / "t.samples.jsonl").write_text("".join(json.dumps({"id": str(i), "scores": {"exact_match": s}}) + "\n" for i, s in enumerate(scores)))

    write("a", [0] * 30 + [1] * 10)
    write("b", [1] * 30 + [1] * 10)  # b fixes 30 items a got wrong, breaks none
    c = compare(str(tmp_path / "a"), str(tmp_path / "b"))
    row = c["rows"][0]
    assert c["n"] == 40 and row["diff"] == pytest.approx(0.75)
    assert row["mcnemar_p"] == pytest.approx(2 * 0.5 ** 30) and row["p_value"] < 0.01


def test_eval_with_judge_over_loopback_openai_server(tmp_path, tiny_model_dir, demo_dir):
    """Helpfulness from a real HTTP judge (a loopback OpenAI-protocol server), per item and summarised."""
    from openai_server import OpenAIStubServer

    from tunesmith import api

    with OpenAIStubServer() as srv:
        r = api.evaluate(str(tiny_model_dir), progress=False, data=str(demo_dir / "qa_test.jsonl"), task="qa", limit=4,
                         max_new_tokens=4, output_dir=str(tmp_path),
                         judge={"base_url": srv.base_url, "model": "stub", "api_key_env": None, "rubrics": ["helpfulness", "correctness"],
                                "cache_dir": str(tmp_path / "judge-cache")})
        assert srv.count == 8  # 4 items x 2 rubrics
    h = r["helpfulness"]
    assert h["method"] == "judge (stub)" and h["helpfulness"]["n"] == 4 and h["helpfulness"]["n_failed"] == 0
    samples = [json.loads(x) for x in (tmp_path / tiny_model_dir.name / "eval" / "qa_test.samples.jsonl").read_text().splitlines()]
    # the stub gives 5 when the answer contains the reference, else 1
    for s in samples:
        want = 5.0 if s["reference"][0].lower() in s["prediction"].lower() else 1.0
        assert s["scores"]["judge_correctness"] == want


def test_prompt_recipe_change_invalidates_the_eval_cache(tmp_path, tiny_model_dir, demo_dir):
    from tunesmith import api
    from tunesmith.config import load_train_config

    def prompt_run(shots):
        cfg = load_train_config(None, ["regimen=prompt", f"model.name={tiny_model_dir}", f"data.train={demo_dir / 'qa_train.jsonl'}",
                                       "name=p", f"output_dir={tmp_path}", f"prompting.shots={shots}"])
        api.train(cfg, overwrite=True, progress=False)

    kw = dict(data=str(demo_dir / "qa_test.jsonl"), task="qa", limit=3, max_new_tokens=3, output_dir=str(tmp_path))
    prompt_run(0)
    assert not api.evaluate(str(tmp_path / "p"), progress=False, **kw)["cached"]
    assert api.evaluate(str(tmp_path / "p"), progress=False, **kw)["cached"]
    prompt_run(2)  # same weights, different prompt: a different evaluation
    assert not api.evaluate(str(tmp_path / "p"), progress=False, **kw)["cached"]


def test_compare_picks_the_results_of_the_same_settings(tmp_path):
    """A run keeps every evaluation (keyed by cache key); compare pairs the ones of the same data
    and settings, not whichever was written last, and says which files it compared."""
    import shutil

    from tunesmith.errors import TunesmithError
    from tunesmith.eval.compare import compare

    def store(run, key, limit, scores):
        d = tmp_path / run / "eval"
        d.mkdir(parents=True, exist_ok=True)
        res = {"dataset": "t", "data": {"hash": "h", "path": "t"}, "cache_key": key * 12, "settings": {"limit": limit, "batch_size": len(key)},
               "created": f"2026-01-0{len(list(d.glob('*.json'))) + 1}"}
        (d / f"t.{key * 12}.json").write_text(json.dumps(res))
        (d / f"t.{key * 12}.samples.jsonl").write_text("".join(json.dumps({"id": str(i), "scores": {"exact_match": s}}) + "\n" for i, s in enumerate(scores)))
        shutil.copy(d / f"t.{key * 12}.json", d / "t.json")  # the latest copy
        shutil.copy(d / f"t.{key * 12}.samples.jsonl", d / "t.samples.jsonl")

    store("a", "1", 40, [0] * 40)
    store("a", "2", 1, [1])  # a later 1-item evaluation of the same dataset
    store("b", "33", 40, [1] * 40)  # another batch size: same per-item scores
    c = compare(str(tmp_path / "a"), str(tmp_path / "b"))
    assert c["n"] == 40 and c["a_file"].endswith("t.111111111111.json") and "limit=40" in c["settings"]
    store("c", "4", 5, [1] * 5)
    with pytest.raises(TunesmithError, match="same settings"):
        compare(str(tmp_path / "a"), str(tmp_path / "c"))
