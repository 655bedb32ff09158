"""Loading a process's settings in four layers, each over the one before:
defaults (in the class) -> the settings file -> the environment -> command-line flags.

Validated once, by pydantic, after the layers are merged. The merge is written here
rather than taken from pydantic-settings because the point of it is to record where each
effective value came from (``livemesh config show``), which that library's sources do
not tell, and because each key reads only the environment variable it declares (its
environment source would read an unprefixed ``HOST`` or ``PORT`` for undeclared ones).

The settings file is ``deploy/settings.toml`` unless ``LIVEMESH_SETTINGS`` names another
(empty: none). Its ``[all]`` table applies to every process kind that has the key; a
``[KIND]`` table (``[catalog]``, ``[edge]``...) to that kind, where an unknown key is an
error.
"""

from __future__ import annotations

import argparse
import os
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from kernel.config.base import ConfigError, Settings
from kernel.config.fields import env_name, flag_name, is_secret

S = TypeVar("S", bound=Settings)

SETTINGS_ENV = "LIVEMESH_SETTINGS"
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "deploy" / "settings.toml"
SHARED_SECTION = "all"


@dataclass(frozen=True)
class Loaded(Generic[S]):
    """Settings and, per key, where the value came from: ``default``, ``file PATH``,
    ``env NAME`` or ``flag --NAME``."""

    settings: S
    sources: dict[str, str]


def settings_file(environ: Mapping[str, str]) -> Path | None:
    """The settings file in force: ``LIVEMESH_SETTINGS``, else the default one if present."""
    named = environ.get(SETTINGS_ENV)
    if named is not None:
        return Path(named) if named.strip() else None
    return DEFAULT_FILE if DEFAULT_FILE.exists() else None


def file_layer(cls: type[Settings], path: Path) -> dict[str, Any]:
    """The keys of ``cls`` set in the file's ``[all]`` and ``[KIND]`` tables."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"settings file {path}: {exc}") from None
    values: dict[str, Any] = {}
    for section in dict.fromkeys((SHARED_SECTION, cls.kind)):
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"settings file {path}: [{section}] is not a table")
        for key, value in table.items():
            if key in cls.model_fields:
                values[key] = value
            elif section != SHARED_SECTION:
                known = ", ".join(cls.model_fields)
                raise ConfigError(
                    f"{key} in [{section}] of {path}: no such setting; known: {known}"
                )
    return values


def env_layer(cls: type[Settings], environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Each key whose declared variable is set and not blank: ``(value, its name)``."""
    found: dict[str, tuple[str, str]] = {}
    for key, field in cls.model_fields.items():
        name = env_name(field)
        if name is not None and environ.get(name, "").strip():
            found[key] = (environ[name], name)
    return found


def load(
    cls: type[S],
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Loaded[S]:
    """``cls``'s settings from the four layers; :class:`ConfigError` names a bad one."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources = dict.fromkeys(cls.model_fields, "default")
    path = settings_file(environ)
    if path is not None:
        for key, value in file_layer(cls, path).items():
            values[key], sources[key] = value, f"file {path}"
    for key, (value, name) in env_layer(cls, environ).items():
        values[key], sources[key] = value, f"env {name}"
    for key, value in (flags or {}).items():
        values[key], sources[key] = value, f"flag {flag_name(cls.model_fields[key]) or key}"
    try:
        settings = cls.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_describe(cls, exc, values, sources)) from None
    return Loaded(settings, sources)


def add_flags(parser: argparse.ArgumentParser, cls: type[Settings]) -> None:
    """One flag per key that declares one; a flag not given leaves no trace in the
    namespace, so only what was typed becomes the flag layer."""
    for key, field in cls.model_fields.items():
        flag = flag_name(field)
        if flag is None:
            continue
        options: dict[str, Any] = {"dest": key, "default": argparse.SUPPRESS, "help": _help(field)}
        if field.annotation is bool:
            options["action"] = "store_false" if field.default else "store_true"
        elif typing.get_origin(field.annotation) is list:
            options["action"] = "append"
        parser.add_argument(flag, **options)


def parse(
    cls: type[S], argv: Sequence[str] | None, parser: argparse.ArgumentParser
) -> tuple[Loaded[S], argparse.Namespace]:
    """Parse the command line into ``cls``'s flags and the command's own operands (the
    rest of ``parser``'s arguments); a bad setting ends the process with exit code 2."""
    add_flags(parser, cls)
    args = parser.parse_args(argv)
    try:
        loaded = load(cls, given_flags(cls, args))
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    operands = {key: value for key, value in vars(args).items() if key not in cls.model_fields}
    return loaded, argparse.Namespace(**operands)


def given_flags(cls: type[Settings], args: argparse.Namespace) -> dict[str, Any]:
    """The flag layer of ``cls`` in ``args``, parsed by a parser (or a sub-command's)
    that :func:`add_flags` gave ``cls``'s flags: only the flags that were typed."""
    return {key: value for key, value in vars(args).items() if key in cls.model_fields}


def allowed(field: FieldInfo) -> str:
    """The values ``field`` accepts, in words: its choices and bounds."""
    choices = _choices(field.annotation)
    parts = [f"one of {', '.join(map(str, choices))}"] if choices else []
    for meta in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(meta, attr, None)
            if bound is not None:
                parts.append(f"{sign} {bound}")
        if getattr(meta, "pattern", None):
            parts.append(f"matching {meta.pattern}")
        if getattr(meta, "min_length", None):
            parts.append("not empty")
    return ", ".join(parts)


def shown(field: FieldInfo, value: Any) -> str:
    """A value as it may be printed: a secret only as ``<set>``/``<unset>``, a URL's
    password (``redis://:pw@host``) as ``<set>``."""
    if is_secret(field):
        return "<unset>" if value in (None, "", []) else "<set>"
    if not isinstance(value, str):
        return str(value)
    url = urlsplit(value)
    if url.password:
        value = url._replace(netloc=url.netloc.replace(f":{url.password}@", ":<set>@", 1)).geturl()
    return repr(value)


def _choices(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [c for arg in typing.get_args(annotation) for c in _choices(arg)]
    return []


def _help(field: FieldInfo) -> str:
    env = env_name(field)
    given = [] if field.annotation is bool else [f"default: {shown(field, field.default)}"]
    given += [f"env {env}"] if env else []
    suffix = f" ({'; '.join(given)})" if given else ""
    return f"{field.description or ''}{suffix}".replace("%", "%%")


def _describe(
    cls: type[Settings], exc: ValidationError, values: dict[str, Any], sources: dict[str, str]
) -> str:
    lines = []
    for error in exc.errors():
        key = str(error["loc"][0]) if error["loc"] else "?"
        field = cls.model_fields.get(key)
        if field is None:
            lines.append(f"{key}: {error['msg']}")
            continue
        where = sources.get(key, "default")
        rule = allowed(field)
        lines.append(
            f"bad setting {key} = {shown(field, values.get(key, field.default))} (from {where}): "
            f"{error['msg']}{f'; allowed: {rule}' if rule else ''}"
        )
    return "\n".join(lines)
