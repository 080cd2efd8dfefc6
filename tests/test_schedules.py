"""Learning-rate schedule reference values, worked by hand."""

import math

import pytest

from tunesmith.training.schedules import lr_factor


def test_warmup_then_cosine():
    # warmup=4: steps 0..3 give 1/5, 2/5, 3/5, 4/5; then cosine over the remaining 6 steps
    assert [lr_factor(s, total=10, warmup=4) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lr_factor(4, total=10, warmup=4) == pytest.approx(1.0)
    assert lr_factor(7, total=10, warmup=4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))  # = 0.5
    assert lr_factor(10, total=10, warmup=4) == pytest.approx(0.0)


def test_linear_constant_and_floor():
    assert lr_factor(5, total=10, warmup=0, kind="linear") == pytest.approx(0.5)
    assert lr_factor(5, total=10, warmup=0, kind="constant") == 1.0
    assert lr_factor(10, total=10, warmup=0, kind="cosine", min_ratio=0.1) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        lr_factor(1, total=10, warmup=0, kind="nope")
