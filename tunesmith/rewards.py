"""Built-in reward functions for RL training (GRPO), and `combine` to mix several of them.

Every reward is a plain function registered in `REWARDS`:

    name(prompts: list[str], completions: list[str], **columns) -> list[float]

with one float per completion. `columns` holds the dataset's columns as lists with one
entry per completion (with several completions per prompt, the caller repeats each
prompt's row once per completion), plus any keyword options (`timeout_s=`, `pattern=`,
`max_words=`); a reward ignores the columns it does not use. A user's own reward with the
same signature is named "package.module:function" wherever a built-in name is accepted.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, Callable, Mapping, Sequence

from tunesmith.errors import TunesmithError
from tunesmith.eval import metrics
from tunesmith.eval.sandbox import run_tests
from tunesmith.eval.tasks import extract_code
from tunesmith.registry import REWARDS


def _column(columns: Mapping[str, Any], key: str, n: int, reward: str, *, required: bool = True) -> list:
    """Column `key` as a list of n entries (a list of None when optional and absent)."""
    values = columns.get(key)
    if values is None:
        if required:
            raise TunesmithError(
                f"reward {reward!r} needs a column {key!r} with one entry per completion; "
                f"columns given: {', '.join(sorted(columns)) or 'none'}"
            )
        return [None] * n
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TunesmithError(
            f"reward {reward!r}: column {key!r} must be a list with one entry per completion"
        )
    if len(values) != n:
        raise TunesmithError(
            f"reward {reward!r}: column {key!r} has {len(values)} entries for {n} completions"
        )
    return list(values)


def _as_list(value: Any) -> list:
    """One reference or several (a list/tuple), as a list without None entries."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [v for v in value if v is not None]
    return [value]


@REWARDS.register("exact_match")
def exact_match(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    """1.0 when the whole completion equals `answer` or one of `aliases` after SQuAD
    normalisation (lowercase, no punctuation or articles), else 0.0. Each `answer` and
    `aliases` entry may be one string or a list of them; `aliases` is optional."""
    n = len(completions)
    answers = _column(columns, "answer", n, "exact_match")
    aliases = _column(columns, "aliases", n, "exact_match", required=False)
    out = []
    for completion, answer, alias in zip(completions, answers, aliases):
        refs = [str(r) for r in _as_list(answer) + _as_list(alias)]
        out.append(metrics.exact_match(completion, refs) if refs else 0.0)
    return out


@REWARDS.register("numeric_match")
def numeric_match(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    """1.0 when the completion's final number (the one after the last "####", else the last
    number) equals the final number of `answer` (a number, a text such as "... #### 72", or
    a list of either: any may match), else 0.0."""
    answers = _column(columns, "answer", len(completions), "numeric_match")
    out = []
    for completion, answer in zip(completions, answers):
        refs = _as_list(answer)
        out.append(max((metrics.math_correct(completion, r) for r in refs), default=0.0))
    return out


@REWARDS.register("code_tests")
def code_tests(
    prompts: list[str], completions: list[str], *, timeout_s: float = 5.0, **columns: Any
) -> list[float]:
    """1.0 when the completion's code passes the item's `tests` in the sandbox, else 0.0.

    The code is the first fenced ```python (or bare ```) block, or the whole completion
    when there is none. `tests` entries are a string or a list of assert statements;
    `setup` (code run first) is optional. Completions run one after another, each for at
    most `timeout_s` seconds. A sandbox that cannot start raises instead of scoring 0:
    silently zero rewards would train on noise.
    """
    n = len(completions)
    tests = _column(columns, "tests", n, "code_tests")
    setups = _column(columns, "setup", n, "code_tests", required=False)
    out = []
    for completion, test, setup in zip(completions, tests, setups):
        test_code = [str(t) for t in test] if isinstance(test, (list, tuple)) else str(test or "")
        result = run_tests(extract_code(completion), test_code, setup=str(setup or ""), timeout_s=timeout_s)
        if result.status == "error":
            why = result.stderr.strip() or "the sandbox could not start"
            raise TunesmithError(f"reward 'code_tests': {why}")
        out.append(float(result.passed))
    return out


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise TunesmithError(f"reward 'format_regex': invalid regular expression {pattern!r}: {err}") from err


@REWARDS.register("format_regex")
def format_regex(
    prompts: list[str], completions: list[str], *, pattern: str | None = None, **columns: Any
) -> list[float]:
    """1.0 when `re.search(pattern, completion)` matches, else 0.0.

    The pattern is the item's `format_pattern` column entry where it has one, else the
    `pattern=` keyword. Use inline flags for options, e.g. "(?s)<think>.*</think>".
    """
    per_item = _column(columns, "format_pattern", len(completions), "format_regex", required=False)
    out = []
    for completion, item_pattern in zip(completions, per_item):
        chosen = item_pattern if item_pattern else pattern
        if not chosen:
            raise TunesmithError(
                "reward 'format_regex' needs a pattern: a 'format_pattern' column or the pattern= option"
            )
        out.append(float(_compile(str(chosen)).search(completion) is not None))
    return out


@REWARDS.register("length_penalty")
def length_penalty(
    prompts: list[str], completions: list[str], *, max_words: int = 50, **columns: Any
) -> list[float]:
    """0.0 up to `max_words` words (whitespace-separated), then falling linearly to -1.0 at
    twice that, and -1.0 beyond: -(words - max_words) / max_words, clamped at -1."""
    if max_words <= 0:
        raise TunesmithError(f"reward 'length_penalty': max_words must be positive, got {max_words}")
    out = []
    for completion in completions:
        over = len(completion.split()) - max_words
        out.append(-min(1.0, over / max_words) if over > 0 else 0.0)
    return out


def _call(name: str, fn: Callable, prompts: list[str], completions: list[str],
          columns: Mapping[str, Any], options: Mapping[str, Any]) -> list[float]:
    """Run one reward; every way it can fail becomes a TunesmithError naming it."""
    try:
        values = fn(list(prompts), list(completions), **{**columns, **options})
    except TunesmithError as err:
        msg = str(err)
        raise TunesmithError(msg if f"{name!r}" in msg else f"reward {name!r}: {msg}") from err
    except Exception as err:  # a bug in a user's reward: name it, keep the traceback chained
        raise TunesmithError(f"reward {name!r} raised {type(err).__name__}: {err}") from err
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TunesmithError(f"reward {name!r} returned {type(values).__name__}; expected a list of floats")
    if len(values) != len(completions):
        raise TunesmithError(
            f"reward {name!r} returned {len(values)} values for {len(completions)} completions; "
            f"it must return one float per completion"
        )
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise TunesmithError(f"reward {name!r} returned a value that is not a number: {err}") from err
    bad = next((i for i, v in enumerate(floats) if not math.isfinite(v)), None)
    if bad is not None:
        raise TunesmithError(
            f"reward {name!r} returned {floats[bad]} for completion {bad}; rewards must be finite"
        )
    return floats


def combine(
    rewards: Mapping[str, float],
    prompts: list[str],
    completions: list[str],
    columns: Mapping[str, Any] | None = None,
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list[float], dict[str, list[float]]]:
    """Weighted sum of several rewards, and each reward's values (unweighted) for logging.

    `rewards` maps a reward name (built-in, or "package.module:function") to its weight;
    `columns` are passed to every reward; `options` maps a reward name to extra keyword
    arguments for it alone, e.g. {"length_penalty": {"max_words": 80}}.
    """
    if not rewards:
        raise TunesmithError("no rewards given: name at least one reward with its weight")
    columns = dict(columns or {})
    options = dict(options or {})
    unknown = sorted(set(options) - set(rewards))
    if unknown:
        listed = ", ".join(map(repr, unknown))
        raise TunesmithError(f"reward options given for {listed}, which is not among the rewards")
    if len(prompts) != len(completions):
        raise TunesmithError(
            f"{len(prompts)} prompts for {len(completions)} completions; give one prompt per completion"
        )
    total = [0.0] * len(completions)
    parts: dict[str, list[float]] = {}
    for name, weight in rewards.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise TunesmithError(f"reward {name!r} has weight {weight!r}; weights must be finite numbers")
        values = _call(name, REWARDS.get(name), prompts, completions, columns, options.get(name, {}))
        parts[name] = values
        total = [t + weight * v for t, v in zip(total, values)]
    return total, parts
