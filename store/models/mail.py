"""Mail-in state: IMAP cursors and the rules inbound mail is filed by."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from store.base import Base, IdMixin, TimestampMixin, utcnow


class ImapCursor(IdMixin, Base):
    """How far a mailbox folder has been read: the last UID seen under a UIDVALIDITY."""

    __tablename__ = "imap_cursors"

    mailbox: Mapped[str] = mapped_column(String(255))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger, default=0)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("mailbox", "folder"),)


class MailRule(IdMixin, TimestampMixin, Base):
    """One filing rule: conditions joined by all/any, actions, and whether to go on.

    ``conditions``: ``[{"field": "from|to|cc|subject|body|header:X-Name|attachment",
    "op": "contains|equals|regex|domain|exists", "value": "..."}]``.
    ``actions``: ``[{"type": "create_lead"}, {"type": "skip"}, {"type": "tag", "tag": "..."},
    {"type": "assign", "mode": "fixed|round_robin|least_busy", "user_ids": [..]},
    {"type": "team", "team_id": N}, {"type": "link", "record_type": "...", "record_id": N},
    {"type": "flag"}, {"type": "move", "folder": "..."}]``.
    """

    __tablename__ = "mail_rules"

    name: Mapped[str] = mapped_column(String(120))
    position: Mapped[int] = mapped_column(default=0)
    enabled: Mapped[bool] = mapped_column(default=True)
    # Only mail arriving through this mailbox (its configured name, or "smtp"); None = any.
    mailbox: Mapped[str | None] = mapped_column(String(255), default=None)
    match: Mapped[str] = mapped_column(String(3), default="all")
    conditions: Mapped[list[Any]] = mapped_column(default=list)
    actions: Mapped[list[Any]] = mapped_column(default=list)
    # False: first match wins; True: later rules are evaluated too.
    continue_after: Mapped[bool] = mapped_column(default=False)
    round_robin_next: Mapped[int] = mapped_column(default=0)


class ImapAction(IdMixin, Base):
    """A change a filing rule asked for on the server (flag, move), done by the scanner."""

    __tablename__ = "imap_actions"

    mailbox: Mapped[str] = mapped_column(String(255), index=True)
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    # "flag" (\\Flagged) or "move" (to ``target``)
    action: Mapped[str] = mapped_column(String(16))
    target: Mapped[str | None] = mapped_column(String(255), default=None)
    done_at: Mapped[dt.datetime | None] = mapped_column(default=None, index=True)
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
