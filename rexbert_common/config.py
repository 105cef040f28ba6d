"""One loader for every YAML config: YAML → documented, validated dataclasses.

Curation configs, training recipes and experiment files all go through :func:`load_config`, so every one of
them gives the same one-line errors: the file, the dotted field path, the value, and a suggestion when a
field name is misspelt. Constraints live next to the field they constrain::

    @dataclass
    class PhaseConfig:
        micro_batch_size: int = checked(8, ge=1)        # rows per device per forward
        decay_shape: str = checked("1-sqrt", choices=("1-sqrt", "linear"))

Strings may reference environment variables (``${REXBERT_DATA_DIR}``). Command-line overrides use dotted
paths with list indexes: ``--set phase1.lr=1e-3 --set data.general.0.weight=2`` (values parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rexbert_common.errors import UserError

T = TypeVar("T")
_ENV = re.compile(r"\$\{(\w+)\}")
_BOUNDS = {
    "ge": (">=", lambda v, b: v >= b),
    "gt": (">", lambda v, b: v > b),
    "le": ("<=", lambda v, b: v <= b),
    "lt": ("<", lambda v, b: v < b),
}


class ConfigError(UserError, ValueError):
    """A config field is unknown or invalid; the message names the file, the field and the value."""


def checked(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    choices: tuple | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field whose value the loader checks: ``choices`` for strings, bounds for numbers.

    Bounds apply to every number of a list field too (``betas: list[float] = checked(..., gt=0, lt=1)``).
    """
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    metadata = {"choices": tuple(choices) if choices else None, "bounds": bounds}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def _expand(value: str, where: str, source: str) -> str:
    def substitute(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{source}: {where} references ${{{name}}}, an unset environment variable")
        return os.environ[name]

    return _ENV.sub(substitute, value)


def _coerce(value: Any, tp: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) not in typing.get_args(tp):
                raise ConfigError(f"{source}: {where} must not be empty")
            return None
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, where, source)
            except ConfigError as error:
                errors.append(error)
        raise errors[0]
    if value is None and tp is not Any:
        raise ConfigError(f"{source}: {where} must not be empty")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{source}: {where} = {value!r} is not one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {where} must be a mapping, got {value!r}")
        return config_from_dict(tp, value, source, prefix=where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {where} must be a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{where}.{i}", source) for i, v in enumerate(value)]
    if origin is tuple:  # a list in YAML: tuple[X, ...] any length, tuple[X, Y] exactly two
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {where} must be a list, got {value!r}")
        args = typing.get_args(tp)
        items = [args[0]] * len(value) if args[1:] == (Ellipsis,) else list(args)
        if len(value) != len(items):
            raise ConfigError(f"{source}: {where} must be a list of {len(items)}, got {value!r}")
        return tuple(_coerce(v, t, f"{where}.{i}", source) for i, (v, t) in enumerate(zip(value, items)))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {where} must be a mapping, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2:
            return {k: _coerce(v, args[1], f"{where}.{k}", source) for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {where} must be true or false, got {value!r}")
        return value
    if tp in (int, float):
        # YAML 1.1 reads "1e-3" (no dot in the mantissa) as a string: accept numeric strings.
        try:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise TypeError
            if tp is int:
                if float(number) != int(number):
                    raise TypeError
                return int(number)
            return float(number)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(
                f"{source}: {where} must be {'an integer' if tp is int else 'a number'}, got {value!r}"
            ) from None
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{source}: {where} must be a string, got {value!r}")
        return _expand(str(value), where, source)
    return value


def _check(value: Any, spec: dataclasses.Field, where: str, source: str) -> None:
    choices = spec.metadata.get("choices")
    if choices and value is not None and value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
        hint = f" -- did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{source}: {where} = {value!r} is not one of {list(choices)}{hint}")
    numbers = value if isinstance(value, list) else [value]
    for number in numbers:
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            continue
        for key, bound in spec.metadata.get("bounds", {}).items():
            symbol, ok = _BOUNDS[key]
            if not ok(number, bound):
                raise ConfigError(f"{source}: {where} = {number!r} must be {symbol} {bound}")


def config_from_dict(cls: type[T], data: Any, source: str = "<dict>", prefix: str = "") -> T:
    """Validate a raw mapping into ``cls`` (a dataclass), recursively."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix or 'the config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f" -- did you mean {close[0]!r}?" if close else f" (valid: {', '.join(fields)})"
            raise ConfigError(f"{source}: unknown field {prefix + '.' if prefix else ''}{key}{hint}")
    kwargs = {}
    for name, spec in fields.items():
        where = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], where, source)
            _check(kwargs[name], spec, where, source)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required field {where}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:  # __post_init__ checks across fields
        raise ConfigError(f"{source}: {prefix or cls.__name__}: {error}") from None


def add_override_argument(parser, example: str) -> None:
    """The ``--set FIELD=VALUE`` option every config-driven CLI shares (values parsed by
    :func:`apply_overrides`)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help=f"override a config field, e.g. --set {example} (repeatable; lists: a.0.b=v)",
    )


def apply_overrides(data: dict, overrides: list[str], source: str = "command line") -> dict:
    """Apply ``a.b.0.c=value`` overrides (values parsed as YAML) to a raw config mapping, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} must look like field.path=value")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        node: Any = data
        for depth, key in enumerate(keys):
            last = depth == len(keys) - 1
            here = ".".join(keys[: depth + 1])
            if isinstance(node, list):
                if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
                    raise ConfigError(
                        f"{source}: --set {path}: {here} is not an index of a {len(node)}-item list"
                    )
                key = int(key)
            elif not isinstance(node, dict):
                raise ConfigError(f"{source}: --set {path}: {'.'.join(keys[:depth])} is not a mapping")
            if last:
                try:
                    node[key] = yaml.safe_load(raw)
                except yaml.YAMLError as error:
                    raise ConfigError(
                        f"{source}: --set {path}: invalid value {raw!r} ({_one_line(error)})"
                    ) from None
            else:
                node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    return data


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping; a missing file, invalid YAML or a non-mapping is a one-line ConfigError."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or error
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of fields, got {type(data).__name__}")
    return data


def load_config(
    path: str | os.PathLike,
    cls: type[T],
    overrides: list[str] | None = None,
    validate: Callable[[T, str], None] | None = None,
) -> T:
    """Read ``path``, apply ``--set`` overrides, build ``cls``, then run ``validate(config, source)``."""
    source = str(path)
    data = apply_overrides(read_yaml(path), overrides or [], source)
    config = config_from_dict(cls, data, source)
    if validate is not None:
        validate(config, source)
    return config


def override_config(config: T, overrides: list[str], source: str = "--set") -> T:
    """``config`` (built from command-line options) with ``--set field=value`` overrides, checked like a
    config file's fields and by the config's own validation."""
    if not overrides:
        return config
    data = apply_overrides(config_to_dict(config), overrides, source)
    try:
        return config_from_dict(type(config), data, source)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:  # the dataclass's own __post_init__ checks
        raise ConfigError(f"{source}: {_one_line(error)}") from None


def config_to_dict(config: Any) -> dict:
    """The plain mapping a config was (or could have been) loaded from."""
    return dataclasses.asdict(config)
