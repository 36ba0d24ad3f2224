"""Dataclass configs (TRL style: a help string per field), loaded from YAML plus dotted CLI overrides.

    cfg = load_config(SITConfig, "configs/sit.yaml", ["train.lr=1e-4", "data.n_safety=300"])

Unknown keys are rejected with an error that names the key and the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from safealign.errors import SafealignError

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, help: str = "", **kw: Any) -> Any:
    """A dataclass field with a help string (shown by ``safealign ... --help-config``)."""
    if default is not dataclasses.MISSING and isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides or []:
        if "=" not in item:
            raise SafealignError(f"override '{item}' is not of the form key=value", field=item)
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise SafealignError(f"override '{item}' has an empty key", field=item)
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise SafealignError(f"override '{item}': '{p}' is not a section", field=key)
        node[parts[-1]] = _parse_scalar(value)
    return data


def _resolve_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _resolve_type(args[0]) if len(args) == 1 else tp
    return tp


def from_dict(cls: type[T], data: dict[str, Any] | None, *, source: str = "<config>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and coercing simple types."""
    data = dict(data or {})
    if not isinstance(data, dict):
        raise SafealignError(f"expected a mapping for '{prefix or 'root'}'", file=source, field=prefix or None)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        name = f"{prefix}{unknown[0]}"
        raise SafealignError(
            f"unknown config key (known: {', '.join(sorted(fields))})", file=source, field=name
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = _resolve_type(hints[name])
        dotted = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            if value is not None and not isinstance(value, dict):
                raise SafealignError("expected a mapping", file=source, field=dotted)
            kwargs[name] = from_dict(tp, value, source=source, prefix=dotted + ".")
            continue
        kwargs[name] = _coerce(value, tp, source, dotted)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise SafealignError(str(e), file=source, field=prefix.rstrip(".") or None) from None


def _coerce(value: Any, tp: Any, source: str, dotted: str) -> Any:
    if value is None:
        return None
    try:
        if tp is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return float(value)
        if tp is int and isinstance(value, (int, str)) and not isinstance(value, bool):
            return int(value)
        if tp is bool:
            if isinstance(value, bool):
                return value
            raise ValueError
        if tp is str and isinstance(value, (int, float)):
            return str(value)
        origin = typing.get_origin(tp)
        if origin is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise ValueError
            (inner,) = typing.get_args(tp) or (Any,)
            return [_coerce(v, _resolve_type(inner), source, dotted) for v in value]
    except ValueError:
        raise SafealignError(f"cannot read {value!r} as {getattr(tp, '__name__', tp)}", file=source, field=dotted) from None
    return value


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load ``cls`` from a YAML file (optional) and apply dotted overrides."""
    data: dict[str, Any] = {}
    source = "<overrides>"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.exists():
            raise SafealignError("config file not found", file=source)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            raise SafealignError(f"invalid YAML: {getattr(e, 'problem', e)}", file=source,
                                 line=None if line is None else line + 1) from None
        if not isinstance(data, dict):
            raise SafealignError("the config must be a mapping", file=source)
    apply_overrides(data, overrides)
    return from_dict(cls, data, source=source)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, help) for every field, for ``--help-config``."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _resolve_type(hints[f.name])
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, prefix + f.name + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
        rows.append((prefix + f.name, repr(default), f.metadata.get("help", "")))
    return rows
