"""Who may see and change what: a user's role, module permissions and record scope.

Every page, list, export and API call asks the same ``Access``: ``can`` for
the module and action, ``visible`` for the SQL condition that keeps a query
inside the user's scope (own records; the team's and its sub-teams'; all), and
``may_see`` for one loaded record.  A permission check only in menus is no
check; these are used where the data is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from store.models import RecordScope, Role, Team, User

# The CRM modules whose records have an owner and a team.
RECORD_MODULES = {"lead": "leads", "contact": "contacts", "account": "accounts",
                  "opportunity": "opportunities"}  # fmt: skip


@dataclass(frozen=True)
class Access:
    user_id: int
    username: str
    role_name: str
    is_admin: bool
    scope: RecordScope
    permissions: dict[str, Any]
    can_dial: bool
    team_id: int | None
    # The user's team and every team below it (what "team" scope covers).
    team_ids: frozenset[int] = field(default_factory=frozenset)

    def can(self, module: str, action: str = "view") -> bool:
        if self.is_admin:
            return True
        return action in self.permissions.get(module, ())

    def visible(self, model: Any) -> Any:
        """The WHERE condition that keeps ``model``'s rows inside this user's scope."""
        if self.is_admin or self.scope == RecordScope.ALL:
            return true()
        own = model.owner_id == self.user_id
        if self.scope == RecordScope.TEAM and self.team_ids:
            return or_(own, model.team_id.in_(sorted(self.team_ids)))
        return own

    def may_see(self, record: Any) -> bool:
        if self.is_admin or self.scope == RecordScope.ALL:
            return True
        if record.owner_id == self.user_id:
            return True
        return self.scope == RecordScope.TEAM and record.team_id in self.team_ids

    def none(self) -> Any:
        return false()


async def team_tree(session: AsyncSession, team_id: int | None) -> frozenset[int]:
    """``team_id`` and every team below it."""
    if team_id is None:
        return frozenset()
    parents = dict((await session.execute(select(Team.id, Team.parent_id))).all())
    found = {team_id}
    grew = True
    while grew:
        below = {tid for tid, parent in parents.items() if parent in found} - found
        found |= below
        grew = bool(below)
    return frozenset(found)


async def access_for(session: AsyncSession, user: User) -> Access:
    role: Role | None = user.role
    return Access(
        user_id=user.id,
        username=user.username,
        role_name=role.name if role else "",
        is_admin=bool(role and role.is_admin),
        scope=role.scope if role else RecordScope.OWN,
        permissions=dict(role.permissions) if role else {},
        can_dial=bool(role and role.can_dial),
        team_id=user.team_id,
        team_ids=await team_tree(session, user.team_id),
    )
