"""Model resolution and loading: built-ins, GGUF conversion cache, local directories, and
clear one-line errors for anything that is not on disk."""

from __future__ import annotations

import time

import pytest

from tunesmith.errors import ModelNotFoundError
from tunesmith.models.builtins import BUILTINS, DEFAULT_MODEL, describe_builtins
from tunesmith.models.loading import converted_dir, load_model, resolve_model

from conftest import requires_default_model


def test_hub_id_not_on_disk_says_how_to_point_at_a_local_copy():
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("HuggingFaceTB/SmolLM2-360M-Instruct")
    msg = str(e.value)
    assert "never downloads" in msg and "--local-dir" in msg and "\n" not in msg


def test_unknown_name_lists_builtins(tmp_path):
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct"):
        resolve_model("smollm3")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a model directory"):
        resolve_model(tmp_path / "empty")


def test_builtins_table():
    rows = {r["name"].split()[0]: r for r in describe_builtins()}
    assert set(rows) == set(BUILTINS)
    assert rows["smollm2-135m-instruct"]["kind"] == "instruct" and rows["gemma3-270m"]["kind"] == "base"
    assert rows["smollm2-135m-instruct"]["license"] == "Apache-2.0"


def test_local_hf_directory(tiny_model_dir):
    model, tok, ref = load_model(str(tiny_model_dir))
    assert ref.kind == "hf" and tok.chat_template and model.config.num_hidden_layers == 2


@requires_default_model
def test_default_model_gguf_is_converted_once_then_loads_fast():
    ref = resolve_model(DEFAULT_MODEL)  # converts on first use (the session fixture already did)
    assert (ref.path / "model.safetensors").exists() and (ref.path / "tunesmith_source.json").exists()
    assert ref.path == converted_dir(BUILTINS[DEFAULT_MODEL].gguf())
    t = time.perf_counter()
    model, tok, _ = load_model(DEFAULT_MODEL)
    elapsed = time.perf_counter() - t
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert tok.eos_token == "<|im_end|>"
    print(f"second load of {DEFAULT_MODEL}: {elapsed:.2f} s")
    # a GGUF path resolves to the same conversion
    assert resolve_model(str(BUILTINS[DEFAULT_MODEL].gguf())).path == ref.path


@pytest.fixture(scope="module")
def tiny_lora_run(tmp_path_factory, tiny_model_dir, demo_dir):
    from tunesmith import api
    from tunesmith.config import load_train_config

    out = tmp_path_factory.mktemp("precision-runs")
    api.train(load_train_config(None, [f"model.name={tiny_model_dir}", f"output_dir={out}", "name=lora", "adapter.mode=lora",
                                       f"data.train={demo_dir / 'qa_train.jsonl'}", "training.max_steps=2", "training.batch_size=4",
                                       "training.learning_rate=3e-2", "training.warmup_ratio=0", "data.max_length=64",
                                       "training.threads=1"]), progress=False)
    return out / "lora"


def test_bf16_inference_weights_merge_in_fp32_then_cast(tiny_lora_run):
    import torch

    merged32, tok, _ = load_model(str(tiny_lora_run), merge_adapter=True)
    merged16, _, _ = load_model(str(tiny_lora_run), merge_adapter=True, precision="bf16")
    assert {p.dtype for p in merged16.parameters()} == {torch.bfloat16}
    # the bf16 weights are exactly the float32 merged weights rounded once (not merged in bf16)
    for (n32, p32), (n16, p16) in zip(merged32.named_parameters(), merged16.named_parameters()):
        assert n32 == n16 and torch.equal(p32.to(torch.bfloat16), p16), n32
    # an adapter left attached keeps float32 weights (peft computes it in float32 on bf16 inputs)
    attached, _, _ = load_model(str(tiny_lora_run), precision="bf16")
    dtypes = {("lora_" in n, p.dtype) for n, p in attached.named_parameters()}
    assert dtypes == {(True, torch.float32), (False, torch.bfloat16)}
    ids = tok("What is the refund window?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, b = merged32(ids).logits, merged16(ids).logits.float()
    assert (a - b).abs().max() < 0.1 * a.abs().max()  # bf16 is an approximation of the same model, not another one


def test_inference_precision_resolves_auto_by_hardware_and_rejects_unknown():
    from tunesmith.models.loading import inference_precision
    from tunesmith.training.runtime import cpu_has_bf16

    assert inference_precision("fp32") == "fp32" and inference_precision("bf16") == "bf16"
    assert inference_precision("auto", "cpu") == ("bf16" if cpu_has_bf16() else "fp32")
    with pytest.raises(ValueError, match="auto, fp32 or bf16"):
        inference_precision("fp16")


def test_inference_device_resolves_auto_and_refuses_a_missing_gpu_in_one_line():
    import torch

    from tunesmith.errors import ConfigError
    from tunesmith.models.loading import inference_device

    assert inference_device("cpu") == "cpu"
    assert inference_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"^eval.device: cuda, but torch sees no CUDA device .*use auto or cpu$"):
            inference_device("cuda")
    with pytest.raises(ValueError):
        inference_device("tpu")
