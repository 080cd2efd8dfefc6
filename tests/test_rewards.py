"""Tests for tunesmith.rewards: each built-in reward, user rewards by "module:function", combine."""

from __future__ import annotations

import textwrap

import pytest

from tunesmith import rewards
from tunesmith.errors import TunesmithError
from tunesmith.registry import REWARDS


def test_builtins_are_registered():
    for name in ("exact_match", "numeric_match", "code_tests", "format_regex", "length_penalty"):
        assert REWARDS.get(name) is getattr(rewards, name)


def test_exact_match_with_aliases():
    completions = ["The Paris.", "London", "paris!", "nyc", "42"]
    got = rewards.exact_match(
        ["q"] * 5, completions,
        answer=["Paris", "Paris", ["Lyon", "Paris"], "New York", 42],
        aliases=[None, None, None, ["NYC"], None],
    )
    assert got == [1.0, 0.0, 1.0, 1.0, 1.0]
    assert rewards.exact_match(["q"], ["Paris"], answer=["paris"]) == [1.0]  # aliases optional
    with pytest.raises(TunesmithError, match="needs a column 'answer'"):
        rewards.exact_match(["q"], ["Paris"])
    with pytest.raises(TunesmithError, match="2 entries for 1 completions"):
        rewards.exact_match(["q"], ["Paris"], answer=["a", "b"])


def test_numeric_match():
    completions = ["so the answer is 72", "Total: #### $1,234", "I think 5", "no idea"]
    answers = ["She sold 48 + 24 clips.\n#### 72", 1234, ["4", "6"], "3"]
    assert rewards.numeric_match(["q"] * 4, completions, answer=answers) == [1.0, 1.0, 0.0, 0.0]


def test_code_tests_in_sandbox():
    good = "Here you go:\n```python\ndef inc(x):\n    return x + OFFSET\n```\nDone."
    bare = "def inc(x):\n    return x + OFFSET"
    wrong = "```python\ndef inc(x):\n    return x\n```"
    got = rewards.code_tests(
        ["p"] * 3, [good, bare, wrong],
        tests=[["assert inc(1) == 2", "assert inc(2) == 3"], "assert inc(1) == 2", "assert inc(1) == 2"],
        setup=["OFFSET = 1", "OFFSET = 1", "OFFSET = 1"],
        timeout_s=10.0,
    )
    assert got == [1.0, 1.0, 0.0]


def test_format_regex_keyword_and_column():
    completions = ["<think>a\nb</think> 4", "4", "Answer: 7"]
    assert rewards.format_regex(["p"] * 3, completions, pattern=r"(?s)<think>.*</think>") == [1.0, 0.0, 0.0]
    # The column wins where it has an entry; the keyword covers the rest.
    got = rewards.format_regex(
        ["p"] * 3, completions, pattern=r"^\d$", format_pattern=[None, None, r"^Answer: \d+$"]
    )
    assert got == [0.0, 1.0, 1.0]
    with pytest.raises(TunesmithError, match="needs a pattern"):
        rewards.format_regex(["p"], ["x"])
    with pytest.raises(TunesmithError, match="invalid regular expression"):
        rewards.format_regex(["p"], ["x"], pattern="(")


def test_length_penalty():
    words = lambda n: " ".join(["w"] * n)  # noqa: E731
    got = rewards.length_penalty(["p"] * 6, [words(n) for n in (0, 3, 4, 6, 8, 20)], max_words=4)
    # 0..4 words -> 0; 6 words: -(6 - 4) / 4 = -0.5; 8 words (2 x target) -> -1; beyond -> -1
    assert got == [0.0, 0.0, 0.0, -0.5, -1.0, -1.0]
    assert rewards.length_penalty(["p"], [words(75)]) == [-0.5]  # default max_words=50: -(25/50)


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    """A user's reward module on sys.path, as a real user would write it."""
    name = "tunesmith_test_user_rewards"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        def polite(prompts, completions, **columns):
            return [1.0 if "please" in c.lower() else 0.0 for c in completions]

        def too_short(prompts, completions, **columns):
            return [1.0]

        def broken(prompts, completions, **columns):
            raise KeyError("score")

        def not_a_number(prompts, completions, **columns):
            return ["high" for _ in completions]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, name, raising=False)
    return name


def test_combine_user_reward_with_builtin(user_module):
    completions = ["Paris, please", "Paris", "Rome please"]
    total, parts = rewards.combine(
        {"exact_match": 1.0, f"{user_module}:polite": 0.5},
        ["q"] * 3, completions, {"answer": ["Paris, please", "Paris", "Paris"]},
    )
    assert parts["exact_match"] == [1.0, 1.0, 0.0]
    assert parts[f"{user_module}:polite"] == [1.0, 0.0, 1.0]
    assert total == [1.5, 1.0, 0.5]  # 1.0 * exact + 0.5 * polite


def test_combine_options_go_to_one_reward():
    total, parts = rewards.combine(
        {"length_penalty": 2.0, "format_regex": 1.0}, ["p"] * 2, ["a b c", "a"],
        options={"length_penalty": {"max_words": 2}, "format_regex": {"pattern": "^a$"}},
    )
    assert parts == {"length_penalty": [-0.5, 0.0], "format_regex": [0.0, 1.0]}
    assert total == [-1.0, 1.0]
    with pytest.raises(TunesmithError, match="not among the rewards"):
        rewards.combine({"length_penalty": 1.0}, ["p"], ["a"], options={"exact_match": {}})


def test_combine_errors_name_the_reward(user_module):
    args = (["q"] * 2, ["a", "b"], {"answer": ["a", "b"]})
    wrong_length = rf"reward '{user_module}:too_short' returned 1 values for 2 completions"
    with pytest.raises(TunesmithError, match=wrong_length):
        rewards.combine({f"{user_module}:too_short": 1.0}, *args)
    with pytest.raises(TunesmithError, match=rf"reward '{user_module}:broken' raised KeyError"):
        rewards.combine({f"{user_module}:broken": 1.0}, *args)
    with pytest.raises(TunesmithError, match="not a number"):
        rewards.combine({f"{user_module}:not_a_number": 1.0}, *args)
    with pytest.raises(TunesmithError, match="reward 'numeric_match'.*needs a column 'answer'"):
        rewards.combine({"numeric_match": 1.0}, ["q"], ["1"], {})
    with pytest.raises(TunesmithError, match="unknown reward 'exact_matc'.*did you mean 'exact_match'"):
        rewards.combine({"exact_matc": 1.0}, *args)
    with pytest.raises(TunesmithError, match="weight"):
        rewards.combine({"exact_match": "high"}, *args)
