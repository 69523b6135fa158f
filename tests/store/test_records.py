"""Audit trail, recycle bin, tags and users on both engines."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store import recycle
from store.context import correlated
from store.errors import NotFound, ValidationError
from store.models import Account, AuditEntry, Lead, Role, User
from store.tags import tag_record, tags_of, untag_record
from store.users import create_user, verify_password


async def _audit(
    session: AsyncSession, record_type: str, record_id: int
) -> list[tuple[str, str | None, str | None, str | None]]:
    rows = await session.scalars(
        select(AuditEntry)
        .where(AuditEntry.record_type == record_type, AuditEntry.record_id == record_id)
        .order_by(AuditEntry.id)
    )
    return [(r.action, r.field, r.old_value, r.new_value) for r in rows]


async def test_audit_records_create_update_delete_restore(session: AsyncSession) -> None:
    user = await create_user(session, "wang", "correct horse", role="agent")
    session.info["user_id"] = user.id
    with correlated("cid-1"):
        lead = Lead(first_name="Fang", last_name="Wang", company="Acme")
        session.add(lead)
        await session.flush()
        lead.company = "Acme 有限公司"
        lead.status = "qualified"  # type: ignore[assignment]
        await session.flush()
        await recycle.soft_delete(session, "lead", lead.id, user.id)
        await recycle.restore(session, "lead", lead.id)
    trail = await _audit(session, "lead", lead.id)
    assert trail[0] == ("create", None, None, None)
    assert ("update", "company", "Acme", "Acme 有限公司") in trail
    assert ("update", "status", "new", "qualified") in trail
    assert [a for a, *_ in trail][-2:] == ["delete", "restore"]
    entry = await session.scalar(
        select(AuditEntry)
        .where(AuditEntry.record_type == "lead", AuditEntry.record_id == lead.id)
        .limit(1)
    )
    assert entry is not None and entry.user_id == user.id and entry.correlation_id == "cid-1"


async def test_recycle_bin_lists_restores_and_purges(session: AsyncSession) -> None:
    keep, gone = Account(name="Keep"), Account(name="Gone")
    session.add_all([keep, gone])
    await session.flush()
    await recycle.soft_delete(session, "account", gone.id, None)
    await recycle.soft_delete(session, "account", keep.id, None)
    assert {e.name for e in await recycle.list_bin(session, "account")} == {"Keep", "Gone"}
    await recycle.restore(session, "account", keep.id)
    assert [e.name for e in await recycle.list_bin(session, "account")] == ["Gone"]
    with pytest.raises(NotFound):
        await recycle.restore(session, "account", keep.id)
    with pytest.raises(NotFound):
        await recycle.purge(session, "account", keep.id)  # not binned: refused
    await recycle.purge(session, "account", gone.id)
    assert await session.get(Account, gone.id) is None
    with pytest.raises(NotFound):
        await recycle.soft_delete(session, "account", 999_999, None)


async def test_tags(session: AsyncSession) -> None:
    lead = Lead(last_name="Zhao")
    session.add(lead)
    await session.flush()
    await tag_record(session, "lead", lead.id, "VIP")
    await tag_record(session, "lead", lead.id, "VIP")
    await tag_record(session, "lead", lead.id, "展会")
    assert await tags_of(session, "lead", lead.id) == sorted(["VIP", "展会"])
    await untag_record(session, "lead", lead.id, "VIP")
    assert await tags_of(session, "lead", lead.id) == ["展会"]


async def test_users_hash_passwords_and_validate(session: AsyncSession) -> None:
    user = await create_user(session, "li", "s3cret-pass", role="manager", email="Li@Example.com")
    assert user.password_hash and user.password_hash.startswith("$argon2")
    assert "s3cret-pass" not in user.password_hash
    assert verify_password(user.password_hash, "s3cret-pass")
    assert not verify_password(user.password_hash, "wrong")
    assert not verify_password(None, "s3cret-pass")
    with pytest.raises(ValidationError) as err:
        await create_user(session, "li", "short", role="nobody")
    assert set(err.value.errors) == {"username", "password", "role"}
    role = await session.scalar(select(Role).where(Role.name == "manager"))
    assert role is not None and role.allows("leads", "export") and not role.allows("admin", "view")
    assert (await session.scalar(select(User).where(User.username == "li"))) is user
