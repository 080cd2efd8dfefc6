"""The CLI as a user meets it: one-line errors without tracebacks, non-zero exits, and the
commands' output."""

from __future__ import annotations

import json
import subprocess
import sys


def tunesmith(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tunesmith", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def _one_line_error(r):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1, r.stderr
    return err[0]


def test_unknown_config_key_suggests_the_right_one(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("data:\n  train: x.jsonl\ntraining:\n  learnig_rate: 1e-4\n")
    line = _one_line_error(tunesmith("train", str(cfg)))
    assert f"{cfg}:4: training.learnig_rate: unknown key (did you mean 'training.learning_rate'?)" in line


def test_bad_override_and_bad_type(tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("data:\n  train: x.jsonl\ntraining:\n  epochs: three\n")
    assert "t.yaml:4: training.epochs: expected" in _one_line_error(tunesmith("train", str(cfg)))
    cfg.write_text("data:\n  train: x.jsonl\n")
    assert "adapter.mode" in _one_line_error(tunesmith("train", str(cfg), "--set", "adapter.mode=lroa"))


def test_missing_data_file_fails_before_model_loads(tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"data:\n  train: {tmp_path / 'nope.jsonl'}\noutput_dir: {tmp_path}\n")
    line = _one_line_error(tunesmith("train", str(cfg)))
    assert "nope.jsonl" in line
    assert not (tmp_path / "t").exists()  # nothing half-written


def test_data_check_broken_file_exit_1(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": 5}\n{not json\n')
    r = tunesmith("data", "check", str(f))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{f.name}:2: completion:" in r.stdout and f"{f.name}:3:" in r.stdout


def test_data_check_with_model_counts_tokens(demo_dir, tiny_model_dir):
    r = tunesmith("data", "check", str(demo_dir / "qa_train.jsonl"), "--model", str(tiny_model_dir),
                  "--eval", str(demo_dir / "qa_test.jsonl"), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["type"] == "prompt_completion" and rep["length_stats"]["unit"] == "tokens"
    assert rep["length_stats"]["min"] > 10  # the chat template's tokens are counted too


def test_data_preview_marks_trained_tokens(demo_dir, tiny_model_dir):
    r = tunesmith("data", "preview", str(demo_dir / "qa_train.jsonl"), "--model", str(tiny_model_dir))
    assert r.returncode == 0, r.stderr
    assert "[[" in r.stdout and "<|im_end|>]]" in r.stdout


def test_models_command():
    r = tunesmith("models")
    assert r.returncode == 0 and "smollm2-135m-instruct (default)" in r.stdout and "gemma3-270m" in r.stdout


def test_config_command_documents_every_field():
    r = tunesmith("config")
    assert r.returncode == 0 and "training.learning_rate" in r.stdout and "Peak learning rate" in r.stdout
