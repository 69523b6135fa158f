"""Durations, sizes and secrets as written in rapport.toml, parsed once at load."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, ValidationInfo

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2, "mi": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3,
}  # fmt: skip


def parse_duration(value: Any) -> float:
    """``"250ms"``, ``"5s"``, ``"5m"``, ``"1h"`` or a number of seconds, as seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration such as '30s' or '5m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS_S[match.group(2)]
    else:
        raise ValueError(f"not a duration: {value!r} (write e.g. '30s', '5m', '250ms')")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_size(value: Any) -> int:
    """``"25MB"``, ``"512KiB"`` or a number of bytes, as bytes."""
    if isinstance(value, bool):
        raise ValueError("a size such as '25MB'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])
    else:
        raise ValueError(f"not a size: {value!r} (write e.g. '25MB', '512KiB')")
    if size <= 0:
        raise ValueError("a size must be positive")
    return size


class Secret:
    """A secret value: never printed, logged or compared by accident.

    Written as a literal, as ``"env:NAME"`` (read from the environment) or
    ``"file:/path"`` (read from a file, trailing newline stripped).
    """

    MASK = "********"
    __slots__ = ("_source", "_value")

    def __init__(self, value: str, source: str = "literal") -> None:
        self._value = value
        self._source = source

    @classmethod
    def parse(cls, value: Any, environ: Mapping[str, str] | None = None) -> Secret:
        """Parse as written; ``env:`` names are read from ``environ`` (default: the process's)."""
        environ = os.environ if environ is None else environ
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise ValueError("a secret is a string: a literal, 'env:NAME' or 'file:/path'")
        if value.startswith("env:"):
            name = value[4:]
            if name not in environ:
                raise ValueError(f"missing secret: environment variable {name} is not set")
            return cls(environ[name], f"env:{name}")
        if value.startswith("file:"):
            path = Path(value[5:])
            try:
                return cls(path.read_text(encoding="utf-8").rstrip("\r\n"), f"file:{path}")
            except OSError as err:
                raise ValueError(f"missing secret: cannot read {path}: {err.strerror}") from err
        if not value:
            raise ValueError("missing secret: the value is empty")
        return cls(value)

    def reveal(self) -> str:
        return self._value

    @property
    def source(self) -> str:
        return self._source

    def __repr__(self) -> str:
        return f"Secret({self.MASK})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _parse_secret(value: Any, info: ValidationInfo) -> Secret:
    context = info.context or {}
    return Secret.parse(value, context.get("environ"))


def _mask(secret: Secret) -> str:
    return Secret.MASK if secret.source == "literal" else f"{Secret.MASK} ({secret.source})"


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
SecretStr = Annotated[
    Secret, BeforeValidator(_parse_secret), PlainSerializer(_mask, return_type=str)
]
