"""The training speed and memory options: length-grouped batches, a bf16 frozen base under LoRA,
activation checkpointing, fused AdamW and torch.compile. Each trains the tiny model: the loss
falls and every trainable parameter changes; a bf16-base adapter reloads with the same logits."""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith import api
from tunesmith.config import load_train_config
from tunesmith.training.batching import batch_order, grouped_order


def _cfg(tmp_path, tiny_model_dir, demo_dir, name, *extra):
    return load_train_config(None, [
        f"data.train={demo_dir / 'qa_train.jsonl'}", f"model.name={tiny_model_dir}", "training.max_steps=12",
        "training.learning_rate=3e-3", "training.batch_size=4", "training.eval_every=12", "training.save_every=12",
        "training.warmup_ratio=0", f"name={name}", f"output_dir={tmp_path}", *extra,
    ])


def _initial_trainables(cfg):
    from tunesmith.models.loading import load_model
    from tunesmith.training.adapters import apply_adapter

    torch.manual_seed(cfg.seed)
    model, _, _ = load_model(cfg.model.name)
    model = apply_adapter(model, cfg.adapter)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _check_trained(run, before):
    from safetensors.torch import load_file

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    trained = load_file(str(run / "checkpoints" / state["latest"] / "trainable.safetensors"))
    assert set(trained) == set(before)
    assert all(t.dtype == torch.float32 for t in trained.values())  # trainables stay fp32
    unchanged = [n for n in before if torch.equal(before[n], trained[n].to(before[n].dtype))]
    assert not unchanged, unchanged[:5]


def test_grouped_order_keeps_every_row_once_and_is_seeded():
    lengths = [(i * 37) % 101 + 1 for i in range(250)]
    a = grouped_order(lengths, 4, seed=3, epoch=0, window=8)
    assert sorted(a) == list(range(250))
    assert a == grouped_order(lengths, 4, seed=3, epoch=0, window=8)
    assert a != grouped_order(lengths, 4, seed=4, epoch=0, window=8)
    assert a != grouped_order(lengths, 4, seed=3, epoch=1, window=8)

    def padding(order):
        groups = [order[i:i + 4] for i in range(0, len(order), 4)]
        return sum(max(lengths[j] for j in g) * len(g) - sum(lengths[j] for j in g) for g in groups)

    plain = batch_order([[0] * n for n in lengths], 4, 3, 0, group_by_length=False)
    assert sorted(plain) == list(range(250)) and padding(a) < 0.7 * padding(plain)


@pytest.mark.parametrize("extra", [
    ["adapter.mode=lora", "training.base_dtype=bf16", "training.precision=bf16"],
    ["adapter.mode=lora", "training.gradient_checkpointing=true", "training.base_dtype=fp32"],
    ["adapter.mode=full", "training.gradient_checkpointing=true", "training.fused_optimizer=false", "data.group_by_length=false"],
    ["adapter.mode=full", "data.packing=false", "training.fused_optimizer=true"],
], ids=["lora-bf16-base", "lora-checkpointing", "full-checkpointing-unfused", "full-padded-grouped"])
def test_training_option_trains(tmp_path, tiny_model_dir, demo_dir, extra):
    cfg = _cfg(tmp_path, tiny_model_dir, demo_dir, "lever", *extra)
    before = _initial_trainables(cfg)
    api.train(cfg, progress=False)
    _check_trained(tmp_path / "lever", before)


def test_compile_option_trains(tmp_path, tiny_model_dir, demo_dir):
    pytest.importorskip("torch._dynamo")
    cfg = _cfg(tmp_path, tiny_model_dir, demo_dir, "compiled", "adapter.mode=full", "training.compile=true", "training.max_steps=6",
               "training.learning_rate=1e-2")
    before = _initial_trainables(cfg)
    api.train(cfg, progress=False)
    _check_trained(tmp_path / "compiled", before)


def test_bf16_base_adapter_reloads_with_the_same_logits(tmp_path, tiny_model_dir, demo_dir):
    """The saved adapter is fp32 and, loaded on the fp32 base from disk, gives the logits of the
    trained in-memory model run the same way (fp32 base): the bf16 base changes no saved weight."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunesmith.training.adapters import resolved_base_dtype

    assert resolved_base_dtype("auto", "lora", "bf16") == "bf16" and resolved_base_dtype("auto", "lora", "fp32") == "fp32"
    assert resolved_base_dtype("bf16", "full", "bf16") == "fp32"
    cfg = _cfg(tmp_path, tiny_model_dir, demo_dir, "bf16base", "adapter.mode=lora", "training.base_dtype=bf16",
               "training.precision=bf16", "training.max_steps=4", "training.learning_rate=1e-2")
    api.train(cfg, progress=False)
    model_dir = tmp_path / "bf16base" / "model"
    from safetensors.torch import load_file

    saved = load_file(str(model_dir / "adapter_model.safetensors"))
    assert saved and all(t.dtype == torch.float32 for t in saved.values())
    ids = torch.tensor([[1, 5, 9, 200, 31, 7]])
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), model_dir).eval()
    # The same adapter put back by hand into a fresh fp32 base: what the in-memory weights were.
    state = json.loads((tmp_path / "bf16base" / "checkpoints" / "state.json").read_text())
    trained = load_file(str(tmp_path / "bf16base" / "checkpoints" / state["latest"] / "trainable.safetensors"))
    from tunesmith.training.adapters import apply_adapter

    torch.manual_seed(0)
    manual = apply_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cfg.adapter)
    missing = set(trained) - {n for n, _ in manual.named_parameters()}
    assert not missing
    manual.load_state_dict(trained, strict=False)
    with torch.no_grad():
        a, b = loaded(input_ids=ids).logits, manual.eval()(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert not torch.allclose(a, AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=ids).logits, atol=1e-4)


def test_lora_layers_take_bf16_inputs_under_autocast_with_identical_gradients(tiny_model_dir):
    """peft casts each adapter's input to float32; under bf16 autocast the matmul casts it back, so
    the cast only costs memory (autograd keeps the copies). Without it the loss and every gradient
    are bit-identical, and outside autocast (generation) the cast is still made."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from tunesmith.models.loading import load_model
    from tunesmith.training.adapters import apply_adapter, apply_training_options

    cfg = load_train_config(None, ["data.train=x.jsonl", f"model.name={tiny_model_dir}", "adapter.mode=lora", "adapter.lora_dropout=0"])

    def build(hook: bool):
        torch.manual_seed(0)
        model, _, _ = load_model(str(tiny_model_dir), precision="bf16")
        model = apply_adapter(model, cfg.adapter)
        model = apply_training_options(model, cfg.training, "lora", "bf16" if hook else "fp32")
        if not hook:  # the same bf16 base, peft's own casting
            for p in model.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(torch.bfloat16)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.data.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
        return model.train()

    ids = torch.randint(0, 500, (2, 24), generator=torch.Generator().manual_seed(0))
    out = {}
    for hook in (True, False):
        model = build(hook)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        out[hook] = (loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        if hook:
            lora_layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
            assert lora_layers and all(m._forward_pre_hooks for m in lora_layers)
            assert all(m.cast_input_dtype_enabled is False for m in lora_layers)  # last forward ran under autocast
            with torch.no_grad():
                model.eval()(input_ids=ids[:, :4])  # no autocast: bf16 inputs must meet float32 adapters through the cast
            assert all(m.cast_input_dtype_enabled is True for m in lora_layers)
    assert out[True][0] == out[False][0]
    assert out[True][1].keys() == out[False][1].keys()
    assert all(torch.equal(out[True][1][n], out[False][1][n]) for n in out[False][1])
