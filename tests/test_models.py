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
