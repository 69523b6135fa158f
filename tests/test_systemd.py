"""The systemd unit runs the daemon the way the daemon expects to be run."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "rapport.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_unit_is_notify_with_watchdog_and_hardening() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["WatchdogSec"].endswith("s")
    assert service["User"] == "rapport" and service["StateDirectory"] == "rapport"
    assert service["ExecStart"].endswith("rapport run")
    assert "check-config" in service["ExecStartPre"]
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "true",
        "NoNewPrivileges": "true",
        "PrivateTmp": "true",
    }.items():
        assert service[key] == value, key
    # The state directory is the working directory, so the default var/ lands in it.
    assert service["WorkingDirectory"] == "/var/lib/rapport"


def test_check_config_quiet_exists() -> None:
    """ExecStartPre relies on `rapport check-config --quiet`."""
    from daemon.cli import main

    assert main(["check-config", "--quiet"]) == 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_accepts_the_unit() -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, check=False
    )
    # Missing /opt/rapport paths are expected here; syntax errors are not.
    assert "Unknown key" not in result.stderr and "Invalid" not in result.stderr, result.stderr
