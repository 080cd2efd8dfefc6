"""The classification-head regimen on the tiny model: each of head.train's modes trains what it
should (loss falls, every trainable parameter moves, frozen ones do not), class weights are the
hand-computed ones, the exported model reloads with transformers (+ peft) and predicts valid
labels, a trivially separable set is learned, and wrong data is refused before any model loads."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F

from tunesmith import api
from tunesmith.config import load_train_config
from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.regimens import head as H


def _cfg(tmp_path, tiny_model_dir, train, name, *extra):
    return load_train_config(None, [
        "regimen=head", f"data.train={train}", f"model.name={tiny_model_dir}", "training.max_steps=12",
        "training.learning_rate=3e-3", "training.batch_size=8", "training.eval_every=6", "training.save_every=6",
        "training.warmup_ratio=0", "training.precision=fp32", "data.max_length=64", f"name={name}",
        f"output_dir={tmp_path}", "training.threads=1", *extra,
    ])


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread is far faster for a model this small on a shared CPU; training.threads=1
    sets torch's process-wide count, so give later tests the count they had."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _initial(cfg, labels):
    """The model train() starts from (same seed, same new head), with its trainable parameters marked."""
    torch.manual_seed(cfg.seed)
    model, _, _, _ = H.load_classifier(cfg.start_model, labels)
    return H.mark_trainable(model, cfg)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _separable(rng, n_alpha, n_omega, n_filler=5):
    """Texts that differ in one word (alpha vs omega) at a random position among filler words."""
    filler = "the report from station north came late again with more rain than last week".split()
    rows = []
    for label, n in (("alpha", n_alpha), ("omega", n_omega)):
        for _ in range(n):
            words = rng.sample(filler, n_filler)
            words.insert(rng.randrange(len(words) + 1), label)
            rows.append({"text": " ".join(words), "label": f"is_{label}"})
    rng.shuffle(rows)
    return rows


# ------------------------------------------------------------------------------ pure parts

def test_class_weights_hand_checked():
    # 3 x class 0, 1 x class 1: N / (K n_c) = 4/6, 4/2; the mean weight over examples is 1.
    assert H.class_weights([0, 0, 0, 1], 2) == pytest.approx([2 / 3, 2.0])
    # 4/2/2 over 3 classes, plus a 4th class with no examples (weight 0).
    assert H.class_weights([0, 1, 0, 2, 0, 1, 0, 2], 4) == pytest.approx([8 / 12, 8 / 6, 8 / 6, 0.0])
    # The summed loss over the summed weight is F.cross_entropy's weighted mean, and equals the
    # hand-written weighted average of per-example losses.
    torch.manual_seed(0)
    logits, y = torch.randn(4, 2), torch.tensor([0, 0, 0, 1])
    w = torch.tensor(H.class_weights(y.tolist(), 2))
    s, denom = H.head_loss(logits, y, w)
    per = F.cross_entropy(logits, y, reduction="none")
    hand = (per[:3].sum() * (2 / 3) + per[3] * 2.0) / (3 * (2 / 3) + 2.0)
    assert float(s / denom) == pytest.approx(float(hand), rel=1e-6)
    assert float(s / denom) == pytest.approx(float(F.cross_entropy(logits, y, weight=w)), rel=1e-6)
    s1, d1 = H.head_loss(logits, y, None)
    assert d1 == 4 and float(s1 / d1) == pytest.approx(float(per.mean()), rel=1e-6)


def test_label_order_and_padding(default_tokenizer):
    assert H.label_order([{"label": "b"}, {"label": "a"}, {"label": "b"}]) == ["a", "b"]
    ids, stats = H.encode_texts(default_tokenizer, ["one two three four five six", "hi"], 3)
    assert [len(x) for x in ids] == [3, len(default_tokenizer("hi")["input_ids"])] and stats["truncated"] == 1
    batch = H.collate_ids(ids, pad_id=default_tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (2, 3) and batch["attention_mask"].sum(1).tolist() == [3, len(ids[1])]


# ------------------------------------------------------------------------------ refused early

def test_wrong_dataset_type_rejected_before_loading(tmp_path, demo_dir):
    cfg = load_train_config(None, ["regimen=head", f"data.train={demo_dir / 'qa_train.jsonl'}",
                                   "model.name=/nonexistent/model", "name=wrong", f"output_dir={tmp_path}"])
    with pytest.raises(TunesmithError, match="not accepted"):
        api.train(cfg, progress=False)
    assert not (tmp_path / "wrong").exists()  # refused before the run directory (and any model)


def test_bad_settings_rejected_before_loading(tmp_path, demo_dir):
    base = ["regimen=head", f"data.train={demo_dir / 'cls_train.jsonl'}", "model.name=/nonexistent/model",
            "name=bad", f"output_dir={tmp_path}"]
    with pytest.raises(ConfigError, match="select_metric"):
        api.train(load_train_config(None, base + ["training.select_metric=exact_match"]), progress=False)
    val = _write(tmp_path / "val.jsonl", [{"text": "something else", "label": "unheard_of"}])
    with pytest.raises(TunesmithError, match="unheard_of"):
        api.train(load_train_config(None, base + [f"data.validation={val}"]), progress=False)
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------ training

@pytest.mark.parametrize("mode", ["head", "lora", "full"])
def test_head_mode(tmp_path, tiny_model_dir, mode):
    from safetensors.torch import load_file

    from tunesmith.eval.head_eval import predict_labels

    rows = _separable(random.Random(1), 24, 24)
    lr = {"head": "3e-2", "lora": "1e-2", "full": "3e-3"}[mode]
    cfg = _cfg(tmp_path, tiny_model_dir, _write(tmp_path / "train.jsonl", rows), f"head-{mode}", f"head.train={mode}",
               f"training.learning_rate={lr}")
    labels = ["is_alpha", "is_omega"]
    start = _initial(cfg, labels)
    before = {n: p.detach().clone() for n, p in start.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in start.named_parameters() if not p.requires_grad}
    result = api.train(cfg, progress=False)
    run = tmp_path / f"head-{mode}"

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert len(losses) == 12 and all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.05, losses
    vals = [x for x in lines if "val_loss" in x]
    assert len(vals) == 2 and all(0.0 <= v["val_accuracy"] <= 1.0 for v in vals)

    # every trainable parameter changed (the latest checkpoint against the start)
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    trained = load_file(str(run / "checkpoints" / state["latest"] / "trainable.safetensors"))
    assert set(trained) == set(before)
    assert not [n for n in before if torch.equal(before[n], trained[n])]
    if mode == "head":
        assert set(trained) == {"score.weight"}
        # and the frozen body is exported exactly as it started
        exported = load_file(str(run / "model" / "model.safetensors"))
        assert frozen and all(torch.equal(exported[n], t) for n, t in frozen.items())
    if mode == "lora":
        assert any("lora_A" in n for n in trained) and any(".score.modules_to_save." in n for n in trained)
        assert (run / "model" / "adapter_config.json").exists()

    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "completed" and meta["regimen"] == "head" and meta["task"] == "classification"
    assert meta["labels"] == labels and meta["head_train"] == mode
    counts = json.loads((run / "data_manifest.json").read_text())["label_counts"]  # after the validation split
    n = sum(counts.values())
    assert meta["class_weights"] == pytest.approx([n / (2 * counts[lab]) for lab in labels])
    for f in ("config.yaml", "data_manifest.json", "env.json", "metrics.jsonl", "model", "model/labels.json"):
        assert (run / f).exists(), f
    assert json.loads((run / "model" / "labels.json").read_text()) == labels
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    for k in ("steps", "final_loss", "best_val_loss", "best_step", "exported", "trainable_params", "best_val_accuracy"):
        assert result[k] is not None, k

    # the export reloads (transformers, + peft for lora) and predicts valid labels
    texts = [r["text"] for r in _separable(random.Random(2), 3, 3)]
    preds = predict_labels(run, texts, batch_size=4)
    assert len(preds) == 6 and set(preds) <= set(labels)


def test_separable_set_is_learned_and_export_round_trips(tmp_path, tiny_model_dir):
    from tunesmith.eval.head_eval import evaluate_head, predict_labels

    rng = random.Random(0)
    train = _write(tmp_path / "train.jsonl", _separable(rng, 72, 24, n_filler=3))  # imbalanced 3:1
    val = _write(tmp_path / "val.jsonl", _separable(rng, 8, 8, n_filler=3))
    cfg = _cfg(tmp_path, tiny_model_dir, train, "sep", "head.train=full", f"data.validation={val}", "training.batch_size=16",
               "training.max_steps=20", "training.eval_every=10", "training.save_every=10", "training.learning_rate=1e-3")
    result = api.train(cfg, progress=False)
    run = tmp_path / "sep"
    meta = json.loads((run / "run.json").read_text())
    assert meta["labels"] == ["is_alpha", "is_omega"]
    assert meta["class_weights"] == pytest.approx([96 / (2 * 72), 96 / (2 * 24)])  # [2/3, 2]
    vals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "val_accuracy" in x]
    assert vals[-1]["val_accuracy"] == 1.0 and result["best_val_accuracy"] == 1.0, vals

    # The exported (best) model scores the validation file as training did.
    report = evaluate_head(run, val)
    assert report["metrics"]["accuracy"]["value"] == result["best_val_accuracy"]
    acc = report["metrics"]["accuracy"]
    assert acc["low"] <= acc["value"] <= acc["high"] and acc["n"] == 16
    assert report["metrics"]["macro_f1"]["value"] == 1.0 and report["primary_metric"] == "accuracy"
    assert predict_labels(run, ["north alpha rain", "omega the report"]) == ["is_alpha", "is_omega"]


def test_head_on_top_of_a_lora_run(tmp_path, tiny_model_dir, demo_dir):
    """A LoRA SFT run as the starting model: its adapter is merged before the classifier is built,
    and a LoRA head over it is exported merged (an adapter over the plain base would lose the SFT)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from tunesmith.eval.head_eval import predict_labels
    from tunesmith.models.loading import load_model

    sft = load_train_config(None, [f"data.train={demo_dir / 'qa_train.jsonl'}", f"model.name={tiny_model_dir}",
                                   "training.max_steps=1", "training.batch_size=4", "training.learning_rate=1e-2",
                                   "name=sft", f"output_dir={tmp_path}", "data.val_fraction=0"])
    api.train(sft, progress=False)
    cfg = _cfg(tmp_path, tiny_model_dir, demo_dir / "cls_train.jsonl", "head-on-sft", f"init_from={tmp_path / 'sft'}",
               "head.train=lora", "training.max_steps=2", "training.eval_every=2")
    labels = ["billing", "returns", "shipping", "technical"]
    model, _, _, merged = H.load_classifier(cfg.start_model, labels)
    assert merged
    # The classifier's body is the SFT run's merged body, not the plain base.
    causal, _, _ = load_model(str(tmp_path / "sft"), merge_adapter=True)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(model.state_dict()[name], causal.state_dict()[name])
    assert not torch.equal(model.state_dict()[name], plain.state_dict()[name])

    result = api.train(cfg, progress=False)
    run = tmp_path / "head-on-sft"
    assert result["export_format"] == "full" and not (run / "model" / "adapter_config.json").exists()
    exported = AutoModelForSequenceClassification.from_pretrained(run / "model")
    assert exported.config.num_labels == 4
    # the merged export carries the trained head (peft's saved copy of `score`), not the initial one
    from safetensors.torch import load_file

    state = json.loads((run / "checkpoints" / "state.json").read_text())
    trained = load_file(str(run / "checkpoints" / state["best"] / "trainable.safetensors"))
    head = next(t for n, t in trained.items() if n.endswith("score.modules_to_save.default.weight"))
    assert torch.equal(exported.score.weight, head)
    assert set(predict_labels(run, ["my parcel never arrived", "refund please"])) <= set(labels)
    with pytest.raises(TunesmithError, match="classification-head run"):
        api.train(_cfg(tmp_path, tiny_model_dir, demo_dir / "cls_train.jsonl", "again", f"init_from={run}"), progress=False)


def test_interrupted_run_resumes_exactly(tmp_path, tiny_model_dir, monkeypatch):
    """Stopped right after the step-4 checkpoint and resumed, a LoRA head run (dropout: the RNG
    state must come back too) retraces the uninterrupted run's losses step for step."""
    train = _write(tmp_path / "train.jsonl", _separable(random.Random(3), 16, 16))
    args = ("head.train=lora", "adapter.lora_dropout=0.1", "training.max_steps=8", "training.save_every=4",
            "training.eval_every=4", "training.learning_rate=1e-2")
    api.train(_cfg(tmp_path, tiny_model_dir, train, "straight", *args), progress=False)

    real_save = H.ckpt.save_checkpoint

    def save_then_die(root, step, **kw):
        out = real_save(root, step, **kw)
        if step == 4:
            raise KeyboardInterrupt("killed")
        return out

    monkeypatch.setattr(H.ckpt, "save_checkpoint", save_then_die)
    cfg = _cfg(tmp_path, tiny_model_dir, train, "killed", *args)
    with pytest.raises(KeyboardInterrupt):
        api.train(cfg, progress=False)
    monkeypatch.setattr(H.ckpt, "save_checkpoint", real_save)
    assert json.loads((tmp_path / "killed" / "run.json").read_text())["status"] == "running"
    api.train(cfg, resume=True, progress=False)

    def curve(name):
        return [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    a, b = curve("straight"), curve("killed")
    assert [x["step"] for x in b if "loss" in x] == list(range(1, 9))
    for x, y in zip(a, b):
        for k in ("loss", "val_loss", "val_accuracy"):
            assert (k in x) == (k in y) and abs(x.get(k, 0) - y.get(k, 0)) < 1e-5, (x, y)
    ra = json.loads((tmp_path / "straight" / "run.json").read_text())
    rb = json.loads((tmp_path / "killed" / "run.json").read_text())
    assert ra["best_val_loss"] == pytest.approx(rb["best_val_loss"], abs=1e-6)


def test_tunesmith_eval_routes_head_runs_to_the_head(tmp_path, tiny_model_dir, demo_dir):
    """`tunesmith eval` on a head run scores with the head, under the generative eval's metric names."""
    from tunesmith import api
    from tunesmith.config import load_train_config
    from tunesmith.errors import TunesmithError

    cfg = load_train_config(None, ["regimen=head", f"model.name={tiny_model_dir}", f"data.train={demo_dir / 'cls_train.jsonl'}",
                                   "name=h", f"output_dir={tmp_path}", "training.max_steps=2", "training.batch_size=8"])
    api.train(cfg, progress=False)
    r = api.evaluate(str(tmp_path / "h"), progress=False, data=str(demo_dir / "cls_test.jsonl"), task="classification", limit=10)
    assert r["metrics"]["accuracy"]["n"] == 10 and "macro_f1" in r["metrics"]
    assert (tmp_path / "h" / "eval" / "cls_test.json").exists()
    assert api.evaluate(str(tmp_path / "h"), progress=False, data=str(demo_dir / "cls_test.jsonl"), task="classification", limit=10)["cached"]
    # `tunesmith generate` on a head run gives the label and its probability, agreeing with eval's
    # prediction for the same text.
    from tunesmith.eval.head_eval import predict_labels

    texts = ["my parcel never arrived", "refund please"]
    got = api.generate(str(tmp_path / "h"), texts)
    assert [g["label"] for g in got] == predict_labels(tmp_path / "h", texts)
    for g in got:
        assert abs(sum(g["probabilities"].values()) - 1) < 1e-5 and g["probability"] == max(g["probabilities"].values())
    with pytest.raises(TunesmithError, match="classification-head run"):
        api.conversations(str(tmp_path / "h"), ["hello"])


def test_no_validation_split(tmp_path, tiny_model_dir, demo_dir):
    """val_fraction 0 (no validation data) trains and exports the last weights."""
    cfg = load_train_config(None, ["regimen=head", f"model.name={tiny_model_dir}", f"data.train={demo_dir / 'cls_train.jsonl'}",
                                   "name=h0", f"output_dir={tmp_path}", "training.max_steps=2", "training.batch_size=8",
                                   "data.val_fraction=0.0"])
    r = api.train(cfg, progress=False)
    assert r["steps"] == 2 and r["exported"] == "last" and (tmp_path / "h0" / "model" / "labels.json").exists()
