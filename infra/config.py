"""Typed configs: dataclasses, named recipes, YAML files and `key=value` overrides.

Every job has a dataclass config. A recipe is a function returning one (registered by name) or a
YAML file whose keys mirror the dataclass. Overrides are dotted paths into the (nested) dataclass:

    videopoet train --config tiny model.width=128 optim.lr=3e-4 data.tasks=[t2v,i2v]

A bad key or value raises ConfigError with one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from videopoet.assets import packaged_config

T = TypeVar("T")


class UsageError(ValueError):
    """A user mistake on the command line (a path of the wrong kind, a missing file, an output that is a file);
    the message is one line naming the path or value and what was expected. `videopoet` prints it, exit 2."""


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message is one line for the user."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _parse_scalar_text(text: str) -> Any:
    """YAML-parse an override's text so that 3e-4, true, null and [a, b] mean what they look like."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` converted to type `tp`, or raise ConfigError naming `key`."""

    def fail() -> ConfigError:
        return ConfigError(f"{key}={value!r}: expected {_type_name(tp)}")

    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value in allowed:
            return value
        if isinstance(value, (int, float, bool)) and str(value) in allowed:
            return str(value)
        raise fail()
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError:
                continue
        raise fail()
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise fail()
        args = [a for a in get_args(tp) if a is not Ellipsis]
        item_tp = args[0] if args else Any
        items = [coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise fail()
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise fail()
        return from_dict(tp, value, prefix=key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise fail()
    if tp is int:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else int(value)
            except ValueError:
                raise fail() from None
        raise fail()
    if tp is float:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise fail() from None
        raise fail()
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise fail()
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise fail()
    return value


def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=False)


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a (nested) dict, checking every key and value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or '<config>'}={data!r}: expected a mapping")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        if name not in fields:
            raise ConfigError(
                f"{prefix}{name}: unknown key; allowed: {', '.join(sorted(fields))}"
            )
        kwargs[name] = coerce(value, hints[name], prefix + name)
    obj = cls(**kwargs)
    _validate(obj, prefix)
    return obj


def _validate(obj: Any, prefix: str = "") -> None:
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ConfigError:
            raise
        except (ValueError, AssertionError) as err:
            raise ConfigError(f"{prefix.rstrip('.') or type(obj).__name__}: {err}") from None


def to_dict(cfg: Any) -> Any:
    """Plain, JSON/YAML-serialisable form of a config (Paths as strings, tuples as lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; used for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def set_path(cfg: T, dotted: str, raw_value: Any, *, _prefix: str = "") -> T:
    """Return a copy of dataclass `cfg` with the field at `dotted` set (value coerced to its type)."""
    head, _, rest = dotted.partition(".")
    full = _prefix + dotted
    if not dataclasses.is_dataclass(cfg):
        raise ConfigError(f"{full}={raw_value!r}: {_prefix.rstrip('.')} has no sub-keys")
    names = {f.name for f in dataclasses.fields(cfg)}
    if head not in names:
        raise ConfigError(f"{full}={raw_value!r}: unknown key {head!r}; allowed: {', '.join(sorted(names))}")
    current = getattr(cfg, head)
    if rest:
        new = set_path(current, rest, raw_value, _prefix=f"{_prefix}{head}.")
    else:
        new = coerce(raw_value, _hints(type(cfg))[head], full)
    return dataclasses.replace(cfg, **{head: new})


def apply_overrides(cfg: T, overrides: list[str] | tuple[str, ...]) -> T:
    """Apply `key=value` strings in order; validate the result."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{item!r}: an override must look like key=value (e.g. model.width=128)")
        key, _, text = item.partition("=")
        key = key.strip()
        try:
            cfg = set_path(cfg, key, _parse_scalar_text(text))
        except ConfigError as err:
            # Name the value as the user typed it, not as YAML parsed it.
            head, _, reason = str(err).partition(": ")
            raise ConfigError(f"{key}={text!r}: {reason}") from None
    _validate_tree(cfg)
    return cfg


def _validate_tree(cfg: Any, prefix: str = "") -> None:
    if not dataclasses.is_dataclass(cfg):
        return
    for f in dataclasses.fields(cfg):
        _validate_tree(getattr(cfg, f.name), f"{prefix}{f.name}.")
    _validate(cfg, prefix)


class RecipeRegistry(typing.Generic[T]):
    """Named recipes for one config class: functions registered with @registry.register."""

    def __init__(self, cls: type[T], recipe_dir: Path | None = None):
        self.cls = cls
        self.recipe_dir = recipe_dir
        self._recipes: dict[str, Callable[[], T]] = {}

    def register(self, fn: Callable[[], T]) -> Callable[[], T]:
        self._recipes[fn.__name__] = fn
        return fn

    def names(self) -> list[str]:
        return sorted(self._recipes)

    def get(self, name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> T:
        """A recipe by name, or a YAML file (its keys override the `base` recipe it names, if any)."""
        text = str(name_or_path)
        if text in self._recipes:
            cfg = self._recipes[text]()
        elif text.endswith((".yaml", ".yml", ".json")) or Path(text).is_file() or packaged_config(text):
            path = Path(text)
            if not path.is_file():
                # configs/NAME.yaml or NAME: the YAML packaged with videopoet (works from a wheel too)
                path = packaged_config(text) or path
            if not path.is_file():
                raise ConfigError(f"config={text!r}: no such file")
            data = yaml.safe_load(path.read_text()) or {}
            base = data.pop("base", None)
            if base is not None:
                cfg = self.get(base)
                cfg = _merge(cfg, data)
            else:
                cfg = from_dict(self.cls, data)
        else:
            raise ConfigError(
                f"config={text!r}: not a recipe or a YAML file; recipes: {', '.join(self.names())}"
            )
        return apply_overrides(cfg, overrides)


def _merge(cfg: T, data: dict[str, Any], prefix: str = "") -> T:
    """Apply a (nested) dict of values on top of `cfg`, with the same checks as overrides."""
    for key, value in data.items():
        current = getattr(cfg, key, None)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            cfg = dataclasses.replace(cfg, **{key: _merge(current, value, f"{prefix}{key}.")})
        else:
            try:
                cfg = set_path(cfg, key, value)
            except ConfigError as err:
                raise ConfigError(f"{prefix}{err}") from None
    return cfg


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_hash(cfg: Any) -> str:
    """Stable short hash of a config (for content-addressed keys and checkpoints)."""
    import hashlib

    blob = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
