"""Filing a batch at once decides exactly what filing its mails one by one would."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

import scanner.pipeline as pipeline_module
from scanner.filing import Filed, Incoming
from scanner.pipeline import MailPipeline, PipelineSettings
from scanner.processor import MailProcessor
from store.db import Store
from store.models import (
    Activity,
    ActivityLink,
    Email,
    EmailLocation,
    EmailParticipant,
    InboundJournal,
    JournalState,
    Lead,
)
from tests.scanner.test_pipeline import count, ingest, mail

SALES = PipelineSettings(lead_mailboxes=frozenset({"sales", "smtp"}))


def where(uid: int, folder: str = "INBOX") -> dict[str, object]:
    return {"mailbox": "sales", "folder": folder, "uidvalidity": 3, "uid": uid}


async def test_a_batch_sees_what_its_earlier_mails_made(store: Store) -> None:
    first = mail("王芳 <wang.fang@jinlong.cn>", "报价单", message_id="a1@jinlong.cn")
    ids = [
        await ingest(store, first, "imap:1", where(1)),
        # The same mail under a Gmail label: one email, two locations.
        await ingest(store, first, "imap:2", where(2, "[Gmail]/All Mail")),
        # The same sender again, a new conversation: no second lead.
        await ingest(
            store,
            mail("王芳 <wang.fang@jinlong.cn>", "合同", message_id="a2@jinlong.cn"),
            "imap:3",
            where(3),
        ),
        # A colleague of hers answers the first mail: it joins that thread, no lead.
        await ingest(
            store,
            mail(
                "李强 <li.qiang@jinlong.cn>",
                "回复：报价单",
                message_id="a3@jinlong.cn",
                extra="In-Reply-To: <a1@jinlong.cn>\r\n",
            ),
            "imap:4",
            where(4),
        ),
    ]
    outcomes = await MailPipeline(store, SALES).process_many(ids)

    assert [o.state for o in outcomes] == ["processed"] * 4
    assert [o.duplicate for o in outcomes] == [False, True, False, False]
    assert outcomes[1].email_id == outcomes[0].email_id
    assert len(outcomes[0].lead_ids) == 1 and outcomes[2].lead_ids == outcomes[3].lead_ids == []
    lead_id = outcomes[0].lead_ids[0]
    async with store.session() as session:
        leads = (await session.scalars(select(Lead))).all()
        assert [(lead.email, lead.last_name, lead.first_name) for lead in leads] == [
            ("wang.fang@jinlong.cn", "王", "芳")
        ]
        threads = dict(
            (await session.execute(select(Email.message_id, Email.thread_id))).all()  # type: ignore[arg-type]
        )
        assert threads["a3@jinlong.cn"] == threads["a1@jinlong.cn"] != threads["a2@jinlong.cn"]
        folders = await session.scalars(
            select(EmailLocation.folder)
            .where(EmailLocation.email_id == outcomes[0].email_id)
            .order_by(EmailLocation.folder)
        )
        assert list(folders) == ["INBOX", "[Gmail]/All Mail"]
        # Every email of hers, and the reply in her thread, is on the lead's timeline.
        linked = await session.scalar(
            select(func.count())
            .select_from(ActivityLink)
            .where(ActivityLink.record_type == "lead", ActivityLink.record_id == lead_id)
        )
        assert linked == 3
        journal = (await session.scalars(select(InboundJournal).order_by(InboundJournal.id))).all()
        assert [j.email_id for j in journal] == [o.email_id for o in outcomes]
        assert {j.state for j in journal} == {JournalState.PROCESSED}
    assert await count(store, EmailParticipant) == 3 * 2  # from and to of each new email


def conversation(tag: str) -> list[bytes]:
    """Two people, a reply across companies, a second mail from the first: four mails."""
    return [
        mail(f"赵敏 <zhao.min.{tag}@qq.com>", "询价", message_id=f"b1-{tag}@qq.com"),
        mail(
            f"Tom Lee <tom@acme-{tag}.co.uk>",
            "Quote",
            message_id=f"b2-{tag}@acme.co.uk",
            extra=f"In-Reply-To: <b1-{tag}@qq.com>\r\n",
        ),
        mail(f"赵敏 <zhao.min.{tag}@qq.com>", "再询价", message_id=f"b3-{tag}@qq.com"),
        mail(f"Ann <ann@acme-{tag}.co.uk>", "Hello", message_id=f"b4-{tag}@acme.co.uk"),
    ]


async def test_batch_and_one_by_one_agree(store: Store) -> None:
    """The same conversation filed as one batch and one mail at a time gives the same records."""
    pipeline = MailPipeline(store, SALES)
    singles = [await pipeline.process(await ingest(store, raw, f"smtp:s{n}"))
               for n, raw in enumerate(conversation("one"))]  # fmt: skip
    batch = await pipeline.process_many(
        [await ingest(store, raw, f"smtp:b{n}") for n, raw in enumerate(conversation("two"))]
    )
    assert [len(o.lead_ids) for o in batch] == [len(o.lead_ids) for o in singles] == [1, 0, 0, 1]
    async with store.session() as session:
        leads = [
            (lead.email, lead.company)
            for lead in await session.scalars(select(Lead).order_by(Lead.id))
        ]
        assert leads == [("zhao.min.one@qq.com", None), ("ann@acme-one.co.uk", "Acme-one"),
                         ("zhao.min.two@qq.com", None), ("ann@acme-two.co.uk", "Acme-two")]  # fmt: skip

        async def shape(outcomes: list[Any]) -> list[tuple[int, int]]:
            """Per mail: its thread's position in the run, and how many records it is filed under."""
            rows = []
            for outcome in outcomes:
                email = await session.get(Email, outcome.email_id)
                assert email is not None
                links = await session.scalar(
                    select(func.count())
                    .select_from(ActivityLink)
                    .join(Activity, Activity.id == ActivityLink.activity_id)
                    .where(Activity.email_id == email.id)
                )
                rows.append((email.thread_id, int(links or 0)))
            first_thread = rows[0][0]
            return [(thread - first_thread, links) for thread, links in rows]  # type: ignore[operator]

        assert await shape(batch) == await shape(singles)


async def test_a_mail_that_cannot_be_filed_is_quarantined_alone(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [await ingest(store, mail(message_id=f"c{n}@x.cn", sender=f"<c{n}@x.cn>"), f"smtp:c{n}")
           for n in range(4)]  # fmt: skip
    real = pipeline_module.file_batch

    async def failing_for_one(session: Any, batch: list[Incoming], **kwargs: Any) -> list[Filed]:
        if any(item.journal.id == ids[2] for item in batch):
            raise ValueError("the store refused this mail")
        return await real(session, batch, **kwargs)

    monkeypatch.setattr(pipeline_module, "file_batch", failing_for_one)
    outcomes = await MailPipeline(store, SALES).process_many(ids)
    assert [o.state for o in outcomes] == ["processed", "processed", "quarantined", "processed"]
    assert "the store refused this mail" in (outcomes[2].error or "")
    assert await count(store, Email) == 3
    async with store.session() as session:
        failed = await session.get(InboundJournal, ids[2])
        assert failed is not None and failed.state == JournalState.QUARANTINED


async def test_nul_characters_are_dropped_and_flagged(store: Store) -> None:
    raw = mail(subject="报价\x00单", body="数量\x00100")
    outcome = await MailPipeline(store).process(await ingest(store, raw, "smtp:nul"))
    assert outcome.state == "processed", outcome.error
    async with store.session() as session:
        email = await session.get(Email, outcome.email_id)
        assert email is not None
        assert (email.subject, email.text_body) == ("报价单", "数量100")
        assert any("NUL characters removed" in d for d in email.defects)


async def test_the_processor_reads_ahead_over_a_backlog(store: Store) -> None:
    ids = [await ingest(store, mail(message_id=f"d{n}@y.cn", sender=f"<buyer{n}@y{n}.cn>"), f"smtp:d{n}")
           for n in range(25)]  # fmt: skip
    processor = MailProcessor(MailPipeline(store, SALES), batch_size=4)
    assert await processor.sweep() == 25
    assert await processor.sweep() == 0
    assert await count(store, Lead) == 25
    async with store.session() as session:
        states = set(
            await session.scalars(select(InboundJournal.state).where(InboundJournal.id.in_(ids)))
        )
    assert states == {JournalState.PROCESSED}
