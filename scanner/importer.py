"""Bring old mail in: .eml files, Maildir folders and mbox files, through the same pipeline."""

from __future__ import annotations

import mailbox
import os
from collections.abc import Iterator
from pathlib import Path

from store.journal import JournalEntry

IMPORT_MAILBOX = "import"


def _maildir_files(root: Path) -> Iterator[Path]:
    for sub in ("cur", "new"):
        folder = root / sub
        if folder.is_dir():
            yield from sorted(p for p in folder.iterdir() if p.is_file())


def is_maildir(path: Path) -> bool:
    return path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir()


def is_mbox(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as fh:
        return fh.read(5) == b"From "


def iter_entries_blocking(paths: list[Path]) -> Iterator[JournalEntry]:
    """Every message under the paths, keyed by where it came from (a re-import is a no-op)."""
    for path in paths:
        path = path.resolve()
        if is_maildir(path):
            sources: Iterator[tuple[str, bytes]] = (
                (str(p), p.read_bytes()) for p in _maildir_files(path)
            )
            for folder in sorted(
                p for p in path.iterdir() if p.name.startswith(".") and is_maildir(p)
            ):
                yield from iter_entries_blocking([folder])
        elif path.is_dir():
            files = sorted(Path(d) / f for d, _, fs in os.walk(path) for f in fs)
            yield from iter_entries_blocking(files)
            continue
        elif is_mbox(path):
            box = mailbox.mbox(path, create=False)
            try:
                sources = ((f"{path}#{n}", box.get_bytes(key)) for n, key in enumerate(box.keys()))
                yield from _entries(sources, str(path))
            finally:
                box.close()
            continue
        else:
            sources = iter([(str(path), path.read_bytes())])
        yield from _entries(sources, str(path))


def _entries(sources: Iterator[tuple[str, bytes]], folder: str) -> Iterator[JournalEntry]:
    for n, (key, raw) in enumerate(sources):
        yield JournalEntry(
            source_key=f"import:{key}",
            raw=raw,
            location={
                "mailbox": IMPORT_MAILBOX,
                "folder": folder[-255:],
                "uidvalidity": 0,
                "uid": n,
            },
        )
