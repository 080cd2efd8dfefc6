"""The scenarios users fine-tune for, in the study: translation (BLEU and chrF), chat (multi-turn
conversations answered in context) and creative writing (labelled proxies, judge rubrics), each
metric against hand-computed values and shown to separate a good answer from a bad one; every
criterion defined per task or said not to apply; a study's eval section taking every
`tunesmith eval` setting; a classification set serving every arm."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from tunesmith.eval import metrics as M
from tunesmith.eval.config import EvalConfig
from tunesmith.eval.scoring import score
from tunesmith.eval.tasks import Item, build_items
from tunesmith.study.config import STUDY_FILLS, StudyEval, load_study_config


def _items(refs_list):
    return [Item(id=str(i), messages=[], refs=r) for i, r in enumerate(refs_list)]


# --------------------------------------------------------------------------- translation

def test_translation_bleu_and_chrf_by_hand():
    refs = [["the cat sat on the mat"], ["a dog ran in the park today"]]
    preds = ["the cat sat on the mat", "a dog ran in the park"]
    # Every n-gram of both hypotheses is in its reference: precisions 1; hypothesis 12 words,
    # references 13: brevity penalty exp(1 - 13/12).
    assert M.bleu(preds, refs) == pytest.approx(100 * math.exp(-1 / 12))
    # sentence 2 alone: 6 words against 7, precisions 1: exp(1 - 7/6)
    assert M.sentence_bleu(preds[1], refs[1]) == pytest.approx(100 * math.exp(-1 / 6))
    # chrF on "abc" vs "abcd": character n-gram precision 1 at orders 1-3 (the orders the hypothesis
    # has), recall 3/4, 2/3, 1/2; averaged over those orders: P = 1, R = 23/36; F(beta=2) = 5PR/(4P+R)
    r = (3 / 4 + 2 / 3 + 1 / 2) / 3
    assert M.sentence_chrf("abc", ["abcd"]) == pytest.approx(100 * 5 * r / (4 + r))
    per, m, _ = score("translation", _items(refs), [preds], EvalConfig(data="x", task="translation"))
    assert per[1]["bleu"] == pytest.approx(100 * math.exp(-1 / 6)) and per[0]["bleu"] == pytest.approx(100.0)
    assert m["bleu_sentence"]["value"] == pytest.approx((100 + 100 * math.exp(-1 / 6)) / 2)
    assert m["bleu"]["value"] == pytest.approx(100 * math.exp(-1 / 12))
    assert m["chrf_sentence"]["value"] == pytest.approx((per[0]["chrf"] + per[1]["chrf"]) / 2)


def test_translation_scores_separate_a_good_arm_from_a_bad_one():
    refs = [["Ein Hund läuft im Park."], ["Zwei Männer spielen Fußball."], ["Eine Frau liest ein Buch."]]
    good = ["Ein Hund läuft im Park.", "Zwei Männer spielen Fussball.", "Eine Frau liest ein Buch."]
    bad = ["A dog runs in the park.", "Two men play football.", "A woman reads a book."]  # untranslated
    cfg = EvalConfig(data="x", task="translation")
    g, b = score("translation", _items(refs), [good], cfg)[1], score("translation", _items(refs), [bad], cfg)[1]
    for name in ("bleu", "chrf", "chrf_sentence", "bleu_sentence"):
        assert g[name]["value"] > b[name]["value"] + 30, name


# --------------------------------------------------------------------------- chat

def test_chat_items_answer_the_last_user_turn_in_context():
    rec = {"id": "7", "messages": [{"role": "user", "content": "I want to bake bread."},
                                   {"role": "assistant", "content": "What kind of bread?"},
                                   {"role": "user", "content": "Sourdough. How long does it rise?"},
                                   {"role": "assistant", "content": "Usually 4 to 12 hours."}]}
    it = build_items([rec], EvalConfig(data="x", task="chat"), "Be kind.")[0]
    assert [m["role"] for m in it.messages] == ["system", "user", "assistant", "user"]
    assert it.messages[1]["content"] == "I want to bake bread." and it.messages[-1]["content"].startswith("Sourdough")
    assert it.refs == ["Usually 4 to 12 hours."]  # the reference is the conversation's last reply, never shown
    assert "What kind of bread?" in it.display and it.display.endswith("User: Sourdough. How long does it rise?")
    # prompt/reference records are single-turn chats
    it = build_items([{"id": "1", "prompt": "Hi", "reference": "Hello!"}], EvalConfig(data="x", task="chat"), None)[0]
    assert it.messages == [{"role": "user", "content": "Hi"}] and it.refs == ["Hello!"]
    # few-shot examples from conversations show their last exchange
    it = build_items([rec, {**rec, "id": "8"}], EvalConfig(data="x", task="chat", shots=1), None)[0]
    assert it.messages[0]["content"].startswith("Sourdough") and it.messages[1]["content"] == "Usually 4 to 12 hours."


def test_a_chat_conversation_must_end_with_the_reference_reply():
    from tunesmith.errors import TunesmithError

    rec = {"id": "1", "messages": [{"role": "user", "content": "Hi"}]}
    with pytest.raises(TunesmithError, match="must end with a user turn and the reference reply"):
        build_items([rec], EvalConfig(data="x", task="chat"), None)


def test_chat_scores_separate_a_good_reply_from_a_bad_one():
    refs = [["Let the dough rise for 4 to 12 hours at room temperature."], ["Preheat the oven to 230 C and bake for 40 minutes."]]
    good = ["Let it rise at room temperature for 4 to 12 hours.", "Bake for about 40 minutes in an oven preheated to 230 C."]
    bad = ["The French Revolution began in 1789.", "Basketball has five players per team."]
    cfg = EvalConfig(data="x", task="chat")
    pg, g, _ = score("chat", _items(refs), [good], cfg)
    pb, b, _ = score("chat", _items(refs), [bad], cfg)
    assert all(x["reference_similarity"] > y["reference_similarity"] + 0.3 for x, y in zip(pg, pb))
    assert g["rougeL"]["value"] > b["rougeL"]["value"]
    # identical text scores similarity 1
    assert score("chat", _items(refs[:1]), [[refs[0][0]]], cfg)[0][0]["reference_similarity"] == pytest.approx(1.0, abs=1e-4)


# --------------------------------------------------------------------------- creative writing

def test_distinct_n_repetition_and_length_control_by_hand():
    texts = ["the cat the cat", "the dog"]
    assert M.distinct_n(texts, 1) == 3 / 6  # the, cat, dog of 6 words
    assert M.distinct_n(texts, 2) == 3 / 4  # (the cat) twice, (cat the), (the dog)
    assert M.distinct_n(["one"], 2) == 0.0
    assert M.repetition_rate("a b c a b c", 3) == pytest.approx(1 / 4)  # abc, bca, cab, abc: one repeat of 4
    assert M.repetition_rate("a b c d") == 0.0 and M.repetition_rate("a b") == 0.0
    assert M.length_ratio("one two three", ["a b c d e f"]) == 0.5
    assert M.length_within("one two three", ["a b c d e f"]) == 1.0  # |0.5 - 1| <= 0.5
    assert M.length_within("one two", ["a b c d e f"]) == 0.0  # 1/3
    assert M.length_ratio("one two three", ["a b", "a b c d"]) == 3 / 2  # closest-length reference: 2 (tie: shorter)


def test_creative_proxies_separate_good_writing_from_a_loop():
    refs = [["Autumn leaves drift down,\nwhispering to the cold ground:\nsummer's last goodbye."],
            ["Dear Ms. Lee, thank you for the interview on Monday. I enjoyed learning about the team and hope to hear from you soon."]]
    good = ["Red leaves spin and fall,\nthe wind hums a quiet tune:\nsummer says farewell.",
            "Dear Ms. Lee, thank you for meeting me on Monday. I enjoyed hearing about the team and look forward to your reply."]
    loop = ["the the the the the the the the the the the the the the the the",
            "thank you thank you thank you thank you"]  # 8 words against 23: length off
    cfg = EvalConfig(data="x", task="creative")
    pg, g, _ = score("creative", _items(refs), [good], cfg)
    pb, b, _ = score("creative", _items(refs), [loop], cfg)
    assert g["reference_similarity"]["value"] > b["reference_similarity"]["value"] + 0.2
    assert g["distinct_1"]["value"] > b["distinct_1"]["value"] and g["distinct_2"]["value"] > b["distinct_2"]["value"]
    assert g["repetition_rate"]["value"] < 0.1 < 0.5 < b["repetition_rate"]["value"]
    assert [p["length_within"] for p in pg] == [1.0, 1.0] and pb[0]["length_within"] == 1.0 and pb[1]["length_within"] == 0.0
    assert pg[0]["repetition"] == 0.0 and pb[0]["repetition"] == pytest.approx(1 - 1 / 14)  # 14 trigrams, 1 distinct


def test_creative_rubrics_exist_and_are_versioned():
    from tunesmith.eval.rubrics import RUBRICS, render_messages

    for name in ("instruction_following", "style", "writing_quality"):
        assert RUBRICS[name].version and not RUBRICS[name].pairwise
    msgs = render_messages(RUBRICS["style"], {"question": "Write a haiku", "answer": "x", "reference": "y"})
    assert "Write a haiku" in msgs[1]["content"] and "<reference>" in msgs[1]["content"]


# --------------------------------------------------------------------------- the study's eval section

def test_study_eval_takes_every_eval_setting_under_its_name():
    names = {f.name for f in dataclasses.fields(StudyEval)}
    for f in dataclasses.fields(EvalConfig):
        assert (f.name in names) != (f.name in STUDY_FILLS), f.name


def _base(tmp_path, **eval_section):
    (tmp_path / "tr.jsonl").write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n")
    (tmp_path / "te.jsonl").write_text(json.dumps({"prompt": "q", "reference": "a"}) + "\n")
    return {"output_dir": str(tmp_path / "s"), "data": {"train": str(tmp_path / "tr.jsonl"), "test": str(tmp_path / "te.jsonl")},
            "eval": eval_section, "arms": [{"name": "zs"}]}


def test_every_study_eval_setting_reaches_the_evaluation(tmp_path):
    from tunesmith.study.evaluate import test_eval_cfg

    changed = {"task": "translation", "format": "tsv", "columns": ["text", "reference"], "fields": {"prompt": "text"},
               "prompt": "Translate: {text}", "system": "S", "labels": ["a"], "label_map": {"0": "a"}, "shots": 2,
               "shots_from": "f.jsonl", "shot_selection": "similar", "limit": 3, "shuffle": True, "max_new_tokens": 9,
               "temperature": 0.5, "top_p": 0.9, "stop": ["\n"], "batch_size": 3, "bootstrap": 200, "adherence_passages": 3,
               "general_ability": False, "judge": {"base_url": "http://judge/v1", "model": "j", "timeout_s": 5.0}}
    s = load_study_config(None, base=_base(tmp_path, **changed))
    cfg = test_eval_cfg(s, seed=4)
    for k, v in changed.items():
        got = getattr(cfg, k)
        assert (dataclasses.asdict(got) if k == "judge" else got) == (
            {**dataclasses.asdict(got), **v} if k == "judge" else v), k
    assert cfg.seed == 4 and cfg.data == s.data.test
    # the code task's settings too, with eval's own checks
    s = load_study_config(None, base=_base(tmp_path, task="code", show_tests=False, n_samples=2, pass_k=[1, 2], code_timeout_s=3.0))
    cfg = test_eval_cfg(s)
    assert (cfg.show_tests, cfg.n_samples, cfg.pass_k, cfg.code_timeout_s) == (False, 2, [1, 2], 3.0)
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError, match="pass_k: k=2 needs n_samples >= 2"):
        load_study_config(None, base=_base(tmp_path, task="code", pass_k=[2]))
    with pytest.raises(ConfigError, match="did you mean 'eval.prompt'"):
        load_study_config(None, base=_base(tmp_path, promt="x"))


def test_creative_study_asks_the_judge_for_the_writing_rubrics(tmp_path):
    from tunesmith.study.evaluate import test_eval_cfg

    s = load_study_config(None, base=_base(tmp_path, task="creative", judge={"base_url": "http://j/v1"}))
    assert test_eval_cfg(s).judge.rubrics == ["instruction_following", "style", "writing_quality"]
    s = load_study_config(None, base=_base(tmp_path, task="creative", judge={"base_url": "http://j/v1", "rubrics": ["style"]}))
    assert test_eval_cfg(s).judge.rubrics == ["style"]


@pytest.mark.parametrize("task", ["qa", "math", "classification", "summarization", "code", "translation", "chat", "creative"])
@pytest.mark.parametrize("judge", [False, True])
def test_every_criterion_is_defined_per_task_or_said_not_to_apply(tmp_path, task, judge):
    from tunesmith.study import tasks

    s = load_study_config(None, base=_base(tmp_path, task=task, **({"judge": {"base_url": "http://j/v1"}} if judge else {})))
    corr = tasks.correctness(s)
    assert corr["metric"] and corr["item_key"] and corr["measures"]
    skip = tasks.not_applicable(s)
    assert all(why.startswith(("not applicable", "not measured")) for why in skip.values())
    adherence = "domain_adherence" not in skip
    assert adherence == (task in tasks.ADHERENCE_TASKS)
    # helpfulness: a judge's rubric, the reference-similarity proxy, or a reason
    if "helpfulness" not in skip:
        assert judge or task in ("qa", "summarization")
    if task in ("chat", "creative"):
        assert ("helpfulness" in skip) != judge
    if task == "creative":
        assert corr["metric"] == ("judge_instruction_following" if judge else "reference_similarity") and corr["proxy"] != judge


# --------------------------------------------------------------------------- studies end to end (tiny model)

def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _scenario_study(tmp_path, tiny_model_dir, task: str) -> dict:
    d = tmp_path / task
    d.mkdir()
    if task == "translation":
        pairs = [("A dog runs.", "Ein Hund läuft."), ("A cat sleeps.", "Eine Katze schläft."), ("Two men talk.", "Zwei Männer reden."),
                 ("A girl sings.", "Ein Mädchen singt."), ("The sun shines.", "Die Sonne scheint."), ("A boy reads.", "Ein Junge liest.")]
        train = [{"prompt": f"Translate into German:\n{en}", "completion": de} for en, de in pairs]
        test = [{"text": en, "reference": de} for en, de in pairs[:4]]
        ev = {"prompt": "Translate into German:\n{text}"}
    elif task == "chat":
        conv = [[{"role": "user", "content": f"Tell me about {x}."}, {"role": "assistant", "content": f"{x} is nice. Anything else?"},
                 {"role": "user", "content": f"Why is {x} nice?"}, {"role": "assistant", "content": f"Because {x} is calm."}]
                for x in ("rain", "tea", "snow", "moss", "oak", "fog")]
        train = [{"messages": c} for c in conv]
        test = [{"messages": c} for c in conv[:4]]
        ev = {}
    else:
        items = [(f"Write a two-line poem about {x}.", f"The {x} is here,\nthe {x} is near.") for x in ("rain", "tea", "snow", "moss", "oak", "fog")]
        train = [{"prompt": p, "completion": r} for p, r in items]
        test = [{"prompt": p, "reference": r} for p, r in items[:4]]
        ev = {}
    return {"name": task, "output_dir": str(tmp_path / "studies"), "models": [str(tiny_model_dir)], "baseline": "zero-shot",
            "data": {"train": _write(d / "train.jsonl", train), "test": _write(d / "test.jsonl", test), "val_fraction": 0.0},
            "eval": {"task": task, "max_new_tokens": 4, "general_ability": False, **ev},
            "defaults": {"training.max_steps": 2, "training.batch_size": 2, "training.learning_rate": 3e-3},
            "arms": [{"name": "zero-shot", "regimen": "prompt"}, {"name": "sft", "regimen": "sft"}]}


@pytest.mark.parametrize("task", ["translation", "chat", "creative"])
def test_a_study_runs_each_new_task_and_reports_every_criterion(tmp_path, tiny_model_dir, task):
    from tunesmith.study.runner import run_study

    s = load_study_config(None, base=_scenario_study(tmp_path, tiny_model_dir, task))
    out = run_study(s, progress=False)
    res = out["results"]
    arms = {a["arm"]: a for a in res["arms"]}
    assert all(a["status"] == "completed" for a in arms.values())
    c = res["criteria"]["correctness"]
    assert c["task"] == task and c["metric"] == {"translation": "chrf_sentence", "chat": "reference_similarity",
                                                 "creative": "reference_similarity"}[task]
    for a in arms.values():
        assert a["results"]["correctness"]["n"] == 4
        assert a["vs_baseline"] == {} or a["vs_baseline"]["correctness"] is not None
    # every criterion of the study is measured, or results.json and the report say why not
    report = (tmp_path / "studies" / task / "report.md").read_text()
    for name in ("domain_adherence", "helpfulness", "retention"):
        assert name in res["criteria"] or name in res["not_measured"]
    for why in res["not_measured"].values():
        assert why in report
    extra = arms["sft"]["extra"]["answer"]
    want = {"translation": {"bleu", "chrf", "bleu_sentence"}, "chat": {"rougeL"},
            "creative": {"distinct_1", "distinct_2", "repetition_rate", "length_within"}}[task]
    assert set(extra) == want
    if task == "translation":
        samples = [json.loads(x) for x in (tmp_path / "studies" / task / "runs" / "sft" / "eval" / "test.samples.jsonl").read_text().splitlines()]
        assert samples[0]["input"] == "Translate into German:\nA dog runs."  # the study's eval.prompt
        assert arms["sft"]["results"]["correctness"]["value"] == pytest.approx(sum(x["scores"]["chrf"] for x in samples) / 4)


# --------------------------------------------------------------------------- a classification set serves every arm

def test_a_classification_set_serves_sft_prompting_and_head_arms(tmp_path, tiny_model_dir):
    from tunesmith import api
    from tunesmith.study.plan import plan
    from tunesmith.study.prepare import prepare_data
    from tunesmith.study.runner import validate_data

    rows = [{"text": f"review {i}: {'great' if i % 2 else 'awful'} film", "label": str(i % 2)} for i in range(12)]
    train, test = _write(tmp_path / "cls.jsonl", rows), _write(tmp_path / "test.jsonl", rows[:4])
    s = load_study_config(None, base={
        "output_dir": str(tmp_path / "s"), "models": [str(tiny_model_dir)], "data": {"train": train, "test": test, "val_fraction": 0.25},
        "eval": {"task": "classification", "prompt": "Sentiment of: {text}", "label_map": {"0": "negative", "1": "positive"}},
        "arms": [{"name": "zs"}, {"name": "few", "set": {"prompting.shots": 2}}, {"name": "sft", "regimen": "sft"},
                 {"name": "head", "regimen": "head"}]})
    prep = prepare_data(s)
    derived = [json.loads(x) for x in open(prep.train)]
    assert derived[0].keys() == {"prompt", "completion"} and all(r["prompt"].startswith("Sentiment of: review") for r in derived)
    assert {r["completion"] for r in derived} == {"negative", "positive"}  # worded as the test is scored
    assert prep.classification_train and prep.summary["train"]["derived"]
    jobs = {j.arm: j for j in plan(s, prep)}
    assert jobs["sft"].cfg.data.train == prep.train and jobs["head"].cfg.data.train == prep.classification_train
    validate_data(s, list(jobs.values()))
    # data preview shows the prompt/answer form SFT trains on: the label is the trained answer
    shown = api.preview_data(train, model=str(tiny_model_dir), index=1)
    assert "classification" in shown.splitlines()[0] and "[[1" in shown.replace(" ", "") and "review 1: great film" in shown


def test_a_prompting_arm_keeps_the_conversation_between_its_examples_and_the_last_question(tmp_path, tiny_model_dir):
    from tunesmith import api
    from tunesmith.answering import Answering
    from tunesmith.eval.runner import _apply_recipe

    conv = [{"role": "user", "content": "Hi, I bake."}, {"role": "assistant", "content": "Nice! What do you bake?"},
            {"role": "user", "content": "Bread. How long does it rise?"}, {"role": "assistant", "content": "4 to 12 hours."}]
    train = _write(tmp_path / "train.jsonl", [{"messages": conv}])
    r = api.train(str(_write_yaml(tmp_path, tiny_model_dir, train)), [], progress=False)
    cfg = EvalConfig(data="x", task="chat")
    items = build_items([{"id": "1", "messages": conv}], cfg, None)
    _apply_recipe(Answering.of(r["run_dir"]), items, [{"id": "1"}], cfg)
    got = [(m["role"], m["content"]) for m in items[0].messages]
    # system, the example (the dialogue's last exchange), the earlier turns, then the last question
    assert got[-4:] == [("assistant", "4 to 12 hours."), ("user", "Hi, I bake."), ("assistant", "Nice! What do you bake?"),
                        ("user", "Bread. How long does it rise?")]
    assert got[-5] == ("user", "Bread. How long does it rise?")  # the example's user turn answers to its reply


def _write_yaml(tmp_path, model, train):
    import yaml

    path = tmp_path / "prompt.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "output_dir": str(tmp_path / "runs"), "regimen": "prompt",
                                    "model": {"name": str(model)}, "data": {"train": train, "system_prompt": "Be kind."},
                                    "prompting": {"shots": 1}}))
    return path


def test_a_study_with_a_broken_conversation_fails_before_training(tmp_path, tiny_model_dir):
    from tunesmith.errors import TunesmithError
    from tunesmith.study.runner import run_study

    d = _scenario_study(tmp_path, tiny_model_dir, "chat")
    _write(tmp_path / "chat" / "test.jsonl", [{"messages": [{"role": "user", "content": "Hi"}]}])
    with pytest.raises(TunesmithError, match="must end with a user turn and the reference reply"):
        run_study(load_study_config(None, base=d), progress=False)
    assert not (tmp_path / "studies" / "chat" / "runs").exists()


def test_prompting_arms_are_not_told_an_out_of_domain_policy_on_translation_or_creative_writing(tmp_path):
    from tunesmith.study.plan import plan

    for task, told in (("translation", False), ("creative", False), ("chat", True), ("qa", True)):
        s = load_study_config(None, base=_base(tmp_path, task=task))
        assert ("reply exactly" in (plan(s)[0].cfg.data.system_prompt or "")) == told, task


def test_a_judged_creative_study_names_the_judge_rubric_versions_and_cost(tmp_path, tiny_model_dir):
    from openai_server import OpenAIStubServer

    from tunesmith.eval.rubrics import RUBRICS
    from tunesmith.study.runner import run_study

    d = _scenario_study(tmp_path, tiny_model_dir, "creative")
    with OpenAIStubServer() as srv:
        d["eval"]["judge"] = {"base_url": srv.base_url, "model": "stub-judge", "cache_dir": str(tmp_path / "judge")}
        out = run_study(load_study_config(None, base=d), progress=False)
        requests, url = srv.count, srv.base_url
    res = out["results"]
    # The stub scores 5 only an answer containing the reference; 4-token answers never do: every score is 1.
    assert res["criteria"]["correctness"]["metric"] == "judge_instruction_following"
    assert res["criteria"]["helpfulness"]["metric"] == "judge_writing_quality" and "helpfulness" not in res["not_measured"]
    for a in res["arms"]:
        assert a["results"]["correctness"]["value"] == 1.0 and a["results"]["helpfulness"]["value"] == 1.0
        j = a["extra"]["judge"]
        assert j["judge"]["model"] == "stub-judge" and j["rubric_versions"] == {
            r: RUBRICS[r].version for r in ("instruction_following", "style", "writing_quality")}
    assert requests == sum(a["extra"]["judge"]["stats"]["requests"] for a in res["arms"]) > 0
    report = (tmp_path / "studies" / "creative" / "report.md").read_text()
    assert f"Judge: stub-judge at {url}; rubrics instruction_following (version " in report
    assert f"{requests} requests" in report
