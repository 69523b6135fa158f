"""A throwaway Dovecot IMAP server on a loopback port, for tests that need the real thing."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.peers.local import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
START_TIMEOUT_S = 10.0


@dataclass
class Dovecot:
    host: str
    port: int
    username: str
    password: str
    maildir: Path

    def deliver(self, raw: bytes, folder: str = "") -> Path:
        """Drop a message straight into the Maildir (as an MTA would)."""
        return self.deliver_many([raw], folder)[0]

    def deliver_many(self, raws: list[bytes], folder: str = "") -> list[Path]:
        base = self.maildir / (f".{folder}" if folder else "")
        for sub in ("cur", "new", "tmp"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        paths = []
        for n, raw in enumerate(raws):
            name = f"{time.time_ns()}.{os.getpid()}_{n}.rapport-test"
            tmp = base / "tmp" / name
            tmp.write_bytes(raw)
            os.replace(tmp, base / "new" / name)
            paths.append(base / "new" / name)
        _chown_tree(self.maildir, *_mail_ids())
        return paths


def available() -> str | None:
    """None when Dovecot can run here, else why not."""
    if not Path(DOVECOT).exists():
        return "Dovecot is not installed (Debian package dovecot-imapd)"
    return None


def _mail_ids() -> tuple[int, int]:
    """Dovecot refuses to serve mail as root: as root, mail belongs to Debian's ``mail`` user."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    entry = pwd.getpwnam("mail")
    return entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    if os.getuid() != 0:
        return
    for dirpath, _dirs, files in os.walk(path):
        os.chown(dirpath, uid, gid)
        for name in files:
            os.chown(os.path.join(dirpath, name), uid, gid)


def _config(root: Path, port: int, passwd: Path) -> str:
    uid, gid = _mail_ids()
    return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# Tests fail logins on purpose; no need to wait the default 2 s each time.
auth_failure_delay = 0
first_valid_uid = 0
mail_location = maildir:{root}/mail/%u
default_internal_user = {os.environ.get("USER", "root") if uid else "dovecot"}
default_login_user = {"dovenull" if uid == 0 else os.environ.get("USER", "nobody")}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
# The auth processes read the passwd file under the test's private tmp dir.
service auth {{
  user = {"root" if uid == 0 else os.environ.get("USER", "nobody")}
}}
service auth-worker {{
  user = {"root" if uid == 0 else os.environ.get("USER", "nobody")}
}}
service imap-login {{
  chroot =
}}
"""


class DovecotServer(Dovecot):
    """A Dovecot that a test can stop and start again on the same port."""

    def __init__(self, root: Path, username: str, password: str) -> None:
        super().__init__("127.0.0.1", free_port(), username, password, root / "mail" / username)
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        root = self.root
        console = root / "console.log"
        with console.open("ab") as out:
            # Its own process group, so stopping it also ends the per-connection imap
            # processes at once, as a server going away would.
            proc = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.proc = proc
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2) as s,
            ):
                if s.recv(64).startswith(b"* OK"):
                    return
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
                raise RuntimeError(
                    f"Dovecot did not start: {console.read_text(errors='replace')}{log[-2000:]}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group
        self.proc = None

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        """Deliver over IMAP APPEND, which wakes IDLE at once."""
        from imapclient import IMAPClient

        with IMAPClient(self.host, self.port, ssl=False, timeout=10) as client:
            client.login(self.username, self.password)
            if folder != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            client.append(folder, raw)

    def reset_uidvalidity(self) -> None:
        """Forget the UID lists, as a server rebuild does: folders get a new UIDVALIDITY."""
        for pattern in ("dovecot-uidlist", "dovecot.index*", "dovecot-uidvalidity*"):
            for path in self.maildir.rglob(pattern):
                path.unlink()
        time.sleep(1.1)  # a new UIDVALIDITY is taken from the clock, in seconds


@contextlib.contextmanager
def run_dovecot(
    root: Path,
    username: str = "sales@rapport.test",
    password: str = "s3cret",
    oauth2_introspection_url: str | None = None,
) -> Iterator[DovecotServer]:
    """Start Dovecot with its config, state and Maildir under ``root``; stop it on exit.

    ``root`` must be reachable by other users (its parents at least 0711) when
    run as root, because Dovecot serves mail as an unprivileged user.
    """
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("run", "state", "mail", "home"):
        (root / sub).mkdir(exist_ok=True)
    # The mail processes run as the mail user: they must reach the tree.
    os.chmod(root, 0o755)
    for sub in ("run", "mail", "home"):
        os.chmod(root / sub, 0o755)
    _chown_tree(root / "mail", *_mail_ids())
    _chown_tree(root / "home", *_mail_ids())
    passwd = root / "passwd"
    passwd.write_text(f"{username}:{{PLAIN}}{password}\n")
    server = DovecotServer(root, username, password)
    config = _config(root, server.port, passwd)
    if oauth2_introspection_url:
        # XOAUTH2: Dovecot asks the test's introspection endpoint whether a token is live.
        (root / "oauth2.conf.ext").write_text(
            f"introspection_mode = post\nintrospection_url = {oauth2_introspection_url}\n"
            "username_attribute = username\nactive_attribute = active\nactive_value = true\n"
        )
        config = config.replace(
            "auth_mechanisms = plain login", "auth_mechanisms = plain login xoauth2"
        )
        config += f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2\n  args = {root}/oauth2.conf.ext\n}}\n"
    (root / "dovecot.conf").write_text(config)
    server.start()
    try:
        yield server
    finally:
        server.stop()
