"""The browser suite's world: ``rapport run`` on a seeded store, a PBX it follows, Chromium.

One daemon (``python -m daemon run``, as users start it, on free loopback
ports over a SQLite file), one AMI server it is connected to and one headless
Chromium (Debian's, driven by Playwright) serve every test in this folder:
they share one event loop and are started once.  Each test opens its own
browser contexts, so cookies never cross tests, and acts as its own users where
it changes a user (the Chinese test switches ``li``, nobody else).

The store is seeded before the daemon starts, because the daemon reads who
sits at which extension when its phone service starts.  Tests then act through
the pages, make calls ring by sending recorded AMI events into the socket the
daemon reads, and check what the pages wrote by reading the SQLite file (WAL:
reads never block the daemon).  Screenshots go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright
from sqlalchemy import select

from store.activities import log_activity
from store.base import utcnow
from store.db import open_store
from store.identity import index_record
from store.migrate import upgrade_to_head
from store.models import (
    Account,
    AccountContact,
    ActivityKind,
    ActivityStatus,
    Call,
    CallDisposition,
    Contact,
    Direction,
    Email,
    Lead,
    MailTemplate,
    Opportunity,
    PipelineStage,
    RecordScope,
    Role,
)
from store.phones import PhoneRegion
from store.pipeline import enter_stage
from store.recurrence import Rule, start_series
from store.reminders import set_reminder
from store.users import create_user
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, missing_peer
from tests.peers.ami import FIXTURES, AmiTraceServer, load_trace
from tests.peers.local import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
PASSWORD = "browser password 1"
# Who the suite signs in as: (role, display name, extension).
USERS = {
    "admin": ("admin", "管理员", None),
    "wang": ("manager", "王伟", "1001"),
    "li": ("agent", "李娜", None),
    "zhao": ("reader", "赵敏", None),  # may read contacts, may not place calls
    "chen": ("admin", "陈静", None),  # an administrator who works in Chinese
}
CHINESE = {"chen"}
WIDTHS = {"desktop": 1280, "phone": 390}
DAEMON_START_S = 60.0
# The lab PBX the AMI fixtures were recorded on: China, area code 028.
REGION = PhoneRegion(country="CN", area_code="028")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here runs in the loop its shared daemon, AMI server and browser live in,
    and under pytest-xdist on one worker (``--dist loadgroup``), so the world starts once."""
    shared = pytest.mark.asyncio(loop_scope="package")
    one_worker = pytest.mark.xdist_group("browser")
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(one_worker)
            if pytest_asyncio.is_async_test(item):
                item.add_marker(shared, append=False)


@dataclass
class World:
    """What a browser test works with: the site's address, its store, the PBX, the browser."""

    base: str
    store_url: str
    blobs: Path
    ami: AmiTraceServer
    browser: Browser
    ids: dict[str, int]
    logs: Path
    _signed_in: dict[str, Any] = field(default_factory=dict)

    async def page(self, user: str | None = "wang", width: int = 1280) -> Page:
        """A page in a fresh context at ``width`` px, signed in as ``user`` (None: not)."""
        state = None
        if user is not None:
            if user not in self._signed_in:
                self._signed_in[user] = await self._sign_in(user)
            state = self._signed_in[user]
        context = await self.browser.new_context(
            viewport={"width": width, "height": 900}, locale="en-US", storage_state=state
        )
        context.set_default_timeout(10_000)
        return await context.new_page()

    async def _sign_in(self, user: str) -> Any:
        """Through the login form once per user; later pages reuse its cookies."""
        page = await self.page(None)
        await sign_in(page, self.base, user)
        state = await page.context.storage_state()
        await page.context.close()
        return state

    async def ring(self, scenario: str, since_s: float = 0.0, until_s: float = 1e9) -> None:
        """The PBX sends the recorded events of ``scenario`` between these times, at once."""
        raw = b"".join(m.raw for m in load_trace(scenario).events if since_s <= m.t < until_s)
        await self.ami.inject(raw)

    def daemon_log(self) -> str:
        return self.logs.read_text("utf-8", errors="replace")[-4000:]


async def sign_in(page: Page, base: str, user: str, password: str = PASSWORD) -> None:
    await page.goto(f"{base}/login")
    await page.get_by_label("User name").fill(user)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/")


async def screenshot(page: Page, name: str) -> None:
    """Leave a picture of the page for people to look at (not compared with anything)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def _seed(url: str, blobs: Path) -> dict[str, int]:
    """Users, a caller the PBX will ring about, a deal in the pipeline, an account's history."""
    await upgrade_to_head(url)
    ids: dict[str, int] = {}
    now = utcnow()
    async with open_store(url, blobs) as store, store.session() as session, session.begin():
        session.add(Role(name="reader", scope=RecordScope.ALL, can_dial=False,
                         permissions={"contacts": ["view"], "accounts": ["view"]}))  # fmt: skip
        await session.flush()
        for name, (role, display, _ext) in USERS.items():
            user = await create_user(session, name, PASSWORD, role=role, display_name=display,
                                     locale="zh_CN" if name in CHINESE else "en")  # fmt: skip
            ids[name] = user.id
        wang = ids["wang"]
        stages = {s.name: s for s in await session.scalars(select(PipelineStage))}
        ids.update({f"stage:{name}": stage.id for name, stage in stages.items()})

        # The caller of the inbound_answered trace (+86 138 1234 5678), with an account,
        # an open deal and some history: the screen-pop's card.
        account = Account(name="金龙贸易", owner_id=wang, phone="02887654000")
        caller = Contact(first_name="伟", last_name="张", mobile="13812345678", owner_id=wang,
                         email="zhang.wei@jinlong.cn")  # fmt: skip
        session.add_all([account, caller])
        await session.flush()
        session.add(AccountContact(account_id=account.id, contact_id=caller.id, is_primary=True))
        await index_record(session, caller, REGION)
        await index_record(session, account, REGION)
        deal = Opportunity(name="年度采购", account_id=account.id, contact_id=caller.id,
                           amount=None, stage_id=stages["Needs analysis"].id, probability=40,
                           owner_id=wang)  # fmt: skip
        session.add(deal)
        await session.flush()
        enter_stage(session, deal, stages["Needs analysis"], user_id=wang, now=now)
        # A deal of its own for the board test to drag on.
        board_deal = Opportunity(name="二期扩建", account_id=account.id, stage_id=stages["Needs analysis"].id,
                                 probability=40, owner_id=wang)  # fmt: skip
        session.add(board_deal)
        await session.flush()
        enter_stage(session, board_deal, stages["Needs analysis"], user_id=wang, now=now)

        lead = Lead(last_name="刘", first_name="洋", company="星辰文化", phone="02866554433",
                    email="liu.yang@xingchen.cn", owner_id=wang)  # fmt: skip
        session.add(lead)
        # A template the compose page fills a mail to the lead from, in both languages.
        session.add_all([
            MailTemplate(name="greeting", language="zh-CN",
                         subject="{{ lead.last_name }}{{ lead.first_name }}，您好",
                         text="{{ lead.company }}的朋友们好！"),
            MailTemplate(name="greeting", language="en",
                         subject="Hello {{ lead.first_name }} {{ lead.last_name }}",
                         text="Greetings to {{ lead.company }}!"),
        ])  # fmt: skip
        # The account's history: a mail (with a script that must not run) and a call.
        email = Email(direction=Direction.INBOUND, subject="询价：不锈钢管",
                      from_address="zhang.wei@jinlong.cn",
                      html_body="<p>请报价 <b>304</b> 不锈钢管</p>"
                                "<script>document.title='owned'</script>")  # fmt: skip
        call = Call(pbx="lab", uniqueid="1700000000.1", direction=Direction.INBOUND,
                    external_number_raw="13812345678", disposition=CallDisposition.ANSWERED,
                    started_at=now, talk_seconds=61.0)  # fmt: skip
        session.add_all([email, call])
        await session.flush()
        await log_activity(session, kind=ActivityKind.EMAIL, subject=email.subject,
                           records=[account, caller], email_id=email.id)  # fmt: skip
        await log_activity(session, kind=ActivityKind.CALL, subject="来电 13812345678",
                           records=[account, caller], call_id=call.id)  # fmt: skip
        # A week of appointments for the calendar: a weekly meeting, a task, a visit.
        weekly = await log_activity(
            session, kind=ActivityKind.MEETING, subject="周例会：华东区销售", records=[account],
            owner_id=wang, occurred_at=now + dt.timedelta(hours=2),
            ends_at=now + dt.timedelta(hours=3), status=ActivityStatus.PLANNED,
            location="上海办公室 3 楼",
        )  # fmt: skip
        start_series(weekly, Rule("weekly", count=8))
        set_reminder(weekly, 15)
        await log_activity(session, kind=ActivityKind.TASK, subject="发不锈钢管报价单",
                           records=[caller], owner_id=wang, due_at=now + dt.timedelta(days=1),
                           status=ActivityStatus.PLANNED, priority="high")  # fmt: skip
        await log_activity(session, kind=ActivityKind.VISIT, subject="拜访星辰文化",
                           records=[], owner_id=wang, occurred_at=now + dt.timedelta(days=2),
                           status=ActivityStatus.PLANNED)  # fmt: skip
        # A contact no call is about, for the activity test to plan on.
        planned_with = Contact(first_name="丽", last_name="孙", owner_id=wang)
        session.add(planned_with)
        await session.flush()
        ids.update(
            planned_with=planned_with.id,
            meeting=weekly.id,
            account=account.id,
            contact=caller.id,
            deal=deal.id,
            board_deal=board_deal.id,
            lead=lead.id,
        )
    return ids


def _config(work: Path, url: str, web_port: int, ami_port: int) -> Path:
    extensions = ", ".join(f'"{ext}" = "{name}"' for name, (_, _, ext) in USERS.items() if ext)
    path = work / "rapport.toml"
    path.write_text(
        f"""
[store]
url = "{url}"
blob_dir = "{work / "blobs"}"
[daemon]
var_dir = "{work / "var"}"
shutdown_timeout = "2s"
[web]
port = {web_port}
[tracking]
port = {free_port()}
[smtp_ingress]
enabled = false
[smtp_relay]
# An outbox to queue into (the compose page); with no host nothing is sent.
from_address = "sales@rapport.test"
[log]
level = "INFO"
[[asterisk.pbx]]
name = "lab"
host = "127.0.0.1"
port = {ami_port}
security = "plain"
username = "crm"
secret = "crmsecret"
region = "CN"
area_code = "028"
dids = ["02885550100", "02885550200"]
extensions = {{ {extensions} }}
""",
        encoding="utf-8",
    )
    return path


def _daemon_env() -> dict[str, str]:
    """This environment without RAPPORT_* overrides: the daemon reads only the test's config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")}
    return {**env, "PYTHONUNBUFFERED": "1"}


async def _wait_until_serving(base: str, ami: AmiTraceServer, daemon: Any, logs: Path) -> None:
    """Until the UI answers and the phone service has taken the PBX's channel list."""
    deadline = asyncio.get_running_loop().time() + DAEMON_START_S
    async with aiohttp.ClientSession() as http:
        while True:
            if daemon.returncode is not None:
                pytest.fail(f"rapport run exited with {daemon.returncode}:\n{logs.read_text()}")
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"rapport run did not start in {DAEMON_START_S} s:\n{logs.read_text()}")
            synced = any(
                dict((k.lower(), v.lower()) for k, v in action).get("action") == "coreshowchannels"
                for action in ami.actions
            )
            try:
                async with http.get(f"{base}/healthz") as response:
                    if response.status < 500 and synced:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    if not Path(CHROMIUM).exists():
        missing_peer("Chromium is not installed (Debian package chromium)")
    if not FIXTURES.is_dir():
        missing_peer(f"the AMI fixtures are not at {FIXTURES}")
    work = tmp_path_factory.mktemp("browser")
    url = f"sqlite+aiosqlite:///{work / 'rapport.db'}"
    ids = await _seed(url, work / "blobs")
    web_port = free_port()
    base = f"http://127.0.0.1:{web_port}"
    logs = work / "daemon.log"
    async with AmiTraceServer() as ami, async_playwright() as pw:
        config = _config(work, url, web_port, ami.port)
        with logs.open("wb") as log_file:
            daemon = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "daemon", "--config", str(config), "run",
                cwd=ROOT, stdout=log_file, stderr=log_file,
                env=_daemon_env(),
            )  # fmt: skip
        try:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            await _wait_until_serving(base, ami, daemon, logs)
            try:
                yield World(base, url, work / "blobs", ami, browser, ids, logs)
            finally:
                await browser.close()
        finally:
            if daemon.returncode is None:
                daemon.terminate()
            try:
                await asyncio.wait_for(daemon.wait(), 10)
            except TimeoutError:
                daemon.kill()
                await daemon.wait()
