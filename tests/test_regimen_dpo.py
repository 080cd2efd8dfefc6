"""The dpo regimen with the tiny model: each loss trains (loss falls, the training pairs become
preferred, every trainable parameter moves, the run directory is complete); the cached
reference log-probs are the starting model's; preference_accuracy matches a direct
computation; a wrong dataset type is refused before any model loads."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tunesmith import api
from tunesmith.config import load_train_config
from tunesmith.errors import TunesmithError

SYSTEM = "Be brief."


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on a small shared CPU, more threads only wait for each other."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def pref_files(tmp_path_factory, demo_dir):
    """12 training pairs and 4 validation pairs from the demo domain."""
    out = tmp_path_factory.mktemp("pref")
    train = [json.loads(x) for x in (demo_dir / "pref_train.jsonl").read_text().splitlines()[:12]]
    val = [json.loads(x) for x in (demo_dir / "pref_test.jsonl").read_text().splitlines()[:4]]
    return _write(out / "train.jsonl", train), _write(out / "val.jsonl", val)


def _cfg(tmp_path, tiny_model_dir, pref_files, name, *extra):
    train, val = pref_files
    return load_train_config(None, [
        "regimen=dpo", f"data.train={train}", f"data.validation={val}", f"model.name={tiny_model_dir}",
        "adapter.train_top_layers=1", "training.max_steps=12", "training.learning_rate=3e-3", "training.batch_size=4",
        "training.eval_every=6", "training.save_every=6", "training.warmup_ratio=0", "training.precision=fp32",
        "training.scheduler=constant", f"name={name}", f"output_dir={tmp_path}", f"data.system_prompt={SYSTEM}", *extra,
    ])


def _initial_trainables(cfg):
    from tunesmith.models.loading import load_model
    from tunesmith.training.adapters import apply_adapter

    torch.manual_seed(cfg.seed)  # LoRA B starts at zero, A is seeded: same as in train()
    model, _, _ = load_model(cfg.model.name)
    model = apply_adapter(model, cfg.adapter)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _direct_logprobs(spec, rows, system=None):
    """Summed answer log-probs of each pair, one conversation at a time (no shared batching)."""
    from tunesmith.data.packing import collate, unpacked
    from tunesmith.data.templating import render_chat, to_messages
    from tunesmith.models.loading import load_model
    from tunesmith.training.losses import sequence_logprobs

    model, tok, _ = load_model(spec)
    out = []
    with torch.no_grad():
        for r in rows:
            msgs = to_messages(r, "preference", system)
            lp = [sequence_logprobs(model, collate(unpacked([render_chat(
                tok, msgs + [{"role": "assistant", "content": a}], loss_on="last")]), tok.pad_token_id)).item()
                for a in (r["chosen"], r["rejected"])]
            out.append(lp)
    return out


@pytest.mark.parametrize("loss,mode", [("sigmoid", "lora"), ("ipo", "full"), ("simpo", "freeze")])
def test_dpo_loss_trains(tmp_path, tiny_model_dir, pref_files, loss, mode):
    from safetensors.torch import load_file

    from tunesmith.eval.preference import preference_accuracy

    # load_best=false: export the last weights, the ones the training metrics describe
    cfg = _cfg(tmp_path, tiny_model_dir, pref_files, f"dpo-{loss}", f"dpo.loss={loss}", f"adapter.mode={mode}",
               "training.load_best=false")
    before = _initial_trainables(cfg)
    result = api.train(cfg, progress=False)
    run = tmp_path / f"dpo-{loss}"

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    losses = [x["loss"] for x in steps]
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.01, losses
    for k in ("reward_margin", "reward_accuracy", "reward_chosen", "reward_rejected"):
        assert all(k in x and math.isfinite(x[k]) for x in steps), k
    acc = [x["reward_accuracy"] for x in steps]
    assert sum(acc[-3:]) / 3 > sum(acc[:3]) / 3 and sum(acc[-3:]) / 3 >= 0.75, acc
    if loss != "simpo":  # before the first update the policy is the reference: zero margin
        assert abs(steps[0]["reward_margin"]) < 1e-4 and abs(steps[0]["reward_chosen"]) < 1e-4, steps[0]
    assert steps[-1]["reward_margin"] > steps[0]["reward_margin"]
    vals = [x for x in lines if "val_loss" in x]
    assert len(vals) == 2 and all(0.0 <= x["val_preference_accuracy"] <= 1.0 for x in vals)

    # The training pairs are preferred more often than the base model preferred them.
    base = preference_accuracy(str(tiny_model_dir), str(pref_files[0]), system=SYSTEM, n_resamples=200)
    tuned = preference_accuracy(str(run), str(pref_files[0]), system=SYSTEM, n_resamples=200)
    assert tuned["accuracy"] > base["accuracy"] and tuned["mean_margin"] > base["mean_margin"], (base, tuned)

    # Every trainable parameter changed.
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    trained = load_file(str(run / "checkpoints" / state["latest"] / "trainable.safetensors"))
    assert set(trained) == set(before)
    unchanged = [n for n in before if torch.equal(before[n], trained[n])]
    assert not unchanged, unchanged[:5]

    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "completed" and meta["regimen"] == "dpo" and meta["dpo"]["loss"] == loss
    for f in ("config.yaml", "data_manifest.json", "env.json", "metrics.jsonl", "model", "checkpoints/state.json"):
        assert (run / f).exists(), f
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "ref_logprobs.safetensors").exists() == (loss != "simpo")
    assert result["reference"] == ("none" if loss == "simpo" else "computed")
    assert result["steps"] == 12 and result["best_val_loss"] is not None and result["trainable_params"] > 0


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_cached_reference_is_the_base_model(tmp_path, tiny_model_dir, pref_files, mode):
    from safetensors.torch import load_file

    cfg = _cfg(tmp_path, tiny_model_dir, pref_files, f"ref-{mode}", f"adapter.mode={mode}", "training.max_steps=2",
               "adapter.lora_dropout=0.1")
    api.train(cfg, progress=False)
    cache = tmp_path / f"ref-{mode}" / "ref_logprobs.safetensors"
    ref = load_file(str(cache))
    rows = {s: [json.loads(x) for x in p.read_text().splitlines()] for s, p in zip(("train", "validation"), pref_files)}
    for split in ("train", "validation"):
        direct = torch.tensor(_direct_logprobs(str(tiny_model_dir), rows[split], SYSTEM))
        assert ref[f"{split}_chosen"].shape == (len(rows[split]),)
        torch.testing.assert_close(ref[f"{split}_chosen"], direct[:, 0], atol=1e-4, rtol=0)
        torch.testing.assert_close(ref[f"{split}_rejected"], direct[:, 1], atol=1e-4, rtol=0)

    # A resumed run reads the cache instead of recomputing it.
    mtime = cache.stat().st_mtime_ns
    again = api.train(cfg, resume=True, progress=False)
    assert again["reference"] == "cached" and cache.stat().st_mtime_ns == mtime


def test_resume_continues_exactly(tmp_path, tiny_model_dir, pref_files):
    """3 steps, then resumed to 6 (constant lr, so the longer run's schedule is the same) ==
    6 steps straight: loop state, data order, dropout RNG and the cached reference all carry over."""
    common = ("adapter.lora_dropout=0.1", "training.eval_every=100", "training.save_every=100")
    straight = api.train(_cfg(tmp_path, tiny_model_dir, pref_files, "straight", "training.max_steps=6", *common), progress=False)
    api.train(_cfg(tmp_path, tiny_model_dir, pref_files, "split", "training.max_steps=3", *common), progress=False)
    resumed = api.train(_cfg(tmp_path, tiny_model_dir, pref_files, "split", "training.max_steps=6", *common),
                        resume=True, progress=False)
    assert resumed["reference"] == "cached" and resumed["steps"] == 6
    la, lb = ([json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in ("straight", "split"))
    la, lb = [x for x in la if "loss" in x], [x for x in lb if "loss" in x]
    assert [x["step"] for x in lb] == list(range(1, 7))
    for x, y in zip(la, lb):
        assert abs(x["loss"] - y["loss"]) < 1e-5 and abs(x["reward_margin"] - y["reward_margin"]) < 1e-5, (x, y)
    assert abs(straight["final_loss"] - resumed["final_loss"]) < 1e-5


def test_preference_accuracy_matches_direct_computation(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.eval.preference import preference_accuracy

    rows = [
        {"prompt": "What colour is the sky?", "chosen": "Blue.", "rejected": "Green, mostly."},
        {"prompt": "How many legs has a cat?", "chosen": "Four", "rejected": "Seven"},
        {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "A large city in Italy", "system": "Answer briefly."},
    ]
    data = _write(tmp_path / "pairs.jsonl", rows)
    # A second model for the reference: the tiny model with perturbed weights.
    torch.manual_seed(1)
    other = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    other.save_pretrained(tmp_path / "other")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "other")

    direct = _direct_logprobs(str(tiny_model_dir), rows, SYSTEM)
    ref = _direct_logprobs(str(tmp_path / "other"), rows, SYSTEM)
    res = preference_accuracy(str(tiny_model_dir), str(data), system=SYSTEM)
    want = [c - r for c, r in direct]
    assert res["n"] == 3 and res["scores"] == [int(m > 0) for m in want]
    assert res["accuracy"] == pytest.approx(sum(m > 0 for m in want) / 3)
    assert res["margins"] == pytest.approx(want, abs=1e-4)
    assert res["low"] <= res["accuracy"] <= res["high"]

    res_ref = preference_accuracy(str(tiny_model_dir), str(data), system=SYSTEM, ref_spec=str(tmp_path / "other"))
    want_ref = [(c - rc) - (r - rr) for (c, r), (rc, rr) in zip(direct, ref)]
    assert res_ref["margins"] == pytest.approx(want_ref, abs=1e-4)
    assert res_ref["scores"] == [int(m > 0) for m in want_ref]
    assert preference_accuracy(str(tiny_model_dir), str(data), system=SYSTEM, limit=2)["n"] == 2


def test_wrong_dataset_type_rejected_before_loading(tmp_path, demo_dir):
    cfg = load_train_config(None, ["regimen=dpo", f"data.train={demo_dir / 'qa_train.jsonl'}",
                                   f"model.name={tmp_path / 'no-such-model'}", "name=wrong", f"output_dir={tmp_path}"])
    with pytest.raises(TunesmithError, match="not accepted"):
        api.train(cfg, progress=False)
    assert not (tmp_path / "wrong").exists()  # refused before the run directory or any model


def test_ipo_with_label_smoothing_rejected_before_loading(tmp_path, demo_dir):
    cfg = load_train_config(None, ["regimen=dpo", f"data.train={demo_dir / 'pref_train.jsonl'}", "dpo.loss=ipo",
                                   "dpo.label_smoothing=0.1", f"model.name={tmp_path / 'no-such-model'}",
                                   "name=bad", f"output_dir={tmp_path}"])
    with pytest.raises(TunesmithError, match="label_smoothing"):
        api.train(cfg, progress=False)
    assert not (tmp_path / "bad").exists()
