"""The tracking listener over real HTTP: pixel, clicks, classes, forgeries, unsubscribe, shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select
from yarl import URL

from store.base import utcnow
from store.db import Store
from store.models import Direction, Email, MailOptOut, SentRecipient, TrackingHit
from tracking.hits import HitWriter
from tracking.listener import PIXEL, WRITER_KEY, create_app
from tracking.sent import record_sent
from tracking.tokens import PREVIEW, TokenSigner

OLD_KEY = b"an-old-key-still-verifying"
KEY = b"the-current-signing-key-0123"
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
LINKS = ["https://example.cn/报价?id=7", "https://example.cn/contract.pdf"]


@pytest.fixture
async def sent(store: Store) -> dict[str, int]:
    async with store.session() as session, session.begin():
        email = Email(direction=Direction.OUTBOUND, subject="报价", message_id="q1@rapport.test",
                      sent_at=utcnow(), from_address="sales@rapport.test")  # fmt: skip
        session.add(email)
        await session.flush()
        ids = await record_sent(
            session, email.id, [("to", "Wang.Fang@JinLong.cn"), ("cc", "li@jinlong.cn")], LINKS
        )
    return ids


@pytest.fixture
async def client(store: Store) -> AsyncIterator[TestClient]:
    writer = HitWriter(store, flush_every_s=0.05)
    app = create_app(store, TokenSigner([KEY, OLD_KEY]), writer)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def counts(store: Store, recipient_id: int) -> tuple[int, int, int, bool]:
    async with store.session() as session:
        row = await session.get(SentRecipient, recipient_id)
        assert row is not None
        return row.human_opens, row.machine_opens, row.clicks, row.first_human_open_at is not None


async def flush(client: TestClient) -> None:
    assert client.app is not None
    await client.app[WRITER_KEY].flush()


async def test_pixel_counts_people_and_machines_apart(
    store: Store, sent: dict[str, int], client: TestClient
) -> None:
    rid = sent["wang.fang@jinlong.cn"]
    token = TokenSigner([KEY]).sign(rid)
    response = await client.get(f"/o/{token}.gif", headers={"User-Agent": BROWSER})
    assert response.status == 200 and response.content_type == "image/gif"
    body = await response.read()
    assert body == PIXEL and len(body) == 43
    assert "no-store" in response.headers["Cache-Control"]
    for agent in ("Mozilla/5.0", "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
                  "Barracuda Sentinel (EE)"):  # fmt: skip
        assert (await client.get(f"/o/{token}.gif", headers={"User-Agent": agent})).status == 200
    assert (await client.head(f"/o/{token}.gif", headers={"User-Agent": BROWSER})).status == 200
    preview = TokenSigner([KEY]).sign(rid, PREVIEW)
    assert (await client.get(f"/o/{preview}.gif", headers={"User-Agent": BROWSER})).status == 200
    await flush(client)
    # Browser + Gmail proxy are people; Apple MPP, the scanner and the HEAD are machines;
    # the CRM's own preview is recorded but counts as neither.
    assert await counts(store, rid) == (2, 3, 0, True)
    async with store.session() as session:
        classes = sorted(await session.scalars(select(TrackingHit.hit_class)))
    assert classes == sorted(
        ["human", "apple_mpp", "gmail_proxy", "scanner", "prefetch", "preview"]
    )
    other = sent["li@jinlong.cn"]
    assert await counts(store, other) == (0, 0, 0, False)


async def test_forged_or_altered_tokens_are_404_and_count_nothing(
    store: Store, sent: dict[str, int], client: TestClient
) -> None:
    rid = sent["wang.fang@jinlong.cn"]
    good = TokenSigner([KEY]).sign(rid)
    kid, encoded, mac = good.split(".")
    forged = [
        f"{kid}.{encoded}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",  # altered signature
        f"{kid}.{int(encoded, 36) + 1:x}.{mac}",  # another recipient, same signature
        TokenSigner([b"somebody-elses-key-1234"]).sign(rid),  # signed by a stranger
        "not-a-token",
    ]
    for token in forged:
        assert (await client.get(f"/o/{token}.gif", headers={"User-Agent": BROWSER})).status == 404
        assert (await client.get(f"/c/{token}/0", allow_redirects=False)).status == 404
    await flush(client)
    async with store.session() as session:
        assert await session.scalar(select(func.count()).select_from(TrackingHit)) == 0


async def test_rotated_keys_keep_old_mail_working(
    store: Store, sent: dict[str, int], client: TestClient
) -> None:
    rid = sent["li@jinlong.cn"]
    old_token = TokenSigner([OLD_KEY]).sign(rid)
    assert (await client.get(f"/o/{old_token}.gif", headers={"User-Agent": BROWSER})).status == 200
    await flush(client)
    assert await counts(store, rid) == (1, 0, 0, True)


async def test_clicks_go_only_where_the_mail_pointed_and_prove_an_open(
    store: Store, sent: dict[str, int], client: TestClient
) -> None:
    rid = sent["wang.fang@jinlong.cn"]
    token = TokenSigner([KEY]).sign(rid)
    async with store.session() as session, session.begin():
        email = await session.scalar(select(Email))
        assert email is not None
        email.sent_at = utcnow().replace(year=2025)  # long enough ago: not a gateway's scan
    response = await client.get(
        f"/c/{token}/0", headers={"User-Agent": BROWSER}, allow_redirects=False
    )
    assert response.status == 302 and URL(response.headers["Location"]) == URL(LINKS[0])
    assert (
        await client.get(f"/c/{token}/1", headers={"User-Agent": BROWSER}, allow_redirects=False)
    ).headers["Location"] == LINKS[1]
    for wrong in ("2", "-1", "x", "99999999"):
        assert (await client.get(f"/c/{token}/{wrong}", allow_redirects=False)).status == 404
    await flush(client)
    # No pixel was loaded (images blocked), but a person clicked twice: opened.
    assert await counts(store, rid) == (0, 0, 2, True)


async def test_a_click_seconds_after_sending_is_a_scanner(
    store: Store, sent: dict[str, int], client: TestClient
) -> None:
    rid = sent["li@jinlong.cn"]
    token = TokenSigner([KEY]).sign(rid)
    response = await client.get(
        f"/c/{token}/0", headers={"User-Agent": BROWSER}, allow_redirects=False
    )
    assert response.status == 302
    await flush(client)
    assert await counts(store, rid) == (0, 0, 0, False)


async def test_unsubscribe_needs_a_post(
    store: Store, sent: dict[str, int], client: TestClient
) -> None:
    token = TokenSigner([KEY]).sign(sent["wang.fang@jinlong.cn"])
    page = await client.get(f"/u/{token}")
    assert page.status == 200 and "wang.fang@jinlong.cn" in await page.text()
    async with store.session() as session:
        assert await session.scalar(select(func.count()).select_from(MailOptOut)) == 0
    # RFC 8058 one-click, as a mail client sends it; twice is the same as once.
    for _ in range(2):
        done = await client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
        assert done.status == 200
    async with store.session() as session:
        opted = (await session.scalars(select(MailOptOut))).all()
    assert [(o.address, o.reason) for o in opted] == [("wang.fang@jinlong.cn", "unsubscribed")]
    assert (await client.post("/u/forged.token.here")).status == 404


async def test_every_hit_is_written_on_a_graceful_stop(store: Store, sent: dict[str, int]) -> None:
    writer = HitWriter(store, flush_every_s=60)  # it would not flush by itself for a minute
    app = create_app(store, TokenSigner([KEY]), writer)
    token = TokenSigner([KEY]).sign(sent["wang.fang@jinlong.cn"])
    began = utcnow()
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        for _ in range(250):
            assert (
                await test_client.get(f"/o/{token}.gif", headers={"User-Agent": BROWSER})
            ).status == 200
        assert writer.pending == 250
    # Leaving the client stops the server: its cleanup waits for the last flush.
    async with store.session() as session:
        assert await session.scalar(select(func.count()).select_from(TrackingHit)) == 250
        earliest, latest = (
            await session.execute(select(func.min(TrackingHit.at), func.max(TrackingHit.at)))
        ).one()
        recipient = await session.get(SentRecipient, sent["wang.fang@jinlong.cn"])
    # Timestamps come back as the UTC instants they were written as, on both engines.
    assert began <= earliest <= latest <= utcnow()
    assert recipient is not None and recipient.first_human_open_at == earliest
    assert recipient.last_activity_at == latest
    assert await counts(store, sent["wang.fang@jinlong.cn"]) == (250, 0, 0, True)
