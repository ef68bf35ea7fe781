"""Typed plain data: a safe YAML loader, ``a.b=value`` overrides, and the check of a mapping
against (nested) frozen dataclasses, naming the key path and the allowed keys in every error.

Generic: knows nothing of experiments. A type may register a parser in ``PARSERS`` (e.g. the
objective spec), called as ``parser(value, key_path)``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union

import yaml

PARSERS: dict[Any, Callable[[Any, str], Any]] = {}
"""Types parsed by a function of (value, key path) instead of by their structure."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (PyYAML's YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)



def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {[f.name for f in dataclasses.fields(tp)]}"
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} {_type_name(args[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    if tp is type(None):
        return "null"
    return {int: "int", float: "float", str: "str", bool: "bool"}.get(tp, str(tp))


def _error(path: str, tp: Any, value: Any) -> ValueError:
    return ValueError(f"config key '{path}': expected {_type_name(tp)}, got {value!r}")


def _same_kind(value: Any, tp: Any) -> bool:
    """Whether ``value`` has the shape of ``tp`` (mapping, list or scalar), before details."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) or origin is dict:
        return isinstance(value, Mapping)
    if origin is tuple:
        return isinstance(value, Sequence) and not isinstance(value, str)
    return not isinstance(value, (Mapping, list, tuple))


def convert(value: Any, tp: Any, path: str) -> Any:
    """``value`` checked against (and converted to) type ``tp``; ``path`` names it in errors."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in PARSERS:
        return PARSERS[tp](value, path)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        fitting = [a for a in options if _same_kind(value, a)]
        if len(fitting) == 1:  # one branch fits the value's shape: report its precise error
            return convert(value, fitting[0], path)
        for arg in fitting:
            try:
                return convert(value, arg, path)
            except ValueError:
                pass
        raise _error(path, tp, value)
    if origin is Literal:
        if value in args and isinstance(value, str):
            return value
        raise _error(path, tp, value)
    if origin is tuple:
        if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
            raise _error(path, tp, value)
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise _error(path, tp, value)
        return tuple(convert(v, t, f"{path}[{i}]") for i, (v, t) in enumerate(zip(value, items)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _error(path, tp, value)
        return {
            convert(k, args[0], f"{path}"): convert(v, args[1], f"{path}.{k}")
            for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise _error(path, tp, value)


def build(cls: type, raw: Any, path: str) -> Any:
    """An instance of dataclass ``cls`` from a mapping, naming unknown and missing keys."""
    where = f"'{path}'" if path else "the top level"
    names = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(raw, Mapping):
        raise ValueError(f"config {where}: expected a mapping with keys {names}, got {raw!r}")
    unknown = [k for k in raw if k not in names]
    if unknown:
        key = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ValueError(f"config: unknown key '{key}'; allowed keys at {where}: {names}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        if f.name in raw:
            kwargs[f.name] = convert(raw[f.name], hints[f.name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"config: missing required key '{key}'; keys at {where}: {names}")
    return cls(**kwargs)



def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], value parsed as a YAML scalar or flow list/mapping)."""
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise ValueError(f"bad --set {text!r}: expected key.path=value, e.g. train.steps=500")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ValueError(f"bad --set {text!r}: value is not valid YAML ({e.problem})") from e
    return path, value


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of the raw (unvalidated) mapping with each ``a.b=value`` override set."""
    out = yaml.load(yaml.safe_dump(dict(raw)), Loader=_Loader)  # a deep copy of plain data
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: i + 1])
                raise ValueError(f"bad --set {text!r}: '{where}' is {child!r}, not a mapping")
            node = child
        node[path[-1]] = value
    return out



def load_yaml(text: str) -> Any:
    """YAML text as plain data (the loader that reads 1e-3 as a float)."""
    return yaml.load(text, Loader=_Loader)
