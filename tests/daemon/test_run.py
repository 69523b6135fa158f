"""The daemon end to end, as `make run` starts it: a real process, real ports, signals."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.local import free_port

RAPPORT = [sys.executable, "-m", "daemon"]
START_TIMEOUT_S = 30.0
STOP_BOUND_S = 8.0


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class Daemon:
    def __init__(self, workdir: Path, env: dict[str, str], ports: dict[str, int]) -> None:
        self.workdir, self.env, self.ports = workdir, env, ports
        self.stderr_path = workdir / "stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        with self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                [*RAPPORT, *args],
                cwd=self.workdir,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        return self.proc

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_healthy(self) -> dict[str, object]:
        deadline = time.monotonic() + START_TIMEOUT_S
        url = f"http://127.0.0.1:{self.ports['web']}/healthz"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited with {self.proc.returncode}:\n{self.stderr}")
            try:
                status, body = _get(url)
            except OSError:
                time.sleep(0.1)
                continue
            if status == 200:
                health: dict[str, object] = json.loads(body)
                return health
            time.sleep(0.1)
        pytest.fail(f"no healthy /healthz within {START_TIMEOUT_S}s:\n{self.stderr}")

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, float]:
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"daemon ignored signal {sig} for 10 s:\n{self.stderr}")
        return code, time.monotonic() - began


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    ports = {"web": free_port(), "tracking": free_port(), "smtp": free_port()}
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_") and k != "NOTIFY_SOCKET"
    }
    env.update(
        RAPPORT_WEB__PORT=str(ports["web"]),
        RAPPORT_TRACKING__PORT=str(ports["tracking"]),
        RAPPORT_SMTP_INGRESS__PORT=str(ports["smtp"]),
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    d = Daemon(tmp_path, env, ports)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait()


def test_first_run_serves_health_and_stops_cleanly(daemon: Daemon) -> None:
    daemon.start("run")
    health = daemon.wait_healthy()
    services = health["services"]
    assert isinstance(services, dict)
    # Unconfigured peers are shown as such, not failed.
    for name in ("imap", "asterisk", "outbox"):
        matching = [s for n, s in services.items() if n.startswith(name)]
        assert matching and all(s["state"] == "disabled" for s in matching), (name, services)
    assert services["smtp-ingress"]["state"] == "ready"
    assert health["status"] in ("ok", "degraded")

    # The first admin was created and its generated password shown once.
    assert "admin" in daemon.stderr and "password" in daemon.stderr.lower()
    assert (daemon.workdir / "var" / "rapport.db").exists()

    status, metrics = _get(f"http://127.0.0.1:{daemon.ports['web']}/metrics")
    assert status == 200 and b"rapport_service_up" in metrics
    status, _ = _get(f"http://127.0.0.1:{daemon.ports['tracking']}/healthz")
    assert status == 200

    with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=5) as client:
        assert (
            client.sendmail("a@example.cn", ["sales@example.com"], b"Subject: x\r\n\r\nhi\r\n")
            == {}
        )

    code, took = daemon.stop(signal.SIGTERM)
    assert code == 0, daemon.stderr
    # About 1 s on a quiet machine; the bound is for a stage that hangs on a timeout, and
    # leaves room for a machine the rest of the suite (three processes) keeps busy.
    assert took < STOP_BOUND_S

    # A second start finds the admin and does not print a password again.
    before = daemon.stderr.count("password")
    daemon.start("run")
    daemon.wait_healthy()
    code, took = daemon.stop(signal.SIGINT)
    assert code == 0 and took < STOP_BOUND_S
    assert daemon.stderr.count("password") == before


def test_admin_password_from_environment(daemon: Daemon) -> None:
    daemon.env["RAPPORT_ADMIN_PASSWORD"] = "from-the-env-123"
    daemon.start("run")
    daemon.wait_healthy()
    daemon.stop()
    assert "from-the-env-123" not in daemon.stderr


def test_bad_config_refuses_to_start_and_lists_every_problem(daemon: Daemon) -> None:
    del daemon.env["RAPPORT_WEB__PORT"]  # the file's bad value must be what is checked
    (daemon.workdir / "rapport.toml").write_text(
        "[web]\nport = 'eighty'\ncolour = 'blue'\n"
        "[[imap.mailboxes]]\nname = 'sales'\nhost = 'imap.example.com'\nusername = 'sales'\n"
        "[smtp_ingress]\nmax_message_size = 'huge'\n"
    )
    proc = daemon.start("run")
    code = proc.wait(30)
    err = daemon.stderr
    assert code != 0
    for key in ("web.port", "web.colour", "password", "smtp_ingress.max_message_size"):
        assert key in err, (key, err)
    assert "rapport.toml" in err
    assert not (daemon.workdir / "var" / "rapport.db").exists()
