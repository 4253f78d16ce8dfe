"""The file form and the command-line form of rl's config dataclasses (standard library only).

File form. :func:`from_dict` builds a dataclass from a mapping key by key, sections recursively: an
unknown key at any level, or a value of the wrong type, is a :class:`ConfigError` (a ``ValueError``)
of one line naming the file and the dotted key, with the closest known key as a hint. :func:`to_dict`
is the inverse (JSON-ready): ``from_dict(type(c), to_dict(c)) == c``.

Command-line form. Each field carries ``metadata={"help": ...}``, so :func:`add_dataclass_arguments`
turns a dataclass into ``--kebab-case`` options of an ``argparse`` subcommand and
:func:`dataclass_from_args` reads them back.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rl.config.paths import utf8_error

__all__ = ["ConfigError", "field_default", "from_dict", "to_dict", "read_config_file", "add_dataclass_arguments", "dataclass_from_args"]


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the file (or object) and the dotted key."""


def field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _type_name(tp) -> str:
    """``str``, ``float``, ``list of str``, ``int or null``, ... for error messages."""
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        inner = _type_name(typing.get_args(tp)[0]) if typing.get_args(tp) else "values"
        return f"list of ({inner})" if " or " in inner else f"list of {inner}"
    if tp is dict or origin is dict:
        return "table"
    return getattr(tp, "__name__", str(tp))


def _convert(tp, value, where: str, key: str):
    """``value`` checked against the annotation ``tp`` (and converted: int -> float, list -> tuple)."""
    bad = ConfigError(f"{where}: '{key}': expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _convert(arm, value, where, key)
            except ConfigError:
                pass
        raise bad
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int or tp is float:
        if isinstance(value, bool) or not isinstance(value, int if tp is int else (int, float)):
            raise bad
        return tp(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        elem = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        items = [_convert(elem, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if list in (origin, tp) else tuple(items)
    if tp is dict or origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise bad
    raise TypeError(f"config field {key!r}: unsupported annotation {tp!r}")


def _unknown(where: str, dotted: str, key: str, known: list[str], fixed: tuple[str, ...]) -> ConfigError:
    if key in fixed:
        return ConfigError(f"{where}: unknown key '{dotted}' (the loop derives it from the top-level 'seed')")
    near = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else f" (known: {', '.join(known)})"
    return ConfigError(f"{where}: unknown key '{dotted}'{hint}")


def _lift_shorthands(cls, data: Mapping, where: str, prefix: str) -> dict:
    data = dict(data)
    for key, section in getattr(cls, "_SHORTHANDS", {}).items():
        if key in data:
            sub = data.get(section, {})
            if not isinstance(sub, Mapping):
                raise ConfigError(f"{where}: '{prefix}{section}': expected a table, got {type(sub).__name__} {sub!r}")
            if key in sub:
                raise ConfigError(f"{where}: '{prefix}{key}' and '{prefix}{section}.{key}' are the same setting; give one")
            data[section] = {**sub, key: data.pop(key)}
    return data


def from_dict(cls, data, *, where: str = "config", prefix: str = "", base=None, fixed: tuple[str, ...] = ()):
    """A ``cls`` instance from the mapping ``data``, every key and value checked (see the module docstring).

    where: the file (or object) named in errors. prefix: the dotted path of ``data`` in the tree.
    base: the instance whose values missing keys keep (default: the field defaults). fixed: keys
    the parent sets itself (rejected here).
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{where}: '{prefix.rstrip('.') or cls.__name__}': expected a table of {cls.__name__} settings, "
            f"got {type(data).__name__} {data!r}"
        )
    data = _lift_shorthands(cls, data, where, prefix)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    known = [name for name in fields if name not in fixed]
    derived = getattr(cls, "_DERIVED", {})
    kw = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            raise _unknown(where, dotted, str(key), known, fixed)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):  # a section: starts from its default in this parent
            sub_base = getattr(base, key) if base is not None else field_default(fields[key])
            kw[key] = from_dict(tp, value, where=where, prefix=f"{dotted}.", base=sub_base, fixed=derived.get(key, ()))
        else:
            kw[key] = _convert(tp, value, where, dotted)
    try:
        return dataclasses.replace(base, **kw) if base is not None else cls(**kw)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        at = f"'{prefix.rstrip('.')}': " if prefix else ""
        raise ConfigError(f"{where}: {at}{e}") from None


def _plain(v):
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return to_dict(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    return v


def to_dict(obj) -> dict[str, Any]:
    """The file form of a config dataclass: nested dicts and lists, keys the parent derives left out."""
    derived = getattr(type(obj), "_DERIVED", {})
    out = {}
    for f in dataclasses.fields(obj):
        v = _plain(getattr(obj, f.name))
        if isinstance(v, dict) and f.name in derived:
            v = {k: x for k, x in v.items() if k not in derived[f.name]}
        out[f.name] = v
    return out


def read_config_file(path: str | Path) -> dict:
    """The mapping in a JSON (``.json``) or TOML (``.toml``) file; an unreadable file, invalid UTF-8 or a
    parse error is a :class:`ConfigError` naming the file (and the line where known)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(utf8_error(path, e)) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config: {(e.strerror or str(e)).lower()}") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            d = tomllib.loads(text)
        else:
            d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: cannot parse the config: {e.msg} (column {e.colno})") from None
    except ValueError as e:  # tomllib.TOMLDecodeError (its message names line and column)
        raise ConfigError(f"{path}: cannot parse the config: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a table of settings at the top, got {type(d).__name__}")
    return d


# ---------------------------------------------------------------------------------------------
# command-line form


def _str2bool(s: str) -> bool:
    t = str(s).strip().lower()
    if t in ("1", "true", "yes", "y", "on"):
        return True
    if t in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {s!r}")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls, *, prefix: str = "", title: str | None = None, defaults: dict[str, Any] | None = None
) -> None:
    """Add one ``--{prefix}{field-name}`` option per field of dataclass ``cls`` (help from metadata)."""
    group = parser.add_argument_group(title or cls.__name__)
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        name = "--" + prefix + f.name.replace("_", "-")
        default = defaults.get(f.name, f.default)
        kw: dict[str, Any] = {
            "dest": prefix.replace("-", "_") + f.name,
            "default": default,
            "help": f"{f.metadata.get('help', '')} (default: {default})",
        }
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        typ = f.type
        if typ in (bool, "bool"):
            kw["type"] = _str2bool
            kw["metavar"] = "BOOL"
        elif typ in (int, "int"):
            kw["type"] = int
        elif typ in (float, "float"):
            kw["type"] = float
        elif typ in (str, "str"):
            kw["type"] = str
        elif typ in ("int | None",):
            kw["type"] = int
        elif typ in ("float | None",):
            kw["type"] = float
        else:  # tuple[str, ...] | None
            kw["nargs"] = "+"
            kw["type"] = str
        group.add_argument(name, **kw)


def dataclass_from_args(cls, args: argparse.Namespace, *, prefix: str = ""):
    """Build ``cls`` from the options :func:`add_dataclass_arguments` added."""
    kw = {f.name: getattr(args, prefix.replace("-", "_") + f.name) for f in dataclasses.fields(cls)}
    return cls(**kw)
