"""The dependency arrows of DESIGN.md hold: store imports nothing of ours,
services import store and never each other, only daemon wires them all."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"store", "scanner", "asterisk", "tracking", "web", "daemon"}
ALLOWED: dict[str, set[str]] = {
    "store": set(),
    "scanner": {"store"},
    "asterisk": {"store"},
    "tracking": {"store"},
    "web": {"store"},
    "daemon": OURS - {"daemon"},
}


def _imported_packages(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_arrows(package: str) -> None:
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for target, line in _imported_packages(path)
        if target in OURS and target != package and target not in ALLOWED[package]
    ]
    assert violations == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("import os\nfrom scanner.smtp import SmtpIngress\nimport web.app as w\n")
    assert {t for t, _ in _imported_packages(bad)} == {"os", "scanner", "web"}
