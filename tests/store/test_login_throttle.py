"""Sign-in throttling in the store: waits that double, a window that forgets, keys apart."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from store import login_throttle
from store.models import LoginFailure

T0 = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)
WANG = ("user:wang", "ip:10.1.2.3")


async def test_waits_double_and_the_window_forgets(session: AsyncSession) -> None:
    for n in range(4):
        await login_throttle.failed(session, WANG, T0 + dt.timedelta(seconds=n))
    assert await login_throttle.wait_s(session, WANG, T0 + dt.timedelta(seconds=4)) == 0
    await login_throttle.failed(session, WANG, T0 + dt.timedelta(seconds=4))
    # The fifth failure: 30 s from it.
    assert await login_throttle.wait_s(session, WANG, T0 + dt.timedelta(seconds=14)) == 20
    await login_throttle.failed(session, WANG, T0 + dt.timedelta(seconds=40))
    assert await login_throttle.wait_s(session, WANG, T0 + dt.timedelta(seconds=40)) == 60
    # Another user from another address is not held; the same address is.
    assert await login_throttle.wait_s(session, ("user:li", "ip:10.9.9.9"), T0) == 0
    assert await login_throttle.wait_s(session, ("user:li", "ip:10.1.2.3"),
                                       T0 + dt.timedelta(seconds=40)) == 60  # fmt: skip
    # Fifteen minutes on, the failures are history, and are cleared at the next one,
    # whoever's it is.
    later = T0 + dt.timedelta(minutes=16)
    assert await login_throttle.wait_s(session, WANG, later) == 0
    await login_throttle.failed(session, ("user:li",), later)
    await login_throttle.failed(session, WANG, later)
    kept = await session.scalar(select(func.count()).select_from(LoginFailure))
    assert kept == 3  # one per key: the older ones were let go
    # Only digests are kept: no user name or address in the table.
    digests = set(await session.scalars(select(LoginFailure.key_sha256)))
    assert all(len(d) == 64 and "wang" not in d for d in digests)
    await login_throttle.succeeded(session, WANG)
    assert await session.scalar(select(func.count()).select_from(LoginFailure)) == 1  # li's


async def test_the_longest_wait_is_fifteen_minutes(session: AsyncSession) -> None:
    for n in range(30):
        await login_throttle.failed(session, ("user:x",), T0 + dt.timedelta(seconds=n))
    assert await login_throttle.wait_s(session, ("user:x",), T0 + dt.timedelta(seconds=29)) == 900
