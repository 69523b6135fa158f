"""Users, roles and teams: who may see and change what."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Enum, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from store.base import Base, BigId, IdMixin, TimestampMixin, utcnow


class RecordScope(enum.StrEnum):
    """Which records a role sees: its own, its team's (and sub-teams'), or all."""

    OWN = "own"
    TEAM = "team"
    ALL = "all"


# The actions a role may be granted on a module (``permissions`` maps module -> actions).
ACTIONS = ("view", "create", "edit", "delete", "export")
MODULES = (
    "leads",
    "contacts",
    "accounts",
    "opportunities",
    "activities",
    "emails",
    "calls",
    "campaigns",
    "reports",
    "admin",
)


class Role(IdMixin, TimestampMixin, Base):
    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(80), unique=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    is_admin: Mapped[bool] = mapped_column(default=False)
    scope: Mapped[RecordScope] = mapped_column(
        Enum(
            RecordScope, native_enum=False, length=8, values_callable=lambda e: [m.value for m in e]
        ),
        default=RecordScope.OWN,
    )
    # {"leads": ["view", "create", "edit"], ...}; an admin role may do everything.
    permissions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    can_dial: Mapped[bool] = mapped_column(default=True)

    def allows(self, module: str, action: str) -> bool:
        """Whether this role grants ``action`` on ``module``."""
        if self.is_admin:
            return True
        return action in self.permissions.get(module, ())


class Team(IdMixin, TimestampMixin, Base):
    """A sales or service team; teams form a tree (a region with its branches)."""

    __tablename__ = "teams"

    name: Mapped[str] = mapped_column(String(120))
    parent_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("teams.id", ondelete="SET NULL"), default=None, index=True
    )
    manager_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL", use_alter=True), default=None
    )
    email: Mapped[str | None] = mapped_column(String(320), default=None)

    parent: Mapped[Team | None] = relationship(remote_side="Team.id", lazy="raise")

    __table_args__ = (UniqueConstraint("parent_id", "name"),)


class User(IdMixin, TimestampMixin, Base):
    __tablename__ = "users"
    __record_type__ = "user"

    username: Mapped[str] = mapped_column(String(80), unique=True)
    display_name: Mapped[str] = mapped_column(String(160), default="")
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    locale: Mapped[str] = mapped_column(String(16), default="en")
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    is_active: Mapped[bool] = mapped_column(default=True)
    role_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("roles.id", ondelete="SET NULL"), default=None
    )
    team_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("teams.id", ondelete="SET NULL"), default=None, index=True
    )
    # Telephony: the extension the agent answers on and the channel to ring it.
    phone_extension: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    phone_endpoint: Mapped[str | None] = mapped_column(String(120), default=None)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    role: Mapped[Role | None] = relationship(lazy="selectin")


class ApiToken(IdMixin, TimestampMixin, Base):
    """A token an integration (or the phone panel) authenticates with, as its user.

    Only the SHA-256 of the token is kept: tokens are long and random, so the hash
    cannot be reversed, and a leaked table grants nothing.
    """

    __tablename__ = "api_tokens"

    user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(120), default="")
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class WebForm(IdMixin, TimestampMixin, Base):
    """A company web site's lead form: its key (SHA-256 only), where its leads go, who may post.

    Not an ``ApiToken``: a form's key sits in public HTML, so it must grant
    nothing but posting leads through this one form.
    """

    __tablename__ = "web_forms"

    name: Mapped[str] = mapped_column(String(120), unique=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # Who the form's leads belong to (their team follows); None leaves them unassigned.
    owner_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    # Sites whose pages may post from a browser (CORS, Origin); ["https://www.example.cn"].
    allowed_origins: Mapped[list[str]] = mapped_column(default=list)
    thank_you_url: Mapped[str | None] = mapped_column(String(500), default=None)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Switched off: its key is refused like a wrong one.  A new key switches it on again.
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # When the current key was made (at creation or the last rotation), and its last
    # characters, so an admin can tell which key a site's page carries without the key.
    key_made_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    key_hint: Mapped[str | None] = mapped_column(String(8), default=None)


class LoginFailure(IdMixin, Base):
    """A failed sign-in, kept per key (a user name, an address) as the key's SHA-256, so
    every daemon on the store throttles alike (``store.login_throttle``)."""

    __tablename__ = "login_failures"

    key_sha256: Mapped[str] = mapped_column(String(64))
    failed_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)

    __table_args__ = (Index("ix_login_failures_key_time", "key_sha256", "failed_at"),)


class WebSession(Base):
    """A signed-in browser: the cookie holds a random id, only its SHA-256 is kept here.

    The CSRF token of every form in that browser lives with it.  A session ends
    at logout, after ``idle`` without a request, or at its absolute ``expires_at``.
    """

    __tablename__ = "web_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    user_agent: Mapped[str | None] = mapped_column(String(255), default=None)
    ip: Mapped[str | None] = mapped_column(String(64), default=None)


class SavedView(IdMixin, TimestampMixin, Base):
    """A user's named list view: a module and the query string of its search, filters and sort."""

    __tablename__ = "saved_views"

    user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    module: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(120))
    query: Mapped[str] = mapped_column(String(2000), default="")

    __table_args__ = (UniqueConstraint("user_id", "module", "name"),)
