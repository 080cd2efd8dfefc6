"""A run killed with SIGKILL mid-training and continued with --resume ends exactly where an
uninterrupted run with the same seed ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _train(cfg: Path, name: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tunesmith", "train", str(cfg), "--quiet", "--set", f"name={name}", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, tiny_model_dir, demo_dir):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"model:\n  name: {tiny_model_dir}\n"
        f"data:\n  train: {demo_dir / 'qa_train.jsonl'}\n  system_prompt: Be brief.\n"
        "adapter:\n  mode: lora\n  lora_dropout: 0.1\n"  # dropout: the RNG state must resume too
        f"training:\n  max_steps: 120\n  batch_size: 2\n  learning_rate: 0.002\n  save_every: 5\n  eval_every: 10\n"
        f"output_dir: {tmp_path / 'runs'}\n"
    )
    full = _train(cfg, "straight")
    out, _ = full.communicate(timeout=600)
    assert full.returncode == 0, out

    victim = _train(cfg, "killed")
    state = tmp_path / "runs" / "killed" / "checkpoints" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if state.exists() and json.loads(state.read_text()).get("latest", "step-0") >= "step-0000020":
            break
        assert victim.poll() is None, "training finished before it could be killed"
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_meta = json.loads((tmp_path / "runs" / "killed" / "run.json").read_text())
    assert killed_meta["status"] == "running"  # really interrupted mid-training

    resumed = _train(cfg, "killed", "--resume")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out

    a = json.loads((tmp_path / "runs" / "straight" / "run.json").read_text())
    b = json.loads((tmp_path / "runs" / "killed" / "run.json").read_text())
    assert a["steps"] == b["steps"] == 120
    assert abs(a["final_loss"] - b["final_loss"]) < 1e-4, (a["final_loss"], b["final_loss"])
    # the whole loss curve matches, and metrics.jsonl holds each step once
    la = [json.loads(x) for x in (tmp_path / "runs" / "straight" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "runs" / "killed" / "metrics.jsonl").read_text().splitlines()]
    steps_b = [x["step"] for x in lb if "loss" in x]
    assert steps_b == list(range(1, 121))
    for x, y in zip([x for x in la if "loss" in x], [y for y in lb if "loss" in y]):
        assert abs(x["loss"] - y["loss"]) < 1e-4, (x, y)
