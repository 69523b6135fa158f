"""Admin: teams — a tree (a region above its branches), each with a manager and members.

A team's "team" scope covers its sub-teams (``store.access.team_tree``), so a
parent may never be the team itself or one below it.  Members are chosen with
checkboxes; a user is in one team at a time, so ticking moves them here.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import ColumnElement, func, or_, select

from store.access import team_tree
from store.models import Team, User
from store.records import acting_as
from web.admin_base import admin_viewer, editor, form_id, id_of, store_of, team_paths, user_names
from web.modules import EMAIL
from web.render import render


def _tree(teams: list[Team]) -> list[tuple[Team, int]]:
    """The teams depth-first under their parents, with their depth, siblings by name."""
    below: dict[int | None, list[Team]] = {}
    ids = {team.id for team in teams}
    for team in sorted(teams, key=lambda x: x.name):
        below.setdefault(team.parent_id if team.parent_id in ids else None, []).append(team)
    shown: list[tuple[Team, int]] = []
    seen: set[int] = set()

    def walk(parent: int | None, depth: int) -> None:
        for team in below.get(parent, []):
            if team.id not in seen:
                seen.add(team.id)
                shown.append((team, depth))
                walk(team.id, depth + 1)

    walk(None, 0)
    return shown


async def teams_list(request: web.Request) -> web.Response:
    admin_viewer(request)
    async with store_of(request).session() as session:
        teams = list((await session.scalars(select(Team))).all())
        counts = dict(
            (
                await session.execute(
                    select(User.team_id, func.count())
                    .where(User.is_active.is_(True))
                    .group_by(User.team_id)
                )
            ).all()
        )
        names = dict(await user_names(session, active_only=False))
    return render(
        request, "admin/teams.html", {"tree": _tree(teams), "counts": counts, "names": names}
    )


async def _form(
    request: web.Request,
    team: Team | None,
    values: dict[str, Any],
    errors: dict[str, str],
    status: int = 200,
) -> web.Response:
    async with store_of(request).session() as session:
        paths = await team_paths(session)
        below = await team_tree(session, team.id) if team is not None else frozenset()
        users = await user_names(session)
        # Everyone active may be ticked; a deactivated member stays listed to be taken off.
        kept: ColumnElement[bool] = User.is_active.is_(True)
        if team is not None:
            kept = or_(User.is_active.is_(True), User.team_id == team.id)
        listed = set((await session.scalars(select(User.id).where(kept))).all())
        members = [
            (uid, name)
            for uid, name in await user_names(session, active_only=False)
            if uid in listed
        ]
    parents = sorted(((tid, p) for tid, p in paths.items() if tid not in below), key=lambda x: x[1])
    return render(
        request,
        "admin/team_form.html",
        {
            "team": team,
            "values": values,
            "errors": errors,
            "parents": parents,
            "users": users,
            "members": members,
        },
        status=status,
    )


async def new_team_form(request: web.Request) -> web.Response:
    editor(request)
    values = {"name": "", "parent_id": "", "manager_id": "", "email": "", "members": set()}
    return await _form(request, None, values, {})


async def team_page(request: web.Request) -> web.Response:
    admin_viewer(request)
    async with store_of(request).session() as session:
        team = await session.get(Team, id_of(request))
        if team is None:
            raise web.HTTPNotFound()
        members = set((await session.scalars(select(User.id).where(User.team_id == team.id))).all())
    values = {
        "name": team.name,
        "parent_id": str(team.parent_id or ""),
        "manager_id": str(team.manager_id or ""),
        "email": team.email or "",
        "members": {str(m) for m in members},
    }
    return await _form(request, team, values, {})


async def save_team(request: web.Request) -> web.Response:
    viewer = editor(request)
    t = viewer.t
    form = await request.post()
    values: dict[str, Any] = {
        k: str(form.get(k, "")).strip() for k in ("name", "parent_id", "manager_id", "email")
    }
    values["members"] = {str(m) for m in form.getall("member", [])}
    new = request.match_info.get("id") is None
    errors: dict[str, str] = {}
    if not values["name"] or len(values["name"]) > 120:
        errors["name"] = t.gettext("Between 1 and {n} characters.", n=120)
    if values["email"] and (not EMAIL.match(values["email"]) or len(values["email"]) > 320):
        errors["email"] = t.gettext("Not an email address.")
    async with store_of(request).session() as session, session.begin():
        team = None if new else await session.get(Team, id_of(request))
        if not new and team is None:
            raise web.HTTPNotFound()
        parent_id = form_id(values["parent_id"]) if values["parent_id"] else None
        if values["parent_id"]:
            below = await team_tree(session, team.id) if team is not None else frozenset()
            if parent_id is None or await session.get(Team, parent_id) is None:
                errors["parent_id"] = t.gettext("Choose one of the offered values.")
            elif parent_id in below:
                errors["parent_id"] = t.gettext("A team cannot sit below itself.")
        manager_id = form_id(values["manager_id"]) if values["manager_id"] else None
        if values["manager_id"] and (
            manager_id is None
            or not await session.scalar(
                select(User.id).where(User.id == manager_id, User.is_active.is_(True))
            )
        ):
            errors["manager_id"] = t.gettext("Choose one of the offered values.")
        if "name" not in errors and await session.scalar(
            select(Team.id).where(
                Team.name == values["name"],
                Team.parent_id.is_(None) if parent_id is None else Team.parent_id == parent_id,
                Team.id != (team.id if team is not None else 0),
            )
        ):
            errors["name"] = t.gettext("A team of this name is already there.")
        wanted = {int(m) for m in values["members"] if form_id(m) is not None}
        if not errors:
            if team is None:
                team = Team(name=values["name"])
                session.add(team)
            team.name = values["name"]
            team.parent_id = parent_id
            team.manager_id = manager_id
            team.email = values["email"] or None
            await session.flush()
            moved = await session.scalars(
                select(User).where(or_(User.team_id == team.id, User.id.in_(wanted or {0})))
            )
            with acting_as(session, viewer.user_id):  # audited like any change of a user
                for user in moved:
                    user.team_id = team.id if user.id in wanted else None
            team_id = team.id
    if errors:
        return await _form(request, team, values, errors, status=422)
    raise web.HTTPSeeOther(f"/admin/teams/{team_id}?saved=1")


def add_team_routes(app: web.Application) -> None:
    app.router.add_get("/admin/teams", teams_list)
    app.router.add_get("/admin/teams/new", new_team_form)
    app.router.add_post("/admin/teams/new", save_team)
    app.router.add_get(r"/admin/teams/{id}", team_page)
    app.router.add_post(r"/admin/teams/{id}", save_team)
