"""Sign-in throttling kept in the store: failed sign-ins per key, and how long the next try waits.

A key is a user name or an address; only its SHA-256 is kept.  After
``AFTER`` failures within ``WINDOW`` the next try waits 30 s, doubling with
each further failure up to ``MOST``.  Kept in the store rather than in one
process, so several daemons behind one name throttle as one, and a restart
forgets nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.base import utcnow
from store.models import LoginFailure

AFTER = 5
WINDOW = dt.timedelta(minutes=15)
FIRST_WAIT_S = 30.0
MOST_S = 15 * 60.0


def _digests(keys: Sequence[str]) -> list[str]:
    return [hashlib.sha256(k.encode()).hexdigest() for k in keys]


async def wait_s(
    session: AsyncSession, keys: Sequence[str], now: dt.datetime | None = None
) -> float:
    """Seconds the next sign-in with any of ``keys`` must wait (0: it may go ahead)."""
    now = now or utcnow()
    rows = await session.execute(
        select(LoginFailure.key_sha256, LoginFailure.failed_at)
        .where(LoginFailure.key_sha256.in_(_digests(keys)), LoginFailure.failed_at > now - WINDOW)
        .order_by(LoginFailure.failed_at)
    )
    by_key: dict[str, list[dt.datetime]] = {}
    for key, at in rows:
        by_key.setdefault(key, []).append(at)
    longest = 0.0
    for times in by_key.values():
        over = len(times) - AFTER + 1
        if over > 0:
            delay = min(FIRST_WAIT_S * 2 ** (over - 1), MOST_S)
            longest = max(longest, (times[-1] - now).total_seconds() + delay)
    return max(longest, 0.0)


async def failed(
    session: AsyncSession, keys: Sequence[str], now: dt.datetime | None = None
) -> None:
    """Count a failure against every key; anyone's failures older than the window are let go
    (a guesser trying many names leaves no more rows than fit in the window)."""
    now = now or utcnow()
    await session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= now - WINDOW))
    session.add_all(LoginFailure(key_sha256=d, failed_at=now) for d in _digests(keys))
    await session.flush()


async def succeeded(session: AsyncSession, keys: Sequence[str]) -> None:
    """A sign-in went through: its keys start afresh."""
    await session.execute(delete(LoginFailure).where(LoginFailure.key_sha256.in_(_digests(keys))))
