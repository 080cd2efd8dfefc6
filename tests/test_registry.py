"""Tests for tunesmith.registry: registration, lookups, did-you-mean and module:function imports."""

from __future__ import annotations

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.registry import METRICS, REWARDS, Registry


def test_register_get_and_names():
    reg = Registry("widget")

    @reg.register("double")
    def double(x):
        return 2 * x

    @reg.register()  # no name: the function's __name__
    def triple(x):
        return 3 * x

    @reg.register  # bare decorator works too
    def quadruple(x):
        return 4 * x

    assert reg.get("double")(2) == 4
    assert reg.get("triple") is triple
    assert reg.names() == ["double", "quadruple", "triple"]  # sorted
    assert "double" in reg and "nope" not in reg


def test_duplicate_name_raises():
    reg = Registry("widget")

    def one():
        return 1

    def two():
        return 2

    reg.register("f")(one)
    with pytest.raises(TunesmithError, match="already registered"):
        reg.register("f")(two)


def _scorer(pred, refs):
    return {}


def test_reload_reregisters_without_error():
    import types

    reg = Registry("widget")
    reg.register("s")(_scorer)
    # A module reload makes a new function object with the same module and qualname.
    reloaded = types.FunctionType(_scorer.__code__, _scorer.__globals__)
    assert reloaded is not _scorer
    reg.register("s")(reloaded)
    assert reg.get("s") is reloaded


def test_invalid_name_raises():
    reg = Registry("widget")
    with pytest.raises(TunesmithError, match="invalid widget name"):
        reg.register("a:b")(lambda: 1)


def test_unknown_name_did_you_mean_and_known_list():
    reg = Registry("metric")
    for name in ("qa", "math", "rouge"):
        reg.register(name)(lambda *a: {})
    with pytest.raises(TunesmithError) as err:
        reg.get("rogue")
    msg = str(err.value)
    assert "\n" not in msg  # one line
    assert "unknown metric 'rogue'" in msg
    assert "did you mean 'rouge'?" in msg
    assert "math, qa, rouge" in msg  # the known names
    # No close match: still lists the known names, no did-you-mean.
    with pytest.raises(TunesmithError) as err:
        reg.get("zzzzzz")
    assert "did you mean" not in str(err.value) and "math, qa, rouge" in str(err.value)


def test_module_function_import():
    reg = Registry("metric")
    from tunesmith.eval.metrics import token_f1

    assert reg.get("tunesmith.eval.metrics:token_f1") is token_f1
    import os.path

    assert reg.get("os.path:join") is os.path.join
    # Dotted attribute path inside the module.
    assert reg.get("collections:OrderedDict.fromkeys")("ab") == {"a": None, "b": None}


def test_bad_import_paths_name_module_or_attribute():
    reg = Registry("reward")
    with pytest.raises(TunesmithError, match="cannot import module 'no_such_pkg_xyz.mod'"):
        reg.get("no_such_pkg_xyz.mod:fn")
    with pytest.raises(TunesmithError, match="module 'math' has no attribute 'nope'"):
        reg.get("math:nope")
    with pytest.raises(TunesmithError, match="not callable"):
        reg.get("math:pi")
    with pytest.raises(TunesmithError, match="expected 'package.module:function'"):
        reg.get("math:")


def test_builtin_metrics_load_on_first_lookup():
    # METRICS imports tunesmith.eval.metrics itself, so these names are always there.
    assert {"qa", "math", "rouge"} <= set(METRICS.names())
    assert METRICS.get("qa")("The cat", ["cat"])["exact_match"] == 1.0
    assert REWARDS.kind == "reward"
