"""Bounded YAML reading: PyYAML's safe loader with limits on nesting depth and on the number
of values a document expands to through aliases, so a hostile or mistaken config is refused
with a one-line error instead of hanging (a "billion laughs" alias bomb) or overflowing
Python's recursion limit (thousands of nested brackets). Errors are `yaml.YAMLError`s with a
`problem` and a `problem_mark`, read like PyYAML's own.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["MAX_YAML_DEPTH", "MAX_YAML_VALUES", "compose_bounded", "load_bounded"]

# A config is a few hundred values a few levels deep. Far past that is a mistake or an attack:
# a 1 KB "billion laughs" file expands, alias by alias, to 10^9 values, and nesting thousands
# deep exhausts Python's recursion limit.
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 100_000


class _YamlLimit(yaml.YAMLError):
    """A YAML document over MAX_YAML_DEPTH or MAX_YAML_VALUES; read like PyYAML's own errors."""

    def __init__(self, problem: str, mark: Any = None):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting while composing, before Python's recursion limit."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self._depth >= MAX_YAML_DEPTH:
            raise _YamlLimit(f"nested deeper than {MAX_YAML_DEPTH} levels (flatten it)", self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values the node tree holds once every alias is expanded (linear in its size:
    a node shared through aliases is counted once and its size reused)."""
    if id(node) not in memo:
        if isinstance(node, yaml.SequenceNode):
            memo[id(node)] = 1 + sum(_expanded_size(n, memo) for n in node.value)
        elif isinstance(node, yaml.MappingNode):
            memo[id(node)] = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
        else:
            memo[id(node)] = 1
    return memo[id(node)]


def compose_bounded(text: str) -> yaml.Node | None:
    """The YAML node tree of `text`, refused (as a YAMLError) past the depth and size limits."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
    except RecursionError:  # a limit the depth check did not foresee (e.g. a deep key)
        raise _YamlLimit(f"nested too deeply (flatten it to at most {MAX_YAML_DEPTH} levels)") from None
    finally:
        loader.dispose()
    if node is not None and _expanded_size(node, {}) > MAX_YAML_VALUES:
        raise _YamlLimit(f"expands to more than {MAX_YAML_VALUES:,} values through aliases (*name) or merge keys "
                         "(write the values out instead of repeating blocks)", node.start_mark)
    return node


def load_bounded(text: str) -> Any:
    """yaml.safe_load within the same limits as a config file (for --set values)."""
    node = compose_bounded(text)
    try:
        return None if node is None else yaml.SafeLoader("").construct_document(node)
    except ValueError as err:  # e.g. an integer of 5,000 digits, over Python's conversion limit
        raise _YamlLimit(f"unreadable value ({str(err).split(';')[0]})", node.start_mark) from None
