"""A record's timeline: emails in a sandbox with nothing that runs, calls, scope on bodies."""

from __future__ import annotations

import datetime as dt

from aiohttp.test_utils import TestClient, TestServer

from store.activities import log_activity
from store.db import Store
from store.models import (
    Account,
    ActivityKind,
    Attachment,
    Call,
    CallDisposition,
    Direction,
    Email,
)
from tests.web.browsing import make_user, sign_in
from web.app import create_app

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
        from store.models import Blob

        session.add(Blob(sha256=blob, size=14))
        await session.flush()
        session.add(Attachment(email_id=email.id, filename="报价单.pdf", size=14, blob_sha256=blob))
        await log_activity(session, kind=ActivityKind.EMAIL, subject=email.subject,
                           records=[("account", account.id)], email_id=email.id,
                           occurred_at=dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC))  # fmt: skip
        call = Call(pbx="pbx1", uniqueid="1700000000.1", direction=Direction.INBOUND,
                    external_number_raw="13800138000", disposition=CallDisposition.ANSWERED,
                    started_at=dt.datetime(2026, 11, 21, 3, 0, tzinfo=dt.UTC), talk_seconds=95.0,
                    agent_id=owner)  # fmt: skip
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
