"""Per-task context every part shares: the correlation id of the work in hand."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

# A message id, an AMI Linkedid or an HTTP request id; "-" outside any unit of work.
correlation_id: ContextVar[str] = ContextVar("correlation_id", default="-")


def new_correlation_id() -> str:
    return uuid.uuid4().hex[:12]


@contextlib.contextmanager
def correlated(cid: str | None = None) -> Iterator[str]:
    """Run the block under ``cid`` (a fresh id if None); logs and audit entries carry it."""
    value = cid or new_correlation_id()
    token = correlation_id.set(value)
    try:
        yield value
    finally:
        correlation_id.reset(token)
