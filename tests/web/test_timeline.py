"""A record's timeline: emails in a sandbox with nothing that runs, calls, scope on bodies."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from sqlalchemy import select

from store.activities import log_activity
from store.db import Store
from store.models import (
    Account,
    ActivityKind,
    ActivityStatus,
    Attachment,
    Blob,
    Call,
    CallDisposition,
    Contact,
    Direction,
    Email,
    PipelineStage,
)
from store.pipeline import advance_stage
from tests.web.browsing import make_user, post_form, sign_in
from web.app import create_app


@pytest.fixture(autouse=True)
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its cheapest: these tests are about records, not the strength of a hash."""
    monkeypatch.setattr(
        "store.users._hasher", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    )


EVIL = """<p>您好，<b>报价</b>见附件。</p><script>alert(document.cookie)</script>
<img src="https://tracker.example/p.gif" onerror="steal()"><a href="javascript:steal()">x</a>
<iframe src="https://evil.example"></iframe><form action="https://evil.example"><input></form>"""


async def _account_with_history(store: Store, owner: int) -> tuple[int, int]:
    async with store.session() as session, session.begin():
        account = Account(name="金龙贸易", owner_id=owner)
        session.add(account)
        await session.flush()
        blob = await store.blobs.write(b"%PDF-1.7 quote")
        email = Email(direction=Direction.INBOUND, subject="询价：不锈钢管",
                      from_address="wang.fang@jinlong.cn", from_name="王芳",
                      to=["sales@rapport.test"], html_body=EVIL, text_body="报价见附件")  # fmt: skip
        session.add(email)
        await session.flush()
        session.add(Blob(sha256=blob, size=14))
        await session.flush()
        session.add(Attachment(email_id=email.id, filename="报价单.pdf", size=14, blob_sha256=blob))
        await log_activity(session, kind=ActivityKind.EMAIL, subject=email.subject,
                           records=[("account", account.id)], email_id=email.id,
                           occurred_at=dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC))  # fmt: skip
        call = Call(pbx="pbx1", uniqueid="1700000000.1", direction=Direction.INBOUND,
                    external_number_raw="13800138000", disposition=CallDisposition.ANSWERED,
                    started_at=dt.datetime(2026, 11, 21, 3, 0, tzinfo=dt.UTC), talk_seconds=95.0,
                    agent_id=owner, recording="2026/11/21/in-1700000000.1.wav")  # fmt: skip
        session.add(call)
        await session.flush()
        await log_activity(session, kind=ActivityKind.CALL, subject="来电 13800138000",
                           records=[("account", account.id)], call_id=call.id,
                           occurred_at=call.started_at)  # fmt: skip
        return account.id, email.id


async def test_an_accounts_timeline_shows_its_mail_in_a_sandbox_and_its_calls(store: Store) -> None:
    owner = await make_user(store, "wang", "agent", display_name="王伟")
    await make_user(store, "zhao", "agent")
    account_id, email_id = await _account_with_history(store, owner)
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "wang")
        page = await (await client.get(f"/accounts/{account_id}")).text()
        assert page.index("来电 13800138000") < page.index("询价：不锈钢管")  # newest first
        assert f'<iframe sandbox src="/emails/{email_id}/body"' in page
        assert "alert(document.cookie)" not in page
        assert "通话" not in page and "95 s talk" in page and 'data-dial="13800138000"' in page
        assert '<audio controls preload="none" src="/recordings/' in page  # a signed link
        body = await client.get(f"/emails/{email_id}/body")
        assert body.headers["Content-Security-Policy"].startswith("sandbox")
        html = await body.text()
        assert "<b>报价</b>" in html
        for gone in ("<script", "onerror", "javascript:", "<iframe", "<form"):
            assert gone not in html
        attachment = await client.get(f"/emails/{email_id}/attachments/0")
        assert await attachment.read() == b"%PDF-1.7 quote"
        assert "attachment;" in attachment.headers["Content-Disposition"]
        only_calls = await (await client.get(f"/accounts/{account_id}?kind=call")).text()
        assert "来电 13800138000" in only_calls and "询价：不锈钢管" not in only_calls
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "zhao")  # another agent: not their account
        assert (await client.get(f"/emails/{email_id}/body")).status == 404
        assert (await client.get(f"/emails/{email_id}/attachments/0")).status == 404
        assert (await client.get(f"/accounts/{account_id}")).status == 404


async def test_an_opportunitys_timeline_shows_its_stage_changes_among_its_tasks(
    store: Store,
) -> None:
    owner = await make_user(store, "wang", "agent", display_name="王伟")
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        made = await post_form(client, "/opportunities/new", csrf,
                               {"name": "年度采购", "currency": "CNY"}, allow_redirects=False)  # fmt: skip
        url = made.headers["Location"]
        deal_id = int(url.rsplit("/", 1)[1])
        async with store.session() as session, session.begin():
            qualification = await session.scalar(
                select(PipelineStage.id).where(PipelineStage.name == "Qualification")
            )
            assert qualification is not None
            await advance_stage(session, deal_id, qualification, user_id=owner)
            await log_activity(session, kind=ActivityKind.TASK, subject="寄样品",
                               records=[("opportunity", deal_id)], owner_id=owner,
                               status=ActivityStatus.PLANNED,
                               due_at=dt.datetime(2026, 1, 5, 2, 0, tzinfo=dt.UTC),
                               occurred_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))  # fmt: skip
        page = await (await client.get(url)).text()
        moved = page.index("Prospecting → Qualification")
        assert moved < page.index("寄样品")  # the task is dated long before: newest first
        assert "overdue" in page and "planned" in page
        only_stages = await (await client.get(f"{url}?kind=stage")).text()
        assert "Prospecting → Qualification" in only_stages and "寄样品" not in only_stages
        only_tasks = await (await client.get(f"{url}?kind=task")).text()
        assert "寄样品" in only_tasks and "→ Qualification" not in only_tasks


async def test_attachment_links_count_the_emails_inline_images_too(store: Store) -> None:
    owner = await make_user(store, "wang", "agent")
    async with store.session() as session, session.begin():
        contact = Contact(last_name="李", owner_id=owner)
        email = Email(direction=Direction.INBOUND, subject="图片和合同", html_body="<p>见附件</p>")
        session.add_all([contact, email])
        await session.flush()
        for name, data, inline in (("logo.png", b"\x89PNG", True), ("合同.pdf", b"%PDF", False)):
            sha = await store.blobs.write(data)
            session.add(Blob(sha256=sha, size=len(data)))
            await session.flush()
            session.add(Attachment(email_id=email.id, filename=name, size=len(data),
                                   blob_sha256=sha, is_inline=inline))  # fmt: skip
        await log_activity(session, kind=ActivityKind.EMAIL, subject=email.subject,
                           records=[("contact", contact.id)], email_id=email.id)  # fmt: skip
        contact_id, email_id = contact.id, email.id
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "wang")
        page = await (await client.get(f"/contacts/{contact_id}")).text()
        assert "logo.png" not in page
        link = re.search(rf'href="(/emails/{email_id}/attachments/\d+)">合同.pdf<', page)
        assert link is not None
        assert await (await client.get(link.group(1))).read() == b"%PDF"
