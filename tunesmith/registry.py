"""The one small registry for plain-function extension points (metrics, rewards).

A `Registry` maps names to plain functions. Built-in functions register themselves with a
decorator; users extend tunesmith without touching it by naming any importable function as
`"package.module:function"` in a config. Every lookup failure is a one-line
`TunesmithError` that says what was asked for and what would have worked.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Callable, Iterable, TypeVar, overload

from tunesmith.errors import TunesmithError

F = TypeVar("F", bound=Callable)


class Registry:
    """Named plain functions of one kind ("metric", "reward", ...).

    `builtins` names modules that register the kind's built-in functions; they are imported
    on the first lookup so that `METRICS.get("qa")` works without the caller importing
    `tunesmith.eval.metrics` first (and without an import cycle at module load time).
    """

    def __init__(self, kind: str, *, builtins: Iterable[str] = ()) -> None:
        self.kind = kind
        self._funcs: dict[str, Callable] = {}
        self._builtins = tuple(builtins)
        self._builtins_loaded = not self._builtins

    @overload
    def register(self, name: F) -> F: ...
    @overload
    def register(self, name: str | None = None) -> Callable[[F], F]: ...

    def register(self, name=None):
        """Decorator: `@REG.register("name")`, `@REG.register()` or bare `@REG.register`.

        Without a name the function's `__name__` is used. A name taken by a different
        function raises, since a silent overwrite would make results depend on import order.
        """
        if callable(name):  # bare `@REG.register`
            return self.register(None)(name)

        def decorator(func: F) -> F:
            key = name if name is not None else func.__name__
            if not isinstance(key, str) or not key or ":" in key:
                # ":" is reserved for "module:function" lookups.
                raise TunesmithError(f"invalid {self.kind} name {key!r}: use a non-empty name without ':'")
            old = self._funcs.get(key)
            # The same module-level function again is a module reload, not a clash.
            if old is not None and old is not func and _qualname(old) != _qualname(func):
                raise TunesmithError(
                    f"{self.kind} {key!r} is already registered (by {_qualname(old)}); pick another name"
                )
            self._funcs[key] = func
            return func

        return decorator

    def get(self, name: str) -> Callable:
        """The function registered as `name`, or the one named by "package.module:function"."""
        if not isinstance(name, str) or not name:
            raise TunesmithError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if ":" in name:
            return self._import(name)
        self._load_builtins()
        if name in self._funcs:
            return self._funcs[name]
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listed = ", ".join(known) if known else "none registered"
        raise TunesmithError(
            f"unknown {self.kind} {name!r}{hint}; known {self.kind}s: {listed}; "
            f"or give an importable 'package.module:function'"
        )

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._load_builtins()
        return sorted(self._funcs)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._funcs

    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        # Set first: the imported modules call `register`, which must not recurse here.
        self._builtins_loaded = True
        for module in self._builtins:
            importlib.import_module(module)

    def _import(self, spec: str) -> Callable:
        """Resolve "package.module:function" (the attribute may be dotted: "mod:Class.method")."""
        module_name, _, attr_path = spec.partition(":")
        if not module_name or not attr_path:
            raise TunesmithError(f"bad {self.kind} import path {spec!r}: expected 'package.module:function'")
        try:
            obj = importlib.import_module(module_name)
        except ImportError as err:
            # Only import failures are the user's path being wrong; other exceptions are bugs
            # in the user's module and keep their traceback.
            raise TunesmithError(
                f"cannot import module {module_name!r} for {self.kind} {spec!r}: {err}"
            ) from err
        for part in attr_path.split("."):
            if not hasattr(obj, part):
                raise TunesmithError(
                    f"module {module_name!r} has no attribute {attr_path!r} (for {self.kind} {spec!r})"
                )
            obj = getattr(obj, part)
        if not callable(obj):
            raise TunesmithError(f"{self.kind} {spec!r} is not callable (got {type(obj).__name__})")
        return obj


def _qualname(func: Callable) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


METRICS = Registry("metric", builtins=("tunesmith.eval.metrics",))
REWARDS = Registry("reward", builtins=("tunesmith.rewards",))
