"""Users and passwords: argon2 hashes, the first admin, creating accounts."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.errors import ValidationError
from store.identity import index_record
from store.models.admin import Role, User

if TYPE_CHECKING:
    from store.db import Store

MIN_PASSWORD_LENGTH = 8
# Announced (store.bus) after users were made or changed: the phone service then re-reads
# who answers which extension, so a new agent's calls pop without a restart.
USERS_CHANGED = "UsersChanged"
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; a missing or malformed hash never matches."""
    if not password_hash:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def generate_password() -> str:
    return secrets.token_urlsafe(12)


async def create_user(
    session: AsyncSession,
    username: str,
    password: str | None,
    *,
    role: str = "agent",
    display_name: str = "",
    email: str | None = None,
    **fields: object,
) -> User:
    """Create a user with a role by name; the password is hashed, never stored."""
    errors: dict[str, str] = {}
    username = username.strip()
    if not username:
        errors["username"] = "is required"
    elif await session.scalar(select(User.id).where(User.username == username)) is not None:
        errors["username"] = f"{username!r} is taken"
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        errors["password"] = f"needs at least {MIN_PASSWORD_LENGTH} characters"
    role_row = await session.scalar(select(Role).where(Role.name == role))
    if role_row is None:
        errors["role"] = f"no role named {role!r}"
    if errors:
        raise ValidationError(errors)
    assert role_row is not None
    user = User(
        username=username,
        display_name=display_name or username,
        email=email,
        password_hash=hash_password(password) if password else None,
        role_id=role_row.id,
        **fields,
    )
    session.add(user)
    await index_record(session, user)
    return user


async def ensure_admin(
    store: Store, username: str, password: str | None
) -> tuple[bool, str | None]:
    """Create the first administrator unless any user exists.

    Returns (created, password): the password is the generated one when none was
    given, so the caller can show it once; None when nothing was created.
    """
    async with store.session() as session, session.begin():
        if await session.scalar(select(User.id).limit(1)) is not None:
            return False, None
        chosen = password or generate_password()
        await create_user(session, username, chosen, role="admin", display_name="Administrator")
    return True, chosen
