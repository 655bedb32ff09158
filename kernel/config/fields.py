"""How a setting is declared: its type and range (pydantic), plus where else it may be
given: an environment variable, a command-line flag, and whether it is a secret.

One declaration per setting serves every layer: the loader reads ``env``, the command
line is built from ``flag``, ``livemesh config show`` masks ``secret`` values.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo


def setting(
    default: Any,
    *,
    env: str | None = None,
    flag: str | None = None,
    help: str = "",
    secret: bool = False,
    **constraints: Any,
) -> Any:
    """A settings field: ``default``, optional ``env`` name and ``flag``, and pydantic
    ``constraints`` (``ge``, ``le``, ...) that every layer's value must meet."""
    extra: dict[str, Any] = {"env": env, "flag": flag, "secret": secret}
    # a secret stays out of the model's repr too, so a logged settings object shows none
    return Field(default, description=help, json_schema_extra=extra, repr=not secret, **constraints)


def _extra(field: FieldInfo, key: str) -> Any:
    extra = field.json_schema_extra
    return extra.get(key) if isinstance(extra, dict) else None


def env_name(field: FieldInfo) -> str | None:
    """The environment variable that sets this field, if any."""
    name = _extra(field, "env")
    return name if isinstance(name, str) else None


def flag_name(field: FieldInfo) -> str | None:
    """The command-line flag that sets this field, if any."""
    name = _extra(field, "flag")
    return name if isinstance(name, str) else None


def is_secret(field: FieldInfo) -> bool:
    """Whether the value must never be printed (keys, passwords)."""
    return bool(_extra(field, "secret"))
