"""``rapport mail``: inspect, import, and the quarantine (list, show, replay)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from sqlalchemy import select

from daemon.config import Config
from scanner.importer import iter_entries_blocking
from scanner.inspect import inspect_message
from scanner.pipeline import MailPipeline
from store.db import Store, open_store
from store.journal import journal_many
from store.migrate import upgrade_to_head
from store.models import InboundJournal, JournalState

IMPORT_BATCH = 100


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mail = sub.add_parser("mail", help="inbound mail tools").add_subparsers(
        dest="mail_command", required=True
    )
    inspect = mail.add_parser("inspect", help="print the pipeline's reading of messages")
    inspect.add_argument("paths", nargs="+", type=Path)
    inspect.add_argument(
        "--json", action="store_true", help="one JSON object per line (the default)"
    )
    imports = mail.add_parser("import", help="import .eml files, Maildir folders and mbox files")
    imports.add_argument("paths", nargs="+", type=Path)
    quarantine = mail.add_parser(
        "quarantine", help="messages that could not be filed"
    ).add_subparsers(dest="quarantine_command", required=True)
    quarantine.add_parser("list", help="list quarantined messages")
    show = quarantine.add_parser("show", help="show one quarantined message and why")
    show.add_argument("id", type=int)
    replay = quarantine.add_parser("replay", help="file quarantined messages again")
    replay.add_argument("ids", nargs="*", type=int)
    replay.add_argument("--all", action="store_true")


def inspect_paths(paths: list[Path]) -> int:
    for path in paths:
        print(
            json.dumps(
                {"path": str(path), **inspect_message(path.read_bytes())}, ensure_ascii=False
            )
        )
    return 0


def _progress(done: int, total: int | None, label: str) -> None:
    if sys.stderr.isatty():
        print(
            f"\r{label} {done}" + (f"/{total}" if total else ""),
            end="",
            file=sys.stderr,
            flush=True,
        )


async def _import(store: Store, paths: list[Path], pipeline: MailPipeline) -> int:
    entries = iter_entries_blocking(paths)
    journalled: list[int] = []
    seen = 0
    while batch := await asyncio.to_thread(
        lambda: [e for _, e in zip(range(IMPORT_BATCH), entries, strict=False)]
    ):
        seen += len(batch)
        journalled += await journal_many(store, batch)
        _progress(seen, None, "read")
    states: dict[str, int] = {}
    for n, journal_id in enumerate(journalled, start=1):
        outcome = await pipeline.process(journal_id)
        states[outcome.state] = states.get(outcome.state, 0) + 1
        _progress(n, len(journalled), "filed")
    if sys.stderr.isatty():
        print(file=sys.stderr)
    summary = ", ".join(f"{v} {k}" for k, v in sorted(states.items()))
    before = seen - len(journalled)
    print(f"{seen} message(s) read, {len(journalled)} new, {before} imported before; {summary}")
    return 0


async def _quarantine(store: Store, args: argparse.Namespace, pipeline: MailPipeline) -> int:
    command = args.quarantine_command
    async with store.session() as session:
        rows = (
            await session.scalars(
                select(InboundJournal)
                .where(InboundJournal.state == JournalState.QUARANTINED)
                .order_by(InboundJournal.id)
            )
        ).all()
    if command == "list":
        for row in rows:
            reason = (row.error or "").splitlines()[0][:100] if row.error else ""
            when = f"{row.received_at:%Y-%m-%d %H:%M}"
            print(f"{row.id}\t{when}\t{row.attempts}\t{row.source_key[:60]}\t{reason}")
        print(f"{len(rows)} message(s) in quarantine", file=sys.stderr)
        return 0
    if command == "show":
        found = next((r for r in rows if r.id == args.id), None)
        if found is None:
            print(f"rapport: no quarantined message {args.id}", file=sys.stderr)
            return 1
        row = found
        raw = await store.blobs.read(row.blob_sha256)
        reading = inspect_message(raw)
        reading.pop("text", None)
        print(json.dumps({"id": row.id, "source_key": row.source_key, "attempts": row.attempts,
                          "error": row.error, "size": len(raw), "reading": reading},
                         ensure_ascii=False, indent=2, default=str))  # fmt: skip
        return 0
    ids = [r.id for r in rows] if args.all else args.ids
    failed = 0
    for journal_id in ids:
        outcome = await pipeline.replay(journal_id)
        print(f"{journal_id}\t{outcome.state}\t{outcome.error or ''}")
        failed += outcome.state != "processed"
    return 1 if failed else 0


async def run(config: Config, args: argparse.Namespace) -> int:
    await upgrade_to_head(config.store.url)
    from daemon.app import pipeline_settings

    async with open_store(config.store.url, config.store.blob_dir) as store:
        pipeline = MailPipeline(store, pipeline_settings(config))
        if args.mail_command == "import":
            return await _import(store, args.paths, pipeline)
        return await _quarantine(store, args, pipeline)
