"""Exceptions that say what happens next, shared by every part of Rapport.

Library exceptions are translated into these at the package edge with
``raise ... from err`` so the supervisor and the pipelines can act on them
without knowing which library raised them.
"""

from __future__ import annotations


class RapportError(Exception):
    """Base of every error Rapport raises on purpose."""


class TransientError(RapportError):
    """Something outside us failed for now: retry with backoff."""


class PermanentError(RapportError):
    """This item can never succeed as it is: quarantine it and go on."""


class AuthError(RapportError):
    """A peer refused our credentials: stop and tell a human, never loop."""


class ConfigError(RapportError):
    """The configuration is wrong: refuse to start, listing every problem."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class ValidationError(RapportError):
    """A user-supplied value is wrong; ``errors`` maps a field to its message."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.errors.items()))


class NotFound(RapportError):
    """The record asked for does not exist (or is in the recycle bin)."""
