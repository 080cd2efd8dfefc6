"""Typed config engine: dataclasses are the single source of truth for every config.

A config is a (nested) dataclass whose fields are declared with `option(...)`, which
carries the field's only documentation plus choices and bounds. YAML files, a `base`
dict and `--set a.b=value` overrides all parse into that dataclass; anything that does
not fit is a one-line `ConfigError` naming the file, the line, the dotted field and the
fix: `train.yaml:12: training.lrr: unknown key (did you mean 'training.lr'?)`.
`describe` and `dump_yaml` render the same dataclasses for help and for run records.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import json
import math
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import MISSING
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from tunesmith.errors import ConfigError
from tunesmith.yamlsafe import compose_bounded, load_bounded

__all__ = ["MISSING", "SEED_MAX", "option", "from_dict", "load_config", "parse_overrides", "apply_overrides",
           "to_dict", "dump_yaml", "describe", "field_paths"]

_NONE = type(None)
MAX_CONFIG_BYTES = 1_000_000
SEED_MAX = 2**32 - 1  # the largest seed numpy accepts (unsigned 32-bit): the bound of every seed option
_TEXT = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def option(default: Any = MISSING, doc: str = "", *, default_factory: Any = MISSING,
           choices: tuple | None = None, minimum: float | None = None,
           maximum: float | None = None) -> Any:
    """A dataclass field carrying doc, choices and bounds; no default means required.

    A list/dict/set default becomes a deep-copying factory, so `option(["q_proj"], "...")`
    does not trip dataclasses' mutable-default check.
    """
    if default is not MISSING and default_factory is not MISSING:
        raise TypeError("option(): give default or default_factory, not both")
    if isinstance(default, (list, dict, set)):
        default, default_factory = MISSING, functools.partial(copy.deepcopy, default)
    meta = {"doc": doc, "choices": tuple(choices) if choices is not None else None,
            "minimum": minimum, "maximum": maximum}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


class _Invalid(Exception):
    """A problem at a dotted path; the entry point adds the location (file:line or --set)."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path, self.message = path, message


@dataclasses.dataclass
class _Ctx:
    """Where each dotted path came from, so an error can point at a line or a --set."""

    source: str
    root: type
    lines: dict[str, int] = dataclasses.field(default_factory=dict)
    origins: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> "--set a=b"
    raws: dict[str, str] = dataclasses.field(default_factory=dict)  # YAML text of non-str scalars

    def at(self, path: str) -> str:
        chain = list(_ancestors(path))
        # An override replaces its whole subtree, so it wins over YAML lines below it.
        hit = next((self.origins[p] for p in chain if p in self.origins), None)
        line = next((self.lines[p] for p in chain if p in self.lines), None)
        return hit or (f"{self.source}:{line}" if line is not None else self.source)

    def raw(self, path: str) -> str | None:
        return None if any(p in self.origins for p in _ancestors(path)) else self.raws.get(path)


def _ancestors(path: str) -> Iterator[str]:
    """`a.b[1]` -> `a.b[1]`, `a.b`, `a`: the nearest located one wins."""
    while path:
        yield path
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""


def _join(prefix: str, name: Any) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


# ---------------------------------------------------------------- types

@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # resolves `from __future__ import annotations` strings


def _fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _is_dc(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _union_args(tp: Any) -> tuple | None:
    return get_args(tp) if get_origin(tp) in (Union, types.UnionType) else None


def _section(tp: Any) -> type | None:
    """The dataclass behind `Section` or `Section | None`, else None."""
    rest = [a for a in _union_args(tp) or (tp,) if a is not _NONE]
    return rest[0] if len(rest) == 1 and _is_dc(rest[0]) else None


def _expect(tp: Any) -> str:
    """A type as an error names it: 'an integer', 'a list', 'a string or a list'."""
    if (args := _union_args(tp)) is not None:
        return " or ".join(_expect(a) for a in args if a is not _NONE)
    origin = get_origin(tp) or tp
    if origin is Literal:
        return "one of " + ", ".join(map(str, get_args(tp)))
    if origin in (list, tuple):
        return "a list"
    if origin is dict or _is_dc(tp):
        return "a mapping"
    return _TEXT.get(tp, getattr(tp, "__name__", str(tp)))


def _label(tp: Any) -> str:
    """A type as `describe` names it: 'float', 'list[str]', '{full,lora}', 'int | None'."""
    if (args := _union_args(tp)) is not None:
        return " | ".join(_label(a) for a in args)
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return "{" + ",".join(map(str, args)) + "}"
    if origin in (list, tuple, dict) and args:
        inner = f"{_label(args[0])}, ..." if args[-1] is Ellipsis else ", ".join(map(_label, args))
        return f"{origin.__name__}[{inner}]"
    return "None" if tp is _NONE else "section" if _is_dc(tp) else getattr(tp, "__name__", str(tp))


# ---------------------------------------------------------------- values in messages

def _plain(value: Any) -> Any:
    """Dataclasses -> dicts in declaration order, tuples -> lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in _fields(type(value))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return {k: _plain(v) for k, v in value.items()} if isinstance(value, dict) else value


def _flow(value: Any) -> str:
    """A value as one line of YAML, the way a user would type it."""
    try:
        text = yaml.safe_dump(_plain(value), default_flow_style=True, width=10**6).strip()
    except yaml.YAMLError:
        return repr(value)
    text = text[:-3].strip() if text.endswith("...") else text
    # PyYAML folds strings with newlines over lines; JSON is valid YAML and stays on one.
    return json.dumps(_plain(value)) if "\n" in text else text


def _show(value: Any) -> str:
    """A bad value in an error; strings quoted so that '3' and 3 read differently."""
    text = repr(value) if isinstance(value, str) else _flow(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _suggest(word: str, options: Sequence[Any]) -> Any | None:
    """The closest option to `word`, ignoring case (so 'LoRA' finds 'lora'), or None."""
    lowered = {str(o).lower(): o for o in options}
    hit = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[hit[0]] if hit else None


# ---------------------------------------------------------------- coercion

def _coerce(tp: Any, value: Any, path: str, ctx: _Ctx) -> Any:
    """A parsed YAML value as `tp`, or _Invalid saying what was expected."""
    if (args := _union_args(tp)) is not None:
        return _coerce_union(args, value, path, ctx)
    if _is_dc(tp):  # an empty section (`adapter:`, keys commented out) means all defaults
        return _build(tp, {} if value is None else value, path, ctx)
    origin, args = get_origin(tp) or tp, get_args(tp)
    if origin is Literal:
        return _check_choice(value, args, path)
    if tp is Any or tp is object:
        return value
    if value is None:
        raise _Invalid(path, f"expected {_expect(tp)}, got null")
    if tp in _TEXT:
        return _coerce_scalar(tp, value, path, ctx)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            fix = f" (write it as a list: [{value}])" if isinstance(value, str) else ""
            raise _Invalid(path, f"expected a list, got {_show(value)}{fix}")
        items = [_coerce(args[0] if args else Any, v, f"{path}[{i}]", ctx) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _Invalid(path, f"expected a mapping, got {_show(value)}")
        key_tp, val_tp = args or (Any, Any)
        for key in value:
            if key_tp is str and not isinstance(key, str):
                raise _Invalid(_join(path, key), f"keys must be strings, got {_show(key)} (quote it)")
        return {k: _coerce(val_tp, v, _join(path, k), ctx) for k, v in value.items()}
    return value  # an annotation this engine does not model: trust the dataclass author


def _coerce_union(args: tuple, value: Any, path: str, ctx: _Ctx) -> Any:
    """`X | None` allows null; other unions try each member in declaration order."""
    if value is None and _NONE in args:
        return None
    members, errors = [a for a in args if a is not _NONE], []
    for member in members:
        try:
            return _coerce(member, value, path, ctx)
        except _Invalid as err:
            errors.append(err)
    # A single member's own message, or a nested one (a bad list item), says the most.
    nested = [e for e in errors if e.path != path]
    if len(members) == 1 or nested:
        raise (nested or errors)[0]
    raise _Invalid(path, f"expected {_expect(Union[tuple(members)])}, got {_show(value)}")


def _coerce_scalar(tp: type, value: Any, path: str, ctx: _Ctx) -> Any:
    bad = _Invalid(path, f"expected {_TEXT[tp]}, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (bool, int, float)):
            # YAML made it a number (1.10 -> 1.1): the fix is quoting the text as written.
            raise _Invalid(path, f"{bad.message} (quote it: '{ctx.raw(path) or _flow(value)}')")
        raise bad
    if tp is bool:
        word = value.strip().lower() if isinstance(value, str) else None
        if isinstance(value, bool) or word in _BOOL_WORDS:
            return _BOOL_WORDS[word] if word is not None else value
        raise bad
    if isinstance(value, bool):  # True is an int in Python, never in a config
        raise bad
    if isinstance(value, str):
        try:  # PyYAML reads 1e-4 (no dot) as a string; `base` dicts may hold text too
            value = int(value) if tp is int and value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            raise bad from None
    if isinstance(value, float) and not math.isfinite(value):
        # .inf/.nan pass every `minimum` and `maximum` comparison (nan compares false) and
        # then train a NaN model or overflow int(); no option means them.
        raise _Invalid(path, f"expected a finite number, got {_show(value)}")
    if tp is float and isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    raise bad


def _check_choice(value: Any, choices: Sequence[Any], path: str) -> Any:
    if any(c == value and isinstance(c, bool) == isinstance(value, bool) for c in choices):
        return value
    guess = _suggest(value, choices) if isinstance(value, str) else None
    hint = f" (did you mean '{guess}'?)" if guess is not None else ""
    raise _Invalid(path, f"{_show(value)} is not one of {', '.join(map(str, choices))}{hint}")


def _check_meta(value: Any, meta: typing.Mapping[str, Any], path: str) -> Any:
    """option()'s choices / minimum / maximum on an already-typed value."""
    if (choices := meta.get("choices")) is not None and value is not None:
        items = value if isinstance(value, (list, tuple)) else [value]
        for i, item in enumerate(items):
            _check_choice(item, choices, f"{path}[{i}]" if items is value else path)
    low, high = meta.get("minimum"), meta.get("maximum")
    if low is None and high is None:
        return value
    # Bounds hold for a number, each number of a list and each value of a mapping.
    if isinstance(value, (list, tuple)):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    elif isinstance(value, dict):
        items = [(_join(path, k), v) for k, v in value.items()]
    else:
        items = [(path, value)]
    for where, item in items:
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        if low is not None and item < low:
            raise _Invalid(where, f"must be >= {low}, got {_show(item)}")
        if high is not None and item > high:
            raise _Invalid(where, f"must be <= {high}, got {_show(item)}")
    return value


# ---------------------------------------------------------------- building dataclasses

def _did_you_mean(cls: type, prefix: str, key: str, rest: Sequence[str], root: type) -> str:
    """The fix for an unknown key: a close sibling, else the same name in another section."""
    names = [f.name for f in _fields(cls)]
    if (near := _suggest(key, names)) is not None:
        guess = _join(prefix, near)
        full = ".".join([guess, *rest])
        guess = full if full in field_paths(root) else guess
    else:  # a key in the wrong section: `lr:` at the top instead of under `training:`
        leaf = rest[-1] if rest else key
        guess = next((p for p in field_paths(root) if p.rsplit(".", 1)[-1] == leaf), None)
    if guess is not None:
        return f" (did you mean '{guess}'?)"
    return f" (valid keys: {', '.join(names)})" if names else ""


def _build(cls: type, data: Any, path: str, ctx: _Ctx) -> Any:
    if not isinstance(data, dict):
        raise _Invalid(path, f"expected a mapping of {cls.__name__} fields, got {_show(data)}")
    hints, fields = _hints(cls), {f.name: f for f in _fields(cls)}
    for key in data:
        if key not in fields:
            hint = _did_you_mean(cls, path, str(key), (), ctx.root)
            raise _Invalid(_join(path, key), "unknown key" + hint)
    kwargs = {}
    for name, f in fields.items():
        sub, tp = _join(path, name), hints[name]
        if name in data:
            kwargs[name] = _check_meta(_coerce(tp, data[name], sub, ctx), f.metadata, sub)
        elif f.default is MISSING and f.default_factory is MISSING:
            if not _is_dc(tp):
                raise _Invalid(sub, f"required field is missing (add it: {sub}: ...)")
            kwargs[name] = _build(tp, {}, sub, ctx)  # so the error names the missing leaf
    try:
        obj = cls(**kwargs)
        if callable(hook := getattr(obj, "validate", None)):
            hook()
    except ConfigError as err:  # from validate() or __post_init__: locate it at this section
        raise _Invalid(path, str(err)) from None
    return obj


def _run(cls: type, data: Any, ctx: _Ctx) -> Any:
    if not _is_dc(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    try:
        return _build(cls, data, "", ctx)
    except _Invalid as err:
        field = f" {err.path}:" if err.path else ""
        raise ConfigError(f"{ctx.at(err.path)}:{field} {err.message}") from None


def from_dict(cls: type, data: dict, *, source: str = "<config>",
              lines: dict[str, int] | None = None) -> Any:
    """Build `cls` recursively from plain data; `lines` maps dotted paths to YAML lines."""
    return _run(cls, data, _Ctx(source, cls, dict(lines or {})))


# ---------------------------------------------------------------- YAML

def _yaml_problem(err: yaml.YAMLError) -> tuple[int | None, str]:
    """(1-based line, one-line reason) of a PyYAML error."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    what = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
    return (mark.line + 1 if mark is not None else None), " ".join(str(what).split())


def _to_data(node: yaml.Node, path: str, ctx: _Ctx, loader: yaml.SafeLoader) -> Any:
    """Composed node tree -> plain data, recording the line of every key and list item."""
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolve `<<: *defaults` merge keys
        out: dict = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"{ctx.source}:{line}: keys must be plain names")
            # Keys are names: YAML 1.1 would read `on:`, `yes:`, `no:` as booleans and `0:` as an
            # integer, so the key is the text as written.
            key = key_node.value
            sub = _join(path, key)
            if key in out:  # YAML would silently keep the last one
                raise ConfigError(f"{ctx.source}:{line}: {sub}: duplicate key "
                                  f"(first set on line {ctx.lines[sub]}; keep one)")
            ctx.lines[sub] = line
            out[key] = _to_data(value_node, sub, ctx, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            ctx.lines[f"{path}[{i}]"] = item.start_mark.line + 1
        return [_to_data(item, f"{path}[{i}]", ctx, loader) for i, item in enumerate(node.value)]
    if node.tag != "tag:yaml.org,2002:str":
        ctx.raws[path] = node.value
    try:
        return loader.construct_object(node)
    except ValueError as err:  # e.g. an integer of 5,000 digits, over Python's conversion limit
        raise ConfigError(f"{ctx.source}:{node.start_mark.line + 1}: {path}: unreadable value "
                          f"({str(err).split(';')[0]})") from None


def _read_yaml(path: Path, ctx: _Ctx) -> dict:
    try:
        with path.open("rb") as fh:  # bounded: /dev/zero or a data file given by mistake never ends or fills memory
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{ctx.source}: over {MAX_CONFIG_BYTES:,} bytes; a config is a few KB (is it the right file?)")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{ctx.source}: no such config file") from None
    except (OSError, UnicodeDecodeError) as err:
        why = getattr(err, "strerror", None) or err
        raise ConfigError(f"{ctx.source}: cannot read config file ({why})") from None
    try:
        node = compose_bounded(text)
        data = {} if node is None else _to_data(node, "", ctx, yaml.SafeLoader(""))
    except yaml.YAMLError as err:
        line, why = _yaml_problem(err)
        raise ConfigError(f"{ctx.source}{f':{line}' if line else ''}: invalid YAML: {why}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{ctx.source}:{node.start_mark.line + 1}: expected a mapping of "
                          f"config keys at the top level, got {_show(data)}")
    return data


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else copy.deepcopy(value)
    return out


# ---------------------------------------------------------------- overrides

def _brief(item: str) -> str:
    """An override as an error quotes it: a 100 KB value would bury the message."""
    return item if len(item) <= 80 else item[:77] + "..."


def _parse_one(item: str) -> tuple[str, Any, str]:
    """`a.b=value` -> (path, parsed value, value text)."""
    path, sep, text = item.partition("=")
    path = path.strip()
    if not sep or not path:
        raise ConfigError(f"--set {_brief(item)}: expected key=value (e.g. --set training.learning_rate=1e-4)")
    if not text.strip():
        return path, "", text  # `--set x=` is the empty string; null is spelled `null`
    try:
        return path, load_bounded(text), text
    except yaml.YAMLError as err:
        if text.lstrip()[0] in "[{":  # meant as a list or mapping: say why it does not parse
            raise ConfigError(f"--set {_brief(item)}: invalid value: {_yaml_problem(err)[1]}") from None
        return path, text, text  # e.g. a template like `Q: {q}`: the text is what was meant


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """`a.b=value` items -> (path, value); values are YAML scalars/flow values."""
    return [_parse_one(item)[:2] for item in overrides]


def _resolve(root: type, path: str) -> Any:
    """The declared type at a dotted path, or _Invalid with a did-you-mean."""
    segments, tp, prefix = path.split("."), root, ""
    for i, seg in enumerate(segments):
        section = _section(tp)
        if section is not None:
            if seg not in {f.name for f in _fields(section)}:
                hint = _did_you_mean(section, prefix, seg, segments[i + 1:], root)
                raise _Invalid(path, "unknown key" + hint)
            tp = _hints(section)[seg]
        elif (get_origin(tp) or tp) is dict:
            tp = (get_args(tp) or (Any, Any))[1]
        elif tp is not Any:
            raise _Invalid(path, f"{prefix} is {_expect(tp)}, not a section")
        prefix = _join(prefix, seg)
    return tp


def _apply(data: dict, cls: type, overrides: Sequence[Any], origins: dict[str, str]) -> dict:
    out = copy.deepcopy(data) if isinstance(data, dict) else {}
    for item in overrides:
        path, value, raw = _parse_one(item) if isinstance(item, str) else (*item, None)
        label = f"--set {_brief(item)}" if isinstance(item, str) else f"--set {_brief(f'{path}={_flow(value)}')}"
        try:
            tp = _resolve(cls, path)
        except _Invalid as err:
            raise ConfigError(f"{label}: {err.path}: {err.message}") from None
        if raw is not None and tp in (str, str | None) and not isinstance(value, (str, _NONE)):
            value = raw  # `--set model.revision=1.10` means the text, not the float 1.1
        node, segments = out, path.split(".")
        for seg in segments[:-1]:
            if not isinstance(node.get(seg), dict):
                node[seg] = {}
            node = node[seg]
        node[segments[-1]] = value
        for old in [p for p in origins if p.startswith((path + ".", path + "["))]:
            del origins[old]  # replaced wholesale by this override
        origins[path] = label
    return out


def apply_overrides(data: dict, cls: type, overrides: Sequence[str | tuple[str, Any]]) -> dict:
    """A copy of `data` with each override (`"a.b=v"` or `(path, value)`) checked and set."""
    return _apply(data, cls, overrides, {})


def load_config(cls: type, path: str | Path | None = None, overrides: Sequence[str] = (), *,
                base: dict | None = None) -> Any:
    """YAML file (merged over `base`) plus `--set` overrides -> a validated `cls`."""
    ctx = _Ctx(str(path) if path is not None else "<config>", cls)
    data = _read_yaml(Path(path), ctx) if path is not None else {}
    data = _apply(_merge(base, data) if base else data, cls, overrides, ctx.origins)
    return _run(cls, data, ctx)


# ---------------------------------------------------------------- output

def to_dict(instance: Any) -> dict:
    """The config as a plain nested dict, fields in declaration order."""
    if not dataclasses.is_dataclass(instance) or isinstance(instance, type):
        raise TypeError(f"{instance!r} is not a dataclass instance")
    return _plain(instance)


def dump_yaml(instance: Any) -> str:
    """The resolved config as YAML that `load_config` reads back to an equal object."""
    return yaml.safe_dump(to_dict(instance), sort_keys=False, allow_unicode=True,
                          default_flow_style=False)


@functools.lru_cache(maxsize=None)
def _paths(cls: type, prefix: str) -> tuple[str, ...]:
    out: list[str] = []
    for f in _fields(cls):
        path, section = _join(prefix, f.name), _section(_hints(cls)[f.name])
        out += [path, *(_paths(section, path) if section is not None else ())]
    return tuple(out)


def field_paths(cls: type) -> list[str]:
    """Every dotted path, sections and their fields, in declaration order."""
    return list(_paths(cls, ""))


def _describe_rows(cls: type, prefix: str, rows: list[tuple[str, ...]]) -> None:
    for f in _fields(cls):
        name, tp, meta = _join(prefix, f.name), _hints(cls)[f.name], f.metadata
        section = _section(tp)
        if f.default is not MISSING:
            default = _flow(f.default)
        elif f.default_factory is not MISSING or section is not None:
            default = "" if section is not None else _flow(f.default_factory())
        else:
            default = "(required)"
        extras = [f"one of: {', '.join(map(str, meta['choices']))}"] if meta.get("choices") else []
        extras += [f"{sign} {meta[key]}" for key, sign in (("minimum", ">="), ("maximum", "<="))
                   if meta.get(key) is not None]
        doc = " ".join(str(meta.get("doc") or "").split())
        rows.append((name, _label(tp), default, doc + (f" ({', '.join(extras)})" if extras else "")))
        if section is not None:
            _describe_rows(section, name, rows)


def describe(cls: type, prefix: str = "") -> str:
    """One aligned line per field: dotted name, type, default, doc (for --help listings)."""
    rows: list[tuple[str, ...]] = []
    _describe_rows(cls, prefix.rstrip("."), rows)
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths + [0])).rstrip() for r in rows)
