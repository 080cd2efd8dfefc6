"""Overfitting analysis of metrics.jsonl on hand-written loss curves."""

import json
import math

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.eval.overfitting import analyse_metrics


def _write(tmp_path, train: list[float], val: dict[int, float], name: str = "metrics.jsonl"):
    """Training loss at steps 1..len(train), validation at the given steps, in logging order."""
    lines = []
    for step, loss in enumerate(train, 1):
        lines.append({"step": step, "loss": loss, "lr": 1e-4, "grad_norm": 1.0, "tokens_per_s": 100.0})
        if step in val:
            lines.append({"step": step, "val_loss": val[step]})
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return p


def test_clean_run_is_not_flagged(tmp_path):
    train = [3.0 - 0.02 * s for s in range(1, 101)]
    val = {20: 2.9, 40: 2.7, 60: 2.6, 80: 2.55, 100: 2.54}
    r = analyse_metrics(_write(tmp_path, train, val))
    assert r["overfitting"] is False
    assert r["best_val_step"] == 100 and r["best_val_loss"] == 2.54
    assert r["final_val_loss"] == 2.54 and r["final_train_loss"] == pytest.approx(1.0)
    assert "still at its best" in r["evidence"]


def test_overfitting_run_is_flagged_at_the_right_step(tmp_path):
    train = [3.0 - 0.025 * s for s in range(1, 101)]  # keeps falling to 0.5
    val = {20: 2.8, 40: 2.5, 60: 2.6, 80: 2.8, 100: 3.1}
    r = analyse_metrics(_write(tmp_path, train, val))
    assert r["overfitting"] is True
    assert r["best_val_step"] == 40 and r["best_val_loss"] == 2.5 and r["final_val_loss"] == 3.1
    assert "overfitting" in r["evidence"] and "step 40" in r["evidence"]
    # The run directory works as well as the file.
    assert analyse_metrics(tmp_path)["overfitting"] is True


def test_small_rise_and_single_late_rise_are_not_flagged(tmp_path):
    train = [3.0 - 0.025 * s for s in range(1, 101)]
    within = analyse_metrics(_write(tmp_path, train, {20: 2.8, 40: 2.5, 60: 2.55, 80: 2.6}, "a.jsonl"))
    assert within["overfitting"] is False and "tolerance" in within["evidence"]
    once = analyse_metrics(_write(tmp_path, train, {20: 2.8, 40: 2.7, 60: 2.5, 80: 3.0}, "b.jsonl"))
    assert once["overfitting"] is False and "only 1 evaluation" in once["evidence"]


def test_rising_train_and_val_is_divergence_not_overfitting(tmp_path):
    train = [2.0 - 0.01 * s for s in range(1, 41)] + [1.6 + 0.05 * s for s in range(1, 61)]
    val = {20: 2.2, 40: 1.9, 60: 2.4, 80: 3.0, 100: 4.5}
    r = analyse_metrics(_write(tmp_path, train, val))
    assert r["overfitting"] is False
    assert r["best_val_step"] == 40
    assert "divergence" in r["evidence"]


def test_nan_validation_is_divergence(tmp_path):
    train = [2.0] * 30
    p = _write(tmp_path, train, {10: 1.9, 20: 1.8, 30: float("nan")})
    r = analyse_metrics(p)
    assert r["overfitting"] is False and "divergence" in r["evidence"] and math.isnan(r["final_val_loss"])


def test_no_validation_lines(tmp_path):
    r = analyse_metrics(_write(tmp_path, [2.0, 1.9, 1.8], {}))
    assert r["overfitting"] is None and r["evidence"] == "no validation loss logged"
    assert r["best_val_step"] is None and r["final_train_loss"] == 1.8


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(TunesmithError, match="no such metrics file"):
        analyse_metrics(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "loss": 2.0}\n{not json\n{"step": 2, "loss": 1.0}\n')
    with pytest.raises(TunesmithError, match="bad.jsonl:2"):
        analyse_metrics(bad)


def test_torn_last_line_is_dropped_with_a_warning(tmp_path, capsys):
    # A kill (or a full disk) mid-append leaves half a line at the end: the rest still reads.
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "val_loss": 1.5}\n{"step": 3, "lo')
    out = analyse_metrics(torn)
    assert out["final_train_loss"] == 2.0 and out["n_val_evals"] == 1
    assert "torn.jsonl:3: torn last line dropped" in capsys.readouterr().err
