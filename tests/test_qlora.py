"""QLoRA (adapter.mode: qlora): LoRA adapters on a 4-bit quantized frozen base through bitsandbytes,
which runs on CPU too. The tiny model trains with its decoder's linear layers held in 4 bits: the
loss falls, every LoRA weight changes, the base stays 4-bit and frozen, and the saved adapter loads
on the full-precision base for evaluation and export. Without bitsandbytes: a one-line error."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from tunesmith import api
from tunesmith.config import load_train_config
from tunesmith.errors import ConfigError

bnb = pytest.importorskip("bitsandbytes")


def _cfg(tmp_path, tiny_model_dir, demo_dir, *extra):
    return load_train_config(None, [
        f"data.train={demo_dir / 'qa_train.jsonl'}", f"model.name={tiny_model_dir}", "adapter.mode=qlora",
        "training.max_steps=12", "training.learning_rate=3e-3", "training.batch_size=4", "training.eval_every=12",
        "training.save_every=12", "training.warmup_ratio=0", "name=q", f"output_dir={tmp_path}", *extra,
    ])


def _start(cfg, precision):
    from tunesmith.training.adapters import load_trainable
    from tunesmith.training.runtime import seed_everything

    seed_everything(cfg.seed)  # as prepare_runtime does: the adapters start from the same draws as in train()
    model, *_ = load_trainable(cfg, torch.device("cpu"), precision=precision)
    return model


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_qlora_holds_the_base_in_4_bits_and_trains_every_adapter_weight(tmp_path, tiny_model_dir, demo_dir, precision):
    from safetensors.torch import load_file

    cfg = _cfg(tmp_path, tiny_model_dir, demo_dir, f"training.precision={precision}")
    model = _start(cfg, precision)
    linears = [m for m in model.get_decoder().modules() if isinstance(m, bnb.nn.Linear4bit)]
    # 2 blocks x (q, k, v, o, gate, up, down)
    assert len(linears) == 14
    assert all(m.weight.dtype == torch.uint8 and m.weight.quant_state.quant_type == "nf4" for m in linears)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert before and all("lora_" in n for n in before)
    del model

    api.train(cfg, progress=False)
    run = tmp_path / "q"
    losses = [x["loss"] for x in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in x]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    trained = load_file(str(run / "checkpoints" / state["latest"] / "trainable.safetensors"))
    assert set(trained) == set(before)
    assert all(t.dtype == torch.float32 for t in trained.values())
    assert not [n for n in before if torch.equal(before[n], trained[n])]
    info = json.loads((run / "run.json").read_text())
    assert info["adapter"] == "qlora"
    from tunesmith.models.loading import load_model

    plain, _, _ = load_model(str(tiny_model_dir))
    assert info["total_params"] == sum(p.numel() for p in plain.parameters()) + info["trainable_params"]  # 4-bit weights counted as weights

    # The adapter is evaluated and exported on the full-precision base (as QLoRA adapters are merged).
    out = api.generate(str(run), ["What is the capital of Vardena?"], max_new_tokens=4)
    assert len(out) == 1 and isinstance(out[0], str)


def test_qlora_resumes_exactly(tmp_path, tiny_model_dir, demo_dir):
    full = _cfg(tmp_path, tiny_model_dir, demo_dir, "training.max_steps=6", "training.save_every=3", "training.eval_every=3",
                "training.precision=fp32", "name=whole")
    api.train(full, progress=False)
    part = _cfg(tmp_path, tiny_model_dir, demo_dir, "training.max_steps=6", "training.save_every=3", "training.eval_every=3",
                "training.precision=fp32", "name=parts")
    import tunesmith.regimens.sft as sft

    class Stop(Exception):
        pass

    real = sft.ckpt.save_checkpoint

    def stop_after_first(root, step, **kw):  # the first checkpoint is written, then the "crash"
        real(root, step, **kw)
        raise Stop

    sft.ckpt.save_checkpoint = stop_after_first
    try:
        with pytest.raises(Stop):
            api.train(part, progress=False)
    finally:
        sft.ckpt.save_checkpoint = real
    api.train(part, resume=True, progress=False)

    def curve(name):
        return [x["loss"] for x in map(json.loads, (tmp_path / name / "metrics.jsonl").read_text().splitlines()) if "loss" in x]

    assert curve("parts")[-3:] == pytest.approx(curve("whole")[-3:], rel=1e-5)


def test_qlora_without_bitsandbytes_is_a_one_line_error(tmp_path, tiny_model_dir, demo_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` raise ImportError
    with pytest.raises(ConfigError, match=r"qlora needs bitsandbytes.*pip install 'tunesmith\[qlora\]'"):
        _start(_cfg(tmp_path, tiny_model_dir, demo_dir), "fp32")
