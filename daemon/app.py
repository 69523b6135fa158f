"""The daemon: open the store, wire every service, serve until a signal, stop in stages."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

from aiohttp import web

from asterisk.service import PbxService, PhoneSettings
from daemon.admin_services import admin_services
from daemon.calls_cli import plan_of
from daemon.config import Config, PbxConfig
from daemon.connections import ami_settings, mailbox_settings, relay_settings
from daemon.heap import settle_after_start
from daemon.http import add_health_routes
from daemon.listeners import HttpListener
from daemon.metrics import Metrics
from daemon.reminders import ReminderMailer
from daemon.sdnotify import Notifier
from daemon.supervisor import STAGE_LISTENERS, Supervisor
from scanner.imap import ImapScanner
from scanner.pipeline import MailPipeline, PipelineSettings
from scanner.processor import MailProcessor
from scanner.reading import default_workers
from scanner.smtp import SmtpIngress, SmtpIngressSettings
from store.db import Store, open_store
from store.migrate import upgrade_to_head
from store.users import ensure_admin
from tracking import listener as tracking_listener
from tracking.compose import Sender
from tracking.hit_pipe import hit_queue_for
from tracking.mail_api import OutboxApi
from tracking.outbox import OutboxSender
from tracking.tokens import TokenSigner
from web import app as web_app
from web.phone import PhoneConfig

log = logging.getLogger(__name__)

ADMIN_PASSWORD_ENV = "RAPPORT_ADMIN_PASSWORD"  # noqa: S105 - the variable's name, not a password


def _kept_secret(path: Path) -> str:
    """A random secret generated once and kept in ``path`` (mode 0600)."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def web_secret(config: Config) -> str:
    """The configured web secret, else one generated once and kept in var/secret_key (0600)."""
    if config.web.secret_key is not None:
        return config.web.secret_key.reveal()
    return _kept_secret(config.daemon.var_dir / "secret_key")


def tracking_signer(config: Config) -> TokenSigner:
    """Tracking keys as configured (newest first), else one generated into var/tracking_key."""
    keys = [key.reveal() for key in config.tracking.keys]
    if not keys:
        keys = [_kept_secret(config.daemon.var_dir / "tracking_key")]
    return TokenSigner([key.encode() for key in keys])


def _prepare_var(config: Config) -> None:
    config.daemon.var_dir.mkdir(parents=True, exist_ok=True)
    Path(config.store.blob_dir).mkdir(parents=True, exist_ok=True)
    web_secret(config)


def pipeline_settings(config: Config) -> PipelineSettings:
    """Which mailboxes make leads and what bulk mail does, from the configuration."""
    lead_mailboxes = {"import"} | {m.name for m in config.imap.mailboxes if m.lead_mailbox}
    if config.mail.smtp_creates_leads:
        lead_mailboxes.add("smtp")
    workers = config.mail.parse_workers
    return PipelineSettings(
        lead_mailboxes=frozenset(lead_mailboxes),
        bulk_policy=config.mail.bulk,
        parse_workers=default_workers() if workers == "auto" else workers,
    )


def phone_settings(pbx: PbxConfig) -> PhoneSettings:
    """One ``[[asterisk.pbx]]`` as the phone service's settings."""
    return PhoneSettings(plan=plan_of(pbx), ami=ami_settings(pbx), dial_context=pbx.dial_context)


def build_services(config: Config, store: Store, supervisor: Supervisor, metrics: Metrics) -> None:
    """Register every service with the supervisor; unconfigured peers are shown as disabled."""

    pipeline = MailPipeline(store, pipeline_settings(config))

    def make_web() -> web.Application:
        phone = PhoneConfig(
            secret=web_secret(config).encode(),
            recordings={
                pbx.name: pbx.recordings_dir for pbx in config.asterisk.pbx if pbx.recordings_dir
            },
        )
        relay = config.smtp_relay
        mail = (
            OutboxApi(store, Sender(address=relay.from_address, name=relay.from_name))
            if relay.from_address
            else None
        )
        public = config.web.public_url or ""
        admin = admin_services(config, supervisor, pipeline)
        app = web_app.create_app(
            store, phone, mail, admin, secure_cookies=public.startswith("https:"), public_url=public
        )
        add_health_routes(app, supervisor, metrics)
        return app

    supervisor.add(HttpListener("web", make_web, config.web.host, config.web.port), STAGE_LISTENERS)
    signer = tracking_signer(config)
    supervisor.add(
        HttpListener(
            "tracking",
            lambda: tracking_listener.create_app(store, signer, hit_queue_for(store)),
            config.tracking.host,
            config.tracking.port,
        ),
        STAGE_LISTENERS,
    )
    ingress = config.smtp_ingress
    if ingress.enabled:
        settings = SmtpIngressSettings(
            host=ingress.host,
            port=ingress.port,
            domains=tuple(ingress.domains),
            max_message_size=ingress.max_message_size,
            timeout_s=ingress.timeout,
            lmtp=ingress.lmtp,
            tls_cert=str(ingress.tls_cert) if ingress.tls_cert else None,
            tls_key=str(ingress.tls_key) if ingress.tls_key else None,
            require_tls=ingress.require_tls,
            auth_username=ingress.auth_username,
            auth_password=ingress.auth_password.reveal() if ingress.auth_password else None,
        )
        supervisor.add(SmtpIngress(store, settings), STAGE_LISTENERS)
    else:
        supervisor.add_disabled("smtp-ingress", "disabled by [smtp_ingress] enabled = false")
    supervisor.add(MailProcessor(pipeline))
    # The services below arrive with their issues; until configured they say why they are off.
    if not config.imap.mailboxes:
        supervisor.add_disabled("imap", "not configured: no [[imap.mailboxes]]")
    else:
        for mailbox in config.imap.mailboxes:
            supervisor.add(ImapScanner(store, mailbox_settings(config, mailbox)))
    if not config.asterisk.pbx:
        supervisor.add_disabled("asterisk", "not configured: no [[asterisk.pbx]]")
    else:
        for pbx in config.asterisk.pbx:
            supervisor.add(PbxService(store, phone_settings(pbx)))
    relay = config.smtp_relay
    if relay.host is None or not relay.from_address:
        # Reminders still show on the owner's pages; only their mail waits for a relay.
        supervisor.add_disabled("reminders", "not configured: no [smtp_relay] host, from_address")
    else:
        sender = Sender(address=relay.from_address, name=relay.from_name)
        supervisor.add(ReminderMailer(store, sender, config.web.public_url))
    if config.smtp_relay.host is None:
        supervisor.add_disabled("outbox", "not configured: no [smtp_relay] host")
    else:
        relay = config.smtp_relay
        supervisor.add(
            OutboxSender(
                store,
                relay_settings(relay),
                Sender(address=relay.from_address or "", name=relay.from_name),
                signer,
                config.tracking.base_url,
            )
        )


async def _announce_admin(config: Config, store: Store) -> None:
    given = os.environ.get(ADMIN_PASSWORD_ENV) or None
    created, password = await ensure_admin(store, config.daemon.admin_username, given)
    if not created:
        return
    log.info("created the first administrator %r", config.daemon.admin_username)
    if given is None and password is not None:
        # Shown once, on the console only: never through logging, which may be shipped.
        print(
            f"\n  First start: user {config.daemon.admin_username!r} created"
            f" with password: {password}\n"
            f"  (set {ADMIN_PASSWORD_ENV} to choose it; change it after logging in)\n",
            file=sys.stderr,
            flush=True,
        )


async def run_daemon(config: Config) -> int:
    """Run until SIGTERM or SIGINT; returns the process exit code."""
    loop = asyncio.get_running_loop()
    notifier = Notifier()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    await asyncio.to_thread(_prepare_var, config)
    revision = await upgrade_to_head(config.store.url)
    log.info("store at schema revision %s", revision)

    async with open_store(config.store.url, config.store.blob_dir) as store:
        await _announce_admin(config, store)
        supervisor = Supervisor()
        metrics = Metrics(supervisor.states)
        build_services(config, store, supervisor, metrics)
        web_ready = asyncio.Event()
        supervisor.on_change = lambda s: (
            web_ready.set() if (s.name, s.state) == ("web", "ready") else None
        )

        async def announce_ready() -> None:
            await web_ready.wait()
            settle_after_start()
            notifier.ready("serving")
            log.info("rapport is serving: web UI on http://%s:%d", config.web.host, config.web.port)

        async with asyncio.TaskGroup() as group:
            running = group.create_task(supervisor.run(), name="supervisor")
            helpers = [
                group.create_task(announce_ready(), name="announce-ready"),
                group.create_task(notifier.watchdog(), name="sd-watchdog"),
            ]
            await stop.wait()
            log.info("stopping: signal received")
            notifier.stopping()
            for task in helpers:
                task.cancel()
            # Listeners stop first, then workers drain; the store closes when this block exits.
            await supervisor.shutdown(config.daemon.shutdown_timeout)
            await running
    log.info("stopped")
    return 0
