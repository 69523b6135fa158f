"""kill -9 the daemon while it reads a mailbox, five times: every message ends up stored once."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.daemon.test_run import Daemon
from tests.peers.dovecot import DovecotServer
from tests.peers.local import free_port

MESSAGES = 2000
KILLS = 5
FINISH_TIMEOUT_S = 240.0


def _message(n: int) -> bytes:
    return (
        f"From: Customer {n} <customer{n}@company{n % 97}.cn>\r\nTo: sales@rapport.test\r\n"
        f"Subject: enquiry {n}\r\nMessage-ID: <crash-{n}@company.cn>\r\n"
        f"Date: Mon, 2 Nov 2026 10:00:00 +0800\r\n\r\nplease quote item {n}\r\n"
    ).encode()


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db, timeout=30) as conn:
        one = lambda sql: int(conn.execute(sql).fetchone()[0])  # noqa: E731
        return {
            "journal": one("SELECT count(*) FROM inbound_journal"),
            "pending": one("SELECT count(*) FROM inbound_journal WHERE state = 'pending'"),
            "quarantined": one("SELECT count(*) FROM inbound_journal WHERE state = 'quarantined'"),
            "emails": one("SELECT count(*) FROM emails"),
            "distinct ids": one("SELECT count(DISTINCT message_id) FROM emails"),
            "locations": one("SELECT count(*) FROM email_locations"),
            "leads": one("SELECT count(*) FROM leads"),
            "activities": one("SELECT count(*) FROM activities"),
        }


@pytest.mark.timeout(400)
def test_kill_nine_five_times_loses_and_doubles_nothing(
    tmp_path: Path, dovecot: DovecotServer
) -> None:
    dovecot.deliver_many([_message(n) for n in range(MESSAGES)])
    (tmp_path / "rapport.toml").write_text(
        "[[imap.mailboxes]]\nname = 'sales'\n"
        f"host = '127.0.0.1'\nport = {dovecot.port}\nsecurity = 'plain'\n"
        f"username = '{dovecot.username}'\npassword = 'env:SALES_PASSWORD'\nfirst_sync = 'all'\n"
    )
    ports = {"web": free_port(), "tracking": free_port(), "smtp": free_port()}
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_") and k != "NOTIFY_SOCKET"
    }
    env.update(
        SALES_PASSWORD=dovecot.password,
        RAPPORT_WEB__PORT=str(ports["web"]),
        RAPPORT_TRACKING__PORT=str(ports["tracking"]),
        RAPPORT_SMTP_INGRESS__PORT=str(ports["smtp"]),
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    daemon = Daemon(tmp_path, env, ports)
    db = tmp_path / "var" / "rapport.db"
    rng = random.Random(20261123)
    for _ in range(KILLS):
        daemon.start("run")
        daemon.wait_healthy()
        time.sleep(rng.uniform(0.2, 2.5))
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
    daemon.start("run")
    daemon.wait_healthy()
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    counts = _counts(db)
    while time.monotonic() < deadline:
        counts = _counts(db)
        if counts["journal"] == MESSAGES and counts["pending"] == 0:
            break
        time.sleep(0.5)
    code, _ = daemon.stop()
    assert code == 0, daemon.stderr[-3000:]
    counts = _counts(db)
    assert counts == {
        "journal": MESSAGES,
        "pending": 0,
        "quarantined": 0,
        "emails": MESSAGES,
        "distinct ids": MESSAGES,
        "locations": MESSAGES,
        "leads": MESSAGES,
        "activities": MESSAGES,
    }, counts
