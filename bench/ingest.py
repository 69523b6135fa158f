"""Mail-in throughput and latency, against the ceiling of fetching and parsing alone.

Prints, in one run: (a) the ceiling, imapclient FETCH + mail-parser parse and
nothing else; (b) full ingestion (scanner + pipeline) into SQLite; (c) into
PostgreSQL, in messages/s with (b)/(a) and (c)/(a); the IDLE latency from
APPEND to the lead being queryable (p50/p99); and the latency from the end of
an SMTP or LMTP DATA to the lead being queryable (p50/p99).
Goals (mail-in issue): (b)/(a) >= 0.7, IDLE p99 < 1 s, SMTP/LMTP p99 < 100 ms.
Needs Dovecot (Debian dovecot-imapd) and, for (c), PostgreSQL on 127.0.0.1.
Run: .venv/bin/python bench/ingest.py [--messages N]  (default 10000, as the issue asks)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import shutil
import smtplib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mailparser  # noqa: E402
from imapclient import IMAPClient  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from scanner.imap import ImapScanner, MailboxSettings  # noqa: E402
from scanner.pipeline import MailPipeline, PipelineSettings  # noqa: E402
from scanner.processor import MailProcessor  # noqa: E402
from scanner.reading import default_workers  # noqa: E402
from scanner.smtp import SmtpIngress, SmtpIngressSettings  # noqa: E402
from store.db import Store, open_store  # noqa: E402
from store.migrate import upgrade_to_head  # noqa: E402
from store.models import InboundJournal, JournalState, Lead  # noqa: E402
from tests.peers.dovecot import DovecotServer, run_dovecot  # noqa: E402
from tests.peers.local import WatchedStatus, free_port  # noqa: E402
from tests.peers.postgres import UNREACHABLE, create_scratch_database, drop_scratch_database  # noqa: E402

PG_ADMIN_URL = "postgresql+asyncpg://root@127.0.0.1:5432/test"
SUBJECTS = [("询价：不锈钢管 镕铁", "gbk", "gb2312"), ("報價單 鋼材", "big5hkscs", "big5"),
            ("Quotation request", "utf-8", "utf-8"), ("关于合同的问题", "utf-8", "utf-8")]  # fmt: skip


def make_message(n: int, rng: random.Random) -> bytes:
    """A realistic sales mail: Chinese encodings, threads, 2 KB to 2 MB."""
    text, codec, label = SUBJECTS[n % len(SUBJECTS)]
    subject = f"=?{label}?B?{base64.b64encode(f'{text} {n}'.encode(codec)).decode()}?="
    size = int(min(2_000_000, 2_000 * (1000 ** rng.random() ** 3)))  # mostly small, a few large
    thread = f"In-Reply-To: <bench-{n - 1}@customer.cn>\r\n" if n % 5 and n else ""
    body = ("您好，请报价。" * 20 + "\r\n").encode(codec, "replace")
    parts = [
        f"From: =?utf-8?B?{base64.b64encode(f'客户{n}'.encode()).decode()}?= <buyer{n}@factory{n % 300}.cn>\r\n"
        f"To: sales@rapport.test\r\nSubject: {subject}\r\nMessage-ID: <bench-{n}@customer.cn>\r\n{thread}"
        "Date: Mon, 2 Nov 2026 10:00:00 +0800\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=BOUNDARY\r\n\r\n--BOUNDARY\r\n"
        f"Content-Type: text/plain; charset={label}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ]
    raw = parts[0].encode() + body
    if size > len(raw) + 200:
        blob = base64.encodebytes(rng.randbytes((size - len(raw)) * 3 // 4))
        raw += b"\r\n--BOUNDARY\r\nContent-Type: application/pdf; name=quote.pdf\r\n"
        raw += b"Content-Transfer-Encoding: base64\r\n\r\n" + blob
    return raw + b"\r\n--BOUNDARY--\r\n"


def ceiling_blocking(server: DovecotServer) -> tuple[int, float]:
    client = IMAPClient(server.host, server.port, ssl=False)
    client._imap.debug = 0
    client.login(server.username, server.password)
    client.select_folder("INBOX", readonly=True)
    uids = client.search("ALL")
    began = time.perf_counter()
    for start in range(0, len(uids), 200):
        for data in client.fetch(uids[start : start + 200], ["BODY.PEEK[]"]).values():
            mailparser.parse_from_bytes(data[b"BODY[]"])
    elapsed = time.perf_counter() - began
    client.logout()
    return len(uids), elapsed


def mailbox(server: DovecotServer) -> MailboxSettings:
    return MailboxSettings(name="sales", host=server.host, port=server.port, username=server.username,
                           password=server.password, security="plain")  # fmt: skip


async def full_ingest(url: str, blobs: Path, server: DovecotServer, total: int) -> float:
    await upgrade_to_head(url)
    async with open_store(url, blobs) as store:
        pipeline = MailPipeline(
            store,
            PipelineSettings(lead_mailboxes=frozenset({"sales"}), parse_workers=default_workers()),
        )
        began = time.perf_counter()
        scanner = asyncio.create_task(ImapScanner(store, mailbox(server)).run(WatchedStatus()))
        processor = asyncio.create_task(MailProcessor(pipeline).run(WatchedStatus()))
        while await _processed(store) < total:
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - began
        for task in (scanner, processor):
            task.cancel()
        await asyncio.gather(scanner, processor, return_exceptions=True)
    return elapsed


async def _processed(store: Store) -> int:
    async with store.session() as session:
        return int(await session.scalar(
            select(func.count()).select_from(InboundJournal).where(InboundJournal.state != JournalState.PENDING)
        ) or 0)  # fmt: skip


async def _lead_visible(store: Store, address: str, timeout_s: float = 10) -> float:
    began = time.perf_counter()
    while time.perf_counter() - began < timeout_s:
        async with store.session() as session:
            if await session.scalar(select(Lead.id).where(Lead.email == address)):
                return time.perf_counter()
        await asyncio.sleep(0.002)
    raise TimeoutError(address)


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def latencies(
    url: str, blobs: Path, server: DovecotServer, samples: int, backlog: int
) -> dict[str, list[float]]:
    await upgrade_to_head(url)
    out: dict[str, list[float]] = {
        "IDLE (APPEND -> lead)": [],
        "SMTP (DATA end -> lead)": [],
        "LMTP (DATA end -> lead)": [],
    }
    async with open_store(url, blobs) as store:
        pipeline = MailPipeline(
            store,
            PipelineSettings(
                lead_mailboxes=frozenset({"sales", "smtp"}), parse_workers=default_workers()
            ),
        )
        tasks = [asyncio.create_task(MailProcessor(pipeline).run(WatchedStatus()))]
        status = WatchedStatus()
        tasks.append(asyncio.create_task(ImapScanner(store, mailbox(server)).run(status)))
        await asyncio.wait_for(status.is_ready.wait(), 600)
        while (
            await _processed(store) < backlog
        ):  # measure on a quiet system, not behind the backlog
            await asyncio.sleep(0.2)
        for n in range(samples):
            address = f"idle{n}@latency.cn"
            raw = f"From: <{address}>\r\nSubject: idle {n}\r\nMessage-ID: <idle-{n}@l>\r\n\r\nhi\r\n".encode()
            began = time.perf_counter()
            await asyncio.to_thread(server.append, raw)
            out["IDLE (APPEND -> lead)"].append(await _lead_visible(store, address) - began)
        for lmtp in (False, True):
            port = free_port()
            st = WatchedStatus()
            tasks.append(
                asyncio.create_task(
                    SmtpIngress(store, SmtpIngressSettings(port=port, lmtp=lmtp)).run(st)
                )
            )
            await st.is_ready.wait()
            key = "LMTP (DATA end -> lead)" if lmtp else "SMTP (DATA end -> lead)"
            for n in range(samples):
                address = f"{'l' if lmtp else 's'}mtp{n}@latency.cn"
                raw = f"From: <{address}>\r\nSubject: s {n}\r\n\r\nhi\r\n".encode()
                sent = await asyncio.to_thread(_send, port, lmtp, address, raw)
                out[key].append(await _lead_visible(store, address) - sent)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return out


def _send(port: int, lmtp: bool, address: str, raw: bytes) -> float:
    client = smtplib.LMTP("127.0.0.1", port) if lmtp else smtplib.SMTP("127.0.0.1", port)
    with client:
        client.sendmail(address, ["sales@rapport.test"], raw)
        return time.perf_counter()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--pg-url", default=PG_ADMIN_URL)
    args = parser.parse_args()
    rng = random.Random(7)
    work = Path(tempfile.mkdtemp(prefix="rapport-bench-"))
    work.chmod(0o755)
    try:
        with run_dovecot(work / "dovecot") as server:
            raws = [make_message(n, rng) for n in range(args.messages)]
            server.deliver_many(raws)
            mb = sum(len(r) for r in raws) / 1e6
            print(f"seeded {args.messages} messages, {mb:.0f} MB")
            count, secs = await asyncio.to_thread(ceiling_blocking, server)
            ceiling = count / secs
            rows = [("(a) ceiling: FETCH + mail-parser", ceiling, 1.0)]
            sqlite_s = await full_ingest(
                f"sqlite+aiosqlite:///{work}/b.db", work / "blobs-b", server, count
            )
            rows.append(
                ("(b) full ingestion, SQLite", count / sqlite_s, count / sqlite_s / ceiling)
            )
            try:
                pg = await create_scratch_database(args.pg_url, "rapport_bench")
            except UNREACHABLE as err:
                print(f"(c) not measured: {err}")
            else:
                try:
                    pg_s = await full_ingest(pg, work / "blobs-c", server, count)
                    rows.append(
                        ("(c) full ingestion, PostgreSQL", count / pg_s, count / pg_s / ceiling)
                    )
                finally:
                    await drop_scratch_database(args.pg_url, pg)
            print(f"\n{'throughput':<36} {'msgs/s':>9} {'vs (a)':>7}   goal: (b)/(a) >= 0.70")
            for label, rate, ratio in rows:
                print(f"{label:<36} {rate:>9.0f} {ratio:>7.2f}")
            lat = await latencies(
                f"sqlite+aiosqlite:///{work}/l.db", work / "blobs-l", server, args.samples, count
            )
            print(
                f"\n{'latency to a queryable lead':<36} {'p50 ms':>9} {'p99 ms':>9}   goals: IDLE p99 < 1000, SMTP/LMTP p99 < 100"
            )
            for label, values in lat.items():
                print(
                    f"{label:<36} {_pct(values, 50) * 1000:>9.1f} {_pct(values, 99) * 1000:>9.1f}"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
