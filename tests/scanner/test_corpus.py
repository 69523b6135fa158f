"""Every message of the real-world corpus is filed or quarantined with a reason; none is lost."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from sqlalchemy import func, select

from scanner.pipeline import MailPipeline
from store.db import Store, open_store
from store.journal import JournalEntry, journal_many
from store.migrate import upgrade_to_head
from store.models import Email, InboundJournal, JournalState, Lead

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "email"


async def test_the_whole_corpus_is_filed_or_quarantined(tmp_path: Path) -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"no corpus at {CORPUS}")
    files = sorted(
        p for p in CORPUS.rglob("*") if p.is_file() and p.name not in ("README.md", "MANIFEST.tsv")
    )
    url = f"sqlite+aiosqlite:///{tmp_path / 'corpus.db'}"
    await upgrade_to_head(url)
    async with open_store(url, tmp_path / "blobs") as store:
        # Each file is one message as its suite has it (some begin with an mbox "From " line).
        entries = [JournalEntry(f"import:{p}", p.read_bytes()) for p in files]
        ids: list[int] = []
        for start in range(0, len(entries), 200):
            ids += await journal_many(store, entries[start : start + 200])
        assert len(ids) == len(files)
        pipeline = MailPipeline(store)
        outcomes = collections.Counter()
        for start in range(0, len(ids), 100):  # in batches, as the daemon files them
            for outcome in await pipeline.process_many(ids[start : start + 100]):
                outcomes[outcome.state] += 1
        report = await _report(store)
    print(f"\ncorpus: {len(files)} messages -> {dict(outcomes)}; {report}")
    assert outcomes["processed"] + outcomes["quarantined"] == len(files)
    assert outcomes["quarantined"] <= len(files) // 100  # a handful, each with its reason


async def _report(store: Store) -> dict[str, object]:
    async with store.session() as session:
        quarantined = (
            await session.scalars(
                select(InboundJournal).where(InboundJournal.state == JournalState.QUARANTINED)
            )
        ).all()
        assert all(row.error for row in quarantined), "a quarantined message without a reason"
        kinds = dict(
            (await session.execute(select(Email.kind, func.count()).group_by(Email.kind))).all()
        )
        leads = await session.scalar(select(func.count()).select_from(Lead))
        pending = await session.scalar(
            select(func.count())
            .select_from(InboundJournal)
            .where(InboundJournal.state == JournalState.PENDING)
        )
    assert pending == 0
    return {
        "emails by kind": {str(k.value): v for k, v in kinds.items()},
        "leads": leads,
        "quarantine reasons": sorted({(r.error or "")[:80] for r in quarantined}),
    }
