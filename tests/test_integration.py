"""Integration with the real default model (SmolLM2-135M-Instruct from its GGUF): a few LoRA
steps on the demo domain, then generation from the run. About a minute on 2 CPU cores."""

from __future__ import annotations

import json

import pytest

from tunesmith import api
from tunesmith.config import load_train_config

from conftest import requires_default_model

pytestmark = [pytest.mark.integration, requires_default_model]


def test_lora_steps_on_default_model_then_generate(tmp_path, demo_dir):
    cfg = load_train_config(None, [
        f"data.train={demo_dir / 'qa_train.jsonl'}", "training.max_steps=4", "training.batch_size=1",
        "data.max_length=256", "training.learning_rate=2e-3", "training.eval_every=4", "training.save_every=4",
        "training.warmup_ratio=0", "data.val_fraction=0.05", "name=integration", f"output_dir={tmp_path}",
        "data.system_prompt=Answer briefly.",
    ])
    r = api.train(cfg, progress=False)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "integration" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert r["trainable_params"] < 0.1 * r["total_params"]  # LoRA trains a small share
    print(f"default model LoRA: {r['tokens_per_s']:.0f} tok/s, peak {r['peak_memory_mib']:.0f} MiB")
    out = api.generate(str(tmp_path / "integration"), ["What is the capital of France?", "Who designed the Vossel altimeter?"], max_new_tokens=8)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
