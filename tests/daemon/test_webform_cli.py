"""rapport webform create, list, revoke and rotate, as an admin runs them."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from daemon.cli import main as rapport
from store.db import open_store
from store.web_forms import form_for_key


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("RAPPORT_")]:
        monkeypatch.delenv(key)
    return tmp_path


def _live(workdir: Path, key: str) -> bool:
    async def look() -> bool:
        url = f"sqlite+aiosqlite:///{workdir / 'var' / 'rapport.db'}"
        async with open_store(url, workdir / "var" / "blobs") as store:
            async with store.session() as session:
                return await form_for_key(session, key) is not None

    return asyncio.run(look())


def test_create_list_revoke_rotate(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert rapport(["webform", "create", "--name", "contact-us",
                    "--origin", "https://www.jinlong.cn/",
                    "--thank-you-url", "https://www.jinlong.cn/thanks.html"]) == 0  # fmt: skip
    key = capsys.readouterr().out.strip()
    assert key.startswith("rpf_") and _live(workdir, key)

    assert rapport(["webform", "list"]) == 0
    [line] = capsys.readouterr().out.strip().splitlines()
    name, state, owner, origins, thanks, hint, *_ = line.split("\t")
    assert (name, state, owner, origins, thanks, hint) == (
        "contact-us", "active", "-", "https://www.jinlong.cn",
        "https://www.jinlong.cn/thanks.html", "..." + key[-4:])  # fmt: skip
    assert key not in line

    assert rapport(["webform", "revoke", "contact-us"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert not _live(workdir, key)
    assert rapport(["webform", "list"]) == 0
    assert "\trevoked\t" in capsys.readouterr().out

    assert rapport(["webform", "rotate", "contact-us"]) == 0
    new_key = capsys.readouterr().out.strip()
    assert new_key.startswith("rpf_") and new_key != key
    assert _live(workdir, new_key) and not _live(workdir, key)

    assert rapport(["webform", "rotate", "nope"]) == 2
    assert "no web form 'nope'" in capsys.readouterr().err
    assert rapport(["webform", "create", "--name", "x", "--origin", "www.jinlong.cn"]) == 2
    assert "origins" in capsys.readouterr().err
