"""Record pages with 100,000 contacts in SQLite: how fast a list or detail page answers.

Builds a SQLite store with 100,000 contacts (with their email and phone
identities) and 5,000 accounts, gives one contact 40 timeline entries, runs
the web application on loopback, signs in as an admin (every record in scope:
the largest lists) and as an agent who owns 1,000 of the contacts, and times
GET requests end to end over HTTP: the first page of the contacts list, a
later keyset page, the list sorted by last change, searches by name prefix
(one that matches a twentieth of the table too), email and phone, and a
contact's detail page with its timeline, the new deal form (its pickers
list accounts and contacts), and the agent's activities and calendar (3,000
activities over a year and three repeating meetings).  Prints p50 and p99 per page against the issue's
goal: under 150 ms.
Run: .venv/bin/python bench/web.py [--contacts 100000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import ClientSession, CookieJar, web  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from store.activities import ActivityDraft, log_activities, log_activity  # noqa: E402
from store.base import utcnow  # noqa: E402
from store.bulk import lock_rows  # noqa: E402
from store.db import open_store  # noqa: E402
from store.identity import new_identities  # noqa: E402
from store.migrate import upgrade_to_head  # noqa: E402
from store.models import (  # noqa: E402
    Account,
    ActivityKind,
    ActivityStatus,
    Contact,
    EmailIdentity,
    PhoneIdentity,
    User,
)
from store.recurrence import Rule, start_series  # noqa: E402
from store.users import create_user  # noqa: E402
from tests.peers.local import free_port  # noqa: E402
from web.app import create_app  # noqa: E402

GOAL_MS = 150.0
ACTIVITIES = 3000
PASSWORD = "bench password 123"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"


async def build(url: str, blobs: Path, contacts: int) -> tuple[int, int]:
    """The store; returns the ids of the contact with a long timeline and of the agent."""
    await upgrade_to_head(url)
    async with open_store(url, blobs) as store:
        async with store.session() as session, session.begin():
            await create_user(session, "boss", PASSWORD, role="admin")
            agent = await create_user(session, "agent", PASSWORD, role="agent")
            await session.flush()
            agent_id = agent.id
            await session.execute(insert(Account), [
                {"name": f"{SURNAMES[n % 20]}氏贸易{n:05d}", "owner_id": agent_id} for n in range(5000)
            ])  # fmt: skip
        batch = 20_000
        for start in range(0, contacts, batch):
            async with store.session() as session, session.begin():
                rows = []
                for n in range(start, min(start + batch, contacts)):
                    rows.append({
                        "last_name": SURNAMES[n % 20], "first_name": f"{n:06d}",
                        "email": f"c{n}@example.cn", "phone": f"138{n:08d}",
                        "owner_id": agent_id if n % 100 == 0 else None,
                        "created_at": utcnow(), "updated_at": utcnow(),
                    })  # fmt: skip
                await session.execute(insert(Contact), rows)
                made = (await session.scalars(
                    select(Contact).where(Contact.id > start).order_by(Contact.id).limit(batch)
                )).all()  # fmt: skip
                session.add_all(new_identities(made))
        async with store.session() as session, session.begin():
            target = await session.scalar(
                select(Contact.id).where(Contact.email == "c4200@example.cn")
            )
            assert target is not None
            for n in range(40):
                await log_activity(session, kind=ActivityKind.NOTE if n % 2 else ActivityKind.CALL,
                                   subject=f"第 {n} 次沟通", records=[("contact", target)],
                                   body="客户询问报价与交期。" * 5, owner_id=agent_id)  # fmt: skip
        # The agent's year: 3,000 tasks, meetings, visits and calls half a year either side
        # of now, on their contacts, and three repeating meetings begun two months ago.
        now = utcnow()
        drafts = []
        for n in range(ACTIVITIES):
            at = now + dt.timedelta(hours=(n - ACTIVITIES // 2) * 2.9)
            kind = (ActivityKind.TASK, ActivityKind.MEETING, ActivityKind.VISIT,
                    ActivityKind.CALL)[n % 4]  # fmt: skip
            drafts.append(ActivityDraft(
                kind=kind, subject=f"计划 {n}", records=[("contact", (n * 100) % contacts + 1)],
                occurred_at=at, owner_id=agent_id,
                fields={"status": ActivityStatus.PLANNED if at > now else ActivityStatus.DONE,
                        "due_at": at if kind == ActivityKind.TASK else None},
            ))  # fmt: skip
        async with store.session() as session, session.begin():
            await lock_rows(session, User, [agent_id])  # allocating ids takes the write lock
            await log_activities(session, drafts)
            for freq in ("daily", "weekly", "monthly"):
                series = await log_activity(
                    session, kind=ActivityKind.MEETING, subject=f"例会 {freq}", records=[],
                    owner_id=agent_id, occurred_at=now - dt.timedelta(days=60),
                    status=ActivityStatus.PLANNED,
                )  # fmt: skip
                start_series(series, Rule(freq))
        async with store.session() as session:
            counted = await session.scalar(
                select(EmailIdentity.id).order_by(EmailIdentity.id.desc())
            )
            assert counted and await session.scalar(select(PhoneIdentity.id).limit(1))
            assert await session.scalar(select(User.id).where(User.username == "boss"))
        return int(target), agent_id


async def sign_in(client: ClientSession, base: str, username: str) -> None:
    page = await (await client.get(f"{base}/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token
    done = await client.post(f"{base}/login", data={"username": username, "password": PASSWORD,
                                                    "_csrf": token.group(1)})  # fmt: skip
    assert done.status == 200, done.status


async def timed(client: ClientSession, url: str, repeat: int, must: str) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        async with client.get(url) as answer:
            body = await answer.text()
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status == 200 and must in body, (url, answer.status)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rapport-web-"))
    url = f"sqlite+aiosqlite:///{work}/web.db"
    began = time.perf_counter()
    target, agent_id = await build(url, work / "blobs", args.contacts)
    print(f"built {args.contacts:,} contacts in {time.perf_counter() - began:.0f} s")
    async with open_store(url, work / "blobs") as store:
        runner = web.AppRunner(create_app(store), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base = f"http://127.0.0.1:{port}"
        rows: list[tuple[str, str, list[float]]] = []
        try:
            for who in ("boss", "agent"):
                async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as client:
                    await sign_in(client, base, who)
                    first = await (await client.get(f"{base}/contacts?sort=last_name")).text()
                    later = re.search(r'href="(\?[^"]*after=[^"]*)" rel="next"', first)
                    assert later
                    pages = [
                        ("contacts list, first page", "/contacts", "</table>"),
                        ("contacts list, next keyset page",
                         "/contacts" + later.group(1).replace("&amp;", "&"), "</table>"),
                        ("search by name prefix", "/contacts?q=%E7%8E%8B0042", "</table>"),
                        ("search by a common surname (5,000 match)", "/contacts?q=%E7%8E%8B",
                         "</table>"),
                        ("search by email", "/contacts?q=c4200%40example.cn", "c4200@example.cn"),
                        ("search by phone", "/contacts?q=%2B86%20138%200000%204200", "c4200@example.cn"),
                        ("contact detail, 40 timeline entries", f"/contacts/{target}", "第 39 次沟通"),
                        ("contacts by last change", "/contacts?sort=-updated_at", "</table>"),
                        ("accounts list, first page", "/accounts", "</table>"),
                        ("new deal form (account and contact pickers)", "/opportunities/new",
                         "</form>"),
                        ("the agent's planned activities", f"/activities?owner={agent_id}",
                         "</table>"),
                        ("the agent's calendar, month", f"/calendar?user={agent_id}",
                         "calendar-grid"),
                        ("the agent's calendar, week", f"/calendar?view=week&user={agent_id}",
                         "calendar-grid"),
                    ]  # fmt: skip
                    for label, path, must in pages:
                        await timed(client, base + path, 3, must)  # warm
                        rows.append(
                            (who, label, await timed(client, base + path, args.repeat, must))
                        )
        finally:
            await runner.cleanup()

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    print(f"\n{args.contacts:,} contacts in SQLite, {args.repeat} requests each over loopback HTTP; "
          f"goal: under {GOAL_MS:.0f} ms")  # fmt: skip
    print(f"{'signed in as':<13} {'page':<44} {'p50 ms':>8} {'p99 ms':>8}  goal")
    for who, label, times in rows:
        verdict = "met" if pct(times, 0.99) < GOAL_MS else "NOT MET"
        print(f"{who:<13} {label:<44} {statistics.median(times):>8.1f} {pct(times, 0.99):>8.1f}  "
              f"{verdict}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
