"""GRPO regimen with the tiny random model: smoke runs (LoRA, full with a frozen reference),
user rewards receiving the dataset's columns, exact resume, the policy-gradient step moving
log-probs towards the rewarded completions, reference log-probs with the adapter disabled,
and early rejection of bad data or rewards.

The tiny model's output distribution is close to uniform over ~49k tokens with random
embeddings, so no reward can be raised across a few online steps reliably; the direction of
learning is tested on a fixed sampled batch instead (deterministic). Every run uses one
torch thread and fp32: on a shared 2-core machine two threads are many times slower.
"""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch

from tunesmith import api
from tunesmith.config import load_train_config

CPU = torch.device("cpu")


def _cfg(tmp_path, tiny_model_dir, data, name, *extra):
    return load_train_config(None, [
        "regimen=grpo", f"data.train={data}", f"model.name={tiny_model_dir}", f"name={name}", f"output_dir={tmp_path}",
        "training.max_steps=3", "training.learning_rate=1e-2", "training.batch_size=4", "training.warmup_ratio=0",
        "training.eval_every=2", "training.save_every=2", "training.threads=1", "training.precision=fp32",
        "grpo.group_size=4", "grpo.prompts_per_step=2", "grpo.max_new_tokens=6", *extra,
    ])


def _reward_module(tmp_path, monkeypatch, name: str) -> str:
    """A user reward module on sys.path: `chars` scores len(completion) and records its calls."""
    (tmp_path / f"{name}.py").write_text(
        "CALLS = []\n"
        "def chars(prompts, completions, **columns):\n"
        "    CALLS.append({'prompts': list(prompts), 'completions': list(completions), 'columns': columns})\n"
        "    return [len(c) / 20 for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return f"{name}:chars"


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _initial_trainables(cfg):
    from tunesmith.models.loading import load_model
    from tunesmith.training.adapters import apply_adapter

    torch.manual_seed(cfg.seed)  # LoRA B starts at zero, A is seeded: same as in train()
    model, _, _ = load_model(cfg.model.name)
    model = apply_adapter(model, cfg.adapter)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_grpo_lora_smoke(tmp_path, tiny_model_dir, demo_dir, monkeypatch):
    from safetensors.torch import load_file

    from tunesmith.eval.reward_eval import reward_gain

    reward = _reward_module(tmp_path, monkeypatch, "grpo_smoke_rewards")
    cfg = _cfg(tmp_path, tiny_model_dir, demo_dir / "qa_test.jsonl", "g-lora", "data.system_prompt=Be brief.")
    cfg.grpo.rewards = {reward: 1.0, "exact_match": 1.0}
    before = _initial_trainables(cfg)
    result = api.train(cfg, progress=False)
    run = tmp_path / "g-lora"

    lines = _metrics(run)
    steps = [x for x in lines if "loss" in x]
    assert [x["step"] for x in steps] == [1, 2, 3]
    for x in steps:
        assert torch.isfinite(torch.tensor(x["loss"]))
        for k in ("reward_mean", "reward_std", "reward_group_std", "kl", "clip_fraction", "completion_length",
                  f"reward/{reward}", "reward/exact_match", "grad_norm", "tokens_per_s"):
            assert x[k] is not None and torch.isfinite(torch.tensor(float(x[k]))), (k, x)
        assert x["reward_std"] > 0 and 1 <= x["completion_length"] <= 6
    vals = [x for x in lines if "val_reward" in x]
    assert [x["step"] for x in vals] == [2, 3] and f"val_reward/{reward}" in vals[0]

    # every trainable parameter changed (the last checkpoint against the start)
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    trained = load_file(str(run / "checkpoints" / state["latest"] / "trainable.safetensors"))
    assert set(trained) == set(before)
    unchanged = [n for n in before if torch.equal(before[n], trained[n])]
    assert not unchanged, unchanged[:5]

    meta = json.loads((run / "run.json").read_text())
    assert meta["regimen"] == "grpo" and meta["status"] == "completed" and meta["reference"] == "disable_adapter"
    for f in ("config.yaml", "data_manifest.json", "env.json", "metrics.jsonl", "model/adapter_config.json"):
        assert (run / f).exists(), f
    for k in ("status", "steps", "final_loss", "trained_tokens", "tokens_per_s", "wall_seconds", "trainable_params",
              "best_step", "exported", "final_reward", "select_metric"):
        assert k in result, k
    assert result["steps"] == 3 and result["trainable_params"] > 0 and result["select_metric"] == "val_reward"

    # the exported run scores with reward_eval (greedy, bootstrap CI, the run's system prompt)
    g = reward_gain(str(run), str(tiny_model_dir), str(demo_dir / "qa_test.jsonl"), {reward: 1.0}, limit=4,
                    max_new_tokens=4, n_resamples=200)
    r = g["model"]
    assert r["n"] == 4 and len(r["per_item"]) == 4 and r["ci"]["low"] <= r["mean_reward"] <= r["ci"]["high"]
    assert set(r["parts"]) == {reward} and len(r["completions"]) == 4
    assert g["gain"] == pytest.approx(r["mean_reward"] - g["base"]["mean_reward"]) and 0 < g["p_value"] <= 1


def test_full_finetuning_frozen_reference_and_several_updates(tmp_path, tiny_model_dir, demo_dir, monkeypatch):
    reward = _reward_module(tmp_path, monkeypatch, "grpo_full_rewards")
    cfg = _cfg(tmp_path, tiny_model_dir, demo_dir / "qa_test.jsonl", "g-full", "adapter.mode=full",
               "training.max_steps=2", "data.val_fraction=0", "grpo.kl_coef=0.5", "grpo.updates_per_batch=2",
               "training.learning_rate=1e-3")
    cfg.grpo.rewards = {reward: 1.0}
    r = api.train(cfg, progress=False)
    assert r["reference"] == "frozen_copy"
    steps = [x for x in _metrics(tmp_path / "g-full") if "loss" in x]
    # after the first update the policy moved: the second pass sees KL > 0 and ratios != 1
    assert all(x["kl"] > 0 for x in steps) and all(x["ratio_mean"] != 1.0 for x in steps)
    assert (tmp_path / "g-full" / "model" / "config.json").exists()

    # without a KL term, full fine-tuning keeps no reference copy and logs no KL
    cfg = _cfg(tmp_path, tiny_model_dir, demo_dir / "qa_test.jsonl", "g-full0", "adapter.mode=full",
               "training.max_steps=1", "data.val_fraction=0", "grpo.kl_coef=0")
    cfg.grpo.rewards = {reward: 1.0}
    assert api.train(cfg, progress=False)["reference"] is None
    assert [x["kl"] for x in _metrics(tmp_path / "g-full0")] == [None]


@pytest.mark.parametrize("data", ["qa_test", "qa_train"])
def test_user_reward_gets_dataset_columns(tmp_path, tiny_model_dir, demo_dir, monkeypatch, data):
    """prompt_only data passes its columns; prompt_completion data offers completion as `answer`."""
    name = f"grpo_cols_{data}"
    reward = _reward_module(tmp_path, monkeypatch, name)
    path = demo_dir / f"{data}.jsonl"
    cfg = _cfg(tmp_path, tiny_model_dir, path, f"g-{data}", "training.max_steps=1", "data.val_fraction=0")
    cfg.grpo.rewards = {reward: 1.0}
    api.train(cfg, progress=False)

    calls = sys.modules[name].CALLS
    assert len(calls) == 1
    call = calls[0]
    n = len(call["completions"])
    assert n == 2 * 4 and len(call["prompts"]) == n
    rows = {json.loads(x)["prompt"]: json.loads(x) for x in path.read_text().splitlines()}
    cols = call["columns"]
    expected = {"answer", "aliases", "fact_id", "doc_id"} if data == "qa_test" else {"answer", "completion", "fact_id"}
    assert expected <= set(cols) and "prompts" not in cols and "completions" not in cols
    assert all(len(v) == n for v in cols.values())
    for i, p in enumerate(call["prompts"]):
        assert p == call["prompts"][i - i % 4]  # groups of group_size completions per prompt
        row = rows[p]
        assert cols["answer"][i] == (row["answer"] if data == "qa_test" else row["completion"])
        assert cols["fact_id"][i] == row["fact_id"]


def test_resume_replays_the_same_samples(tmp_path, tiny_model_dir, demo_dir, monkeypatch):
    reward = _reward_module(tmp_path, monkeypatch, "grpo_resume_rewards")
    extra = ("data.val_fraction=0", "training.scheduler=constant", "adapter.lora_dropout=0.1")

    def cfg(name, steps):
        c = _cfg(tmp_path, tiny_model_dir, demo_dir / "qa_test.jsonl", name, f"training.max_steps={steps}", *extra)
        c.grpo.rewards = {reward: 1.0}
        return c

    a = api.train(cfg("straight", 4), progress=False)
    api.train(cfg("resumed", 2), progress=False)
    b = api.train(cfg("resumed", 4), progress=False, resume=True)
    assert a["steps"] == b["steps"] == 4
    la, lb = _metrics(tmp_path / "straight"), _metrics(tmp_path / "resumed")
    assert [x["step"] for x in lb] == [1, 2, 3, 4]
    for x, y in zip(la, lb):
        assert x["reward_mean"] == y["reward_mean"], (x, y)
        assert abs(x["loss"] - y["loss"]) < 1e-6 and abs(x["kl"] - y["kl"]) < 1e-6, (x, y)


def _tiny(tiny_model_dir):
    from tunesmith.models.loading import load_model

    torch.set_num_threads(1)
    model, tok, _ = load_model(str(tiny_model_dir))
    return model, tok


def _prompts(tok, n=2):
    from tunesmith.data.templating import prompt_text

    qs = ["What colour is the Wickett anemometer?", "Which courier does the Tarrcombe office use?"]
    return [prompt_text(tok, [{"role": "user", "content": q}]) for q in qs[:n]]


def test_policy_gradient_step_favours_higher_reward_completions(tiny_model_dir):
    from tunesmith.regimens.grpo import batch_logprobs, policy_update, sample_completions
    from tunesmith.rewards import combine
    from tunesmith.training.pref_losses import group_advantages

    model, tok = _tiny(tiny_model_dir)
    model.train()
    G = 4
    samples = sample_completions(model, tok, _prompts(tok), group_size=G, max_new_tokens=6, temperature=1.0, seed=3)
    total, _ = combine({"length_penalty": 1.0}, ["q"] * len(samples), samples.texts, options={"length_penalty": {"max_words": 1}})
    total = [t + len(c) / 100 for t, c in zip(total, samples.texts)]  # distinct rewards in every group
    adv = group_advantages(torch.tensor(total), G)
    kw = dict(temperature=1.0, batch_size=3, device=CPU, precision="fp32")
    before = (batch_logprobs(model, samples, **kw) * samples.mask).sum(1)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss, metrics = policy_update(model, samples, adv, old=None, ref=None, clip_eps=0.2, kl_coef=0.0, **kw)
    assert metrics["clip_fraction"] == 0.0 and abs(metrics["ratio_mean"] - 1.0) < 1e-6
    optimizer.step()
    after = (batch_logprobs(model, samples, **kw) * samples.mask).sum(1)

    delta = after - before
    assert delta[adv > 0].mean() > 0 > delta[adv < 0].mean(), (delta, adv)
    for g in range(len(samples) // G):  # in each group the best completion gained, the worst lost
        a, d = adv[g * G : (g + 1) * G], delta[g * G : (g + 1) * G]
        assert d[a.argmax()] > 0 > d[a.argmin()], (a, d)
    assert (adv * after).sum() > (adv * before).sum()


def test_micro_batches_accumulate_the_same_gradient(tiny_model_dir):
    from tunesmith.regimens.grpo import batch_logprobs, policy_update, sample_completions

    model, tok = _tiny(tiny_model_dir)
    samples = sample_completions(model, tok, _prompts(tok), group_size=3, max_new_tokens=5, seed=0)
    adv = torch.linspace(-1, 1, len(samples))
    kw = dict(temperature=0.7, device=CPU, precision="fp32")
    ref = batch_logprobs(model, samples, batch_size=6, **kw) - 0.1  # some KL to the "reference"
    grads = []
    for bs in (6, 2):
        model.zero_grad()
        loss, _ = policy_update(model, samples, adv, old=None, ref=ref, clip_eps=0.2, kl_coef=0.3, batch_size=bs, **kw)
        grads.append((loss, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert abs(grads[0][0] - grads[1][0]) < 1e-5
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[0][1], grads[1][1]))


def test_token_logprobs_match_unpadded_forward_and_reference_is_the_base_model(tiny_model_dir):
    from tunesmith.config import AdapterConfig
    from tunesmith.regimens.grpo import batch_logprobs, reference_logprobs, sample_completions
    from tunesmith.training.adapters import apply_adapter

    base, tok = _tiny(tiny_model_dir)
    prompts = [_prompts(tok)[0], "Hi"]  # different lengths: the short one is left-padded
    samples = sample_completions(base, tok, prompts, group_size=2, max_new_tokens=5, temperature=0.8, seed=1)
    kw = dict(temperature=0.8, batch_size=4, device=CPU, precision="fp32")
    base_lp = batch_logprobs(base, samples, **kw)

    # the batched, left-padded computation equals a plain forward pass of each sequence alone
    with torch.no_grad():
        for i in range(len(samples)):
            ids = samples.input_ids[i][samples.attention_mask[i].bool()]  # prompt and completion, no padding
            n = int(samples.mask[i].sum())
            logits = base(input_ids=ids[None]).logits[0, -n - 1 : -1] / 0.8
            ref = torch.log_softmax(logits.float(), -1).gather(-1, ids[-n:, None]).squeeze(-1)
            assert torch.allclose(base_lp[i, :n], ref, atol=1e-4), i
            assert torch.all(base_lp[i, n:] == 0)

    # LoRA with non-zero adapters: the policy differs, the reference (adapter disabled) is the base model
    peft = apply_adapter(copy.deepcopy(base), AdapterConfig(mode="lora", lora_r=4))
    with torch.no_grad():
        for n_, p in peft.named_parameters():
            if "lora_B" in n_:
                p.normal_(0, 0.5)
    peft.train()
    policy = batch_logprobs(peft, samples, **kw)
    reference = reference_logprobs(peft, None, samples, **kw)
    assert not torch.allclose(policy, base_lp, atol=1e-3)
    assert torch.allclose(reference, base_lp, atol=1e-5)
    assert peft.training  # modes are restored after the no-grad passes


def test_wrong_data_or_rewards_rejected_before_loading(tmp_path, demo_dir):
    from tunesmith.errors import TunesmithError

    def cfg(data, *extra):
        # a model that does not exist: any error about it would mean the model was being loaded
        return _cfg(tmp_path, tmp_path / "no-such-model", data, "g-bad", *extra)

    with pytest.raises(TunesmithError, match="not accepted"):
        api.train(cfg(demo_dir / "cls_train.jsonl"), progress=False)
    with pytest.raises(TunesmithError, match="not accepted"):
        api.train(cfg(demo_dir / "pref_train.jsonl"), progress=False)
    c = cfg(demo_dir / "qa_test.jsonl")
    c.grpo.rewards = {"exact_mach": 1.0}
    with pytest.raises(TunesmithError, match="did you mean 'exact_match'"):
        api.train(c, progress=False)
    c.grpo.rewards = {"no_such_module_xyz:f": 1.0}
    with pytest.raises(TunesmithError, match="cannot import"):
        api.train(c, progress=False)
    c.grpo.rewards, c.grpo.reward_options = {"exact_match": 1.0}, {"length_penalty": {"max_words": 3}}
    with pytest.raises(TunesmithError, match="length_penalty"):
        api.train(c, progress=False)
    prompts_only = tmp_path / "prompts.jsonl"
    prompts_only.write_text('{"prompt": "Hello?"}\n{"prompt": "Why?"}\n')
    with pytest.raises(TunesmithError, match="'answer'"):
        api.train(cfg(prompts_only), progress=False)
    assert not (tmp_path / "g-bad").exists()


def test_example_config_parses():
    from pathlib import Path

    cfg = load_train_config(Path(__file__).resolve().parents[1] / "examples" / "grpo.yaml")
    assert cfg.regimen == "grpo" and cfg.grpo.rewards["exact_match"] == 1.0


def test_scale_advantages_option_reaches_the_update(tmp_path, tiny_model_dir, demo_dir, monkeypatch):
    """grpo.scale_advantages=false (Dr. GRPO) centres the rewards without dividing by the group std:
    with the same samples and a reward whose group std is not 1, the first loss differs."""
    reward = _reward_module(tmp_path, monkeypatch, "grpo_scale_rewards")
    losses = {}
    for scale in ("true", "false"):
        cfg = _cfg(tmp_path, tiny_model_dir, demo_dir / "qa_test.jsonl", f"g-scale-{scale}", "training.max_steps=1",
                   "data.val_fraction=0", f"grpo.scale_advantages={scale}")
        cfg.grpo.rewards = {reward: 1.0}
        api.train(cfg, progress=False)
        step = [x for x in _metrics(tmp_path / f"g-scale-{scale}") if "loss" in x][0]
        losses[scale] = (step["loss"], step["reward_mean"], step["reward_group_std"])
    assert losses["true"][1:] == losses["false"][1:]  # the same samples and rewards
    assert losses["true"][2] not in (0.0, 1.0) and losses["true"][0] != pytest.approx(losses["false"][0])
