"""What every admin page shares: the permission check, the store, and what the daemon hands in.

Every admin handler calls ``admin_viewer`` itself, where the request is
served: reading needs the admin module's ``view`` permission, changing its
``edit`` permission, and anything else is 403 (a menu that hides a link is no
check).  Making someone an administrator, or touching an administrator's
account, needs a full administrator (a role with ``is_admin``): a role that
was only granted the admin pages cannot raise itself above them.

The parts of the admin pages that need other packages (rendering a mail
template, replaying quarantined mail, logging in to a configured server) are
protocols here; the daemon injects their implementations through
``AdminServices``, so this package imports none of those packages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.db import Store
from store.models import Role, Team, User
from web.auth import Viewer, permitted

MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class TemplateCheck:
    """A template rendered with sample values, or why it cannot be (part -> message with line)."""

    errors: Mapping[str, str]
    subject: str = ""
    text: str = ""


class TemplateChecker(Protocol):
    def check(self, subject: str, text: str, html: str | None) -> TemplateCheck:
        """Render the three parts with sample merge fields, exactly as mail is rendered."""


@dataclass(frozen=True)
class ReplayOutcome:
    state: str  # "processed", or "quarantined" again
    error: str | None = None


class QuarantineReplay(Protocol):
    async def replay(self, journal_id: int) -> ReplayOutcome:
        """Put a quarantined message back in line and file it again."""


@dataclass(frozen=True)
class ServiceState:
    """One supervised service as /healthz reports it."""

    state: str
    detail: str = ""
    last_error: str | None = None


@dataclass(frozen=True)
class Connection:
    """A configured peer, with only what may be shown: never a password, secret or token."""

    kind: str  # "imap" | "relay" | "pbx"
    name: str
    service: str  # the supervisor's name for the service that uses it
    settings: tuple[tuple[str, str | bool], ...]
    # PBX only: extension -> Rapport user name, from the configuration.
    extensions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ConnectionTest:
    ok: bool
    message: str


class ConnectionAdmin(Protocol):
    def connections(self) -> Sequence[Connection]:
        """The configured mailboxes, relay and PBXs."""

    def service_states(self) -> Mapping[str, ServiceState]:
        """Every supervised service's live state, by service name."""

    async def test(self, kind: str, name: str) -> ConnectionTest:
        """Connect and log in to one configured peer, with a timeout; never raises."""


@dataclass(frozen=True)
class AdminServices:
    templates: TemplateChecker | None = None
    quarantine: QuarantineReplay | None = None
    connections: ConnectionAdmin | None = None


ADMIN_STORE_KEY = web.AppKey("admin_store", Store)
ADMIN_SERVICES_KEY = web.AppKey("admin_services", AdminServices)


def admin_viewer(request: web.Request, action: str = "view") -> Viewer:
    """The viewer, if their role may ``action`` the admin pages; 403 otherwise."""
    return permitted(request, ("admin", action))


def editor(request: web.Request) -> Viewer:
    """The viewer, if they may change administrative data."""
    return admin_viewer(request, "edit")


def store_of(request: web.Request) -> Store:
    return request.app[ADMIN_STORE_KEY]


def services_of(request: web.Request) -> AdminServices:
    return request.app[ADMIN_SERVICES_KEY]


def id_of(request: web.Request, name: str = "id") -> int:
    """A numeric path part that can name a row; 404 otherwise."""
    raw = request.match_info[name]
    if not raw.isdigit() or int(raw) > MAX_ID:
        raise web.HTTPNotFound()
    return int(raw)


def form_id(value: str) -> int | None:
    """A submitted id, or None for an empty or impossible value."""
    value = value.strip()
    return int(value) if value.isdigit() and int(value) <= MAX_ID else None


async def lock_admin_roles(session: AsyncSession) -> None:
    """Serialise changes that could leave no administrator (two demotions at once).

    On PostgreSQL the administrator roles' rows are locked until commit; each
    later statement of the transaction then sees the other's committed change.
    SQLite lets one writer at a time anyway.
    """
    await session.execute(select(Role.id).where(Role.is_admin.is_(True)).with_for_update())


async def other_active_admins(
    session: AsyncSession, *, except_user: int | None = None, except_role: int | None = None
) -> int:
    """Active users with an administrator role, not counting one user or one role."""
    query = (
        select(func.count())
        .select_from(User)
        .join(Role, User.role_id == Role.id)
        .where(Role.is_admin.is_(True), User.is_active.is_(True))
    )
    if except_user is not None:
        query = query.where(User.id != except_user)
    if except_role is not None:
        query = query.where(Role.id != except_role)
    return int(await session.scalar(query) or 0)


async def team_paths(session: AsyncSession) -> dict[int, str]:
    """Every team's name with its parents', "East / Shanghai", by id."""
    rows = (await session.execute(select(Team.id, Team.name, Team.parent_id))).all()
    names = {tid: name for tid, name, _ in rows}
    parents = {tid: parent for tid, _, parent in rows}
    paths: dict[int, str] = {}
    for tid in names:
        parts: list[str] = []
        seen: set[int] = set()
        at: int | None = tid
        while at is not None and at not in seen and at in names:
            seen.add(at)
            parts.append(names[at])
            at = parents[at]
        paths[tid] = " / ".join(reversed(parts))
    return paths


async def user_names(session: AsyncSession, *, active_only: bool = True) -> list[tuple[int, str]]:
    query = select(User.id, User.display_name, User.username).order_by(User.username)
    if active_only:
        query = query.where(User.is_active.is_(True))
    return [
        (uid, f"{shown or name} ({name})" if shown and shown != name else name)
        for uid, shown, name in (await session.execute(query)).all()
    ]
