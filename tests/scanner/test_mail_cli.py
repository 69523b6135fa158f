"""rapport mail import and quarantine, as an admin runs them."""

from __future__ import annotations

import mailbox
from pathlib import Path

import pytest

from daemon.cli import main as rapport


def _eml(n: int, sender: str) -> bytes:
    return f"From: Person {n} <{sender}>\r\nSubject: old mail {n}\r\nMessage-ID: <old-{n}@x.cn>\r\n\r\nbody {n}\r\n".encode()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for key in [k for k in __import__("os").environ if k.startswith("RAPPORT_")]:
        monkeypatch.delenv(key)
    return tmp_path


def test_import_eml_maildir_and_mbox_then_quarantine(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "one.eml").write_bytes(_eml(1, "a@alpha.cn"))
    maildir = mailbox.Maildir(workdir / "Maildir", create=True)
    maildir.add(_eml(2, "b@beta.cn"))
    maildir.add(b"")  # an empty file: must be quarantined, not dropped
    box = mailbox.mbox(workdir / "archive.mbox")
    box.add(_eml(3, "c@gamma.cn"))
    box.add(_eml(4, "d@delta.cn"))
    box.flush()
    box.close()

    paths = [str(workdir / "one.eml"), str(workdir / "Maildir"), str(workdir / "archive.mbox")]
    assert rapport(["mail", "import", *paths]) == 0
    out = capsys.readouterr().out
    assert "5 message(s) read, 5 new, 0 imported before; 4 processed, 1 quarantined" in out

    # Importing again changes nothing.
    assert rapport(["mail", "import", *paths]) == 0
    assert "5 message(s) read, 0 new, 5 imported before" in capsys.readouterr().out

    assert rapport(["mail", "quarantine", "list"]) == 0
    listing = capsys.readouterr().out.strip().splitlines()
    assert len(listing) == 1 and "empty message" in listing[0]
    journal_id = int(listing[0].split("\t")[0])
    assert rapport(["mail", "quarantine", "show", str(journal_id)]) == 0
    assert '"error": "PermanentError: empty message"' in capsys.readouterr().out
    assert rapport(["mail", "quarantine", "replay", str(journal_id)]) == 1  # still empty
    assert "quarantined" in capsys.readouterr().out
