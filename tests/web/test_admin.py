"""The admin pages over real HTTP: only administrators, users and roles that take effect,
the last administrator kept, stages, templates checked by the real renderer, rules,
the quarantine replayed by the real pipeline, and connections without their secrets."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from sqlalchemy import func, select

from daemon.admin_services import PipelineReplay, SampleRenderer
from daemon.config import Config
from daemon.connections import ConfiguredConnections
from daemon.supervisor import Supervisor
from scanner.pipeline import MailPipeline
from store.db import Store
from store.journal import journal_inbound
from store.models import (
    InboundJournal,
    JournalState,
    MailRule,
    MailTemplate,
    PipelineStage,
    Role,
    Team,
    User,
    WebSession,
)
from store.users import USERS_CHANGED
from tests.peers.local import free_port
from tests.web.browsing import make_user, post_form, sign_in
from web.admin_base import AdminServices
from web.app import create_app


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 with its smallest cost: these tests make and sign in many users, and the
    real cost (a quarter second a hash on a busy CI core) is not what they test."""
    monkeypatch.setattr(
        "store.users._hasher", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    )


GOOD_MAIL = (
    b"From: Zhang Wei <zhang.wei@huaxin-tech.cn>\r\nTo: sales@rapport.test\r\n"
    b"Subject: =?utf-8?B?6K+i5Lu3?=\r\nMessage-ID: <q1@huaxin-tech.cn>\r\n"
    b"Date: Mon, 2 Nov 2026 10:00:00 +0800\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Please quote.\r\n"
)


def admin_paths(client: TestClient) -> list[tuple[str, str]]:
    """Every admin route (method, path), its {id} filled with 1."""
    found = []
    for route in client.server.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter", "")
        if path.startswith("/admin") and route.method in ("GET", "POST"):
            found.append((route.method, path.replace("{id}", "1")))
    return found


async def test_only_administrators_reach_any_admin_page_or_form(store: Store) -> None:
    await make_user(store, "wang", "agent")
    await make_user(store, "li", "manager")
    await make_user(store, "boss", "admin")
    async with TestClient(TestServer(create_app(store))) as client:
        paths = admin_paths(client)
        assert len(paths) >= 30  # the check covers every page and form, not a sample
        await sign_in(client, "wang")
        assert 'href="/admin"' not in await (await client.get("/")).text()
        assert (await client.get("/admin")).status == 403
        client.session.cookie_jar.clear()
        # A manager may do much, but nothing here: every page and every form says 403.
        csrf = await sign_in(client, "li")
        for method, path in paths:
            if method == "GET":
                resp = await client.get(path, allow_redirects=False)
            else:
                resp = await post_form(client, path, csrf, {"name": "x", "is_admin": "1",
                                       "role_id": "1", "direction": "up", "kind": "imap"},
                                       allow_redirects=False)  # fmt: skip
            assert resp.status == 403, (method, path, resp.status)
        client.session.cookie_jar.clear()
        await sign_in(client, "boss")
        assert 'href="/admin"' in await (await client.get("/")).text()
        for method, path in paths:
            if method == "GET" and "{" not in path and not path.endswith("/1"):
                assert (await client.get(path)).status == 200, path
    async with store.session() as session:
        assert await session.scalar(select(func.count()).select_from(Role)) == 3  # nothing made


def shown_password(html: str) -> str:
    found = re.search(r'id="new-password">([^<]+)<', html)
    assert found, "no password on the page"
    return found.group(1)


async def test_a_new_user_with_role_and_team_signs_in_and_the_role_is_enforced(
    store: Store,
) -> None:
    await make_user(store, "boss", "admin")
    async with store.session() as session, session.begin():
        session.add(Team(name="华东"))
    async with TestClient(TestServer(create_app(store))) as admin:
        csrf = await sign_in(admin, "boss")
        # A custom role: contacts only, nothing of leads.
        made = await post_form(admin, "/admin/roles/new", csrf, {
            "name": "contacts-only", "description": "sees contacts", "scope": "own",
            "perm": ["contacts:view", "contacts:create", "bogus:view"], "can_dial": "1"})  # fmt: skip
        assert made.status == 200 and "contacts-only" in await made.text()
        async with store.session() as session:
            role = await session.scalar(select(Role).where(Role.name == "contacts-only"))
            team_id = await session.scalar(select(Team.id).where(Team.name == "华东"))
        assert role is not None and role.permissions == {"contacts": ["view", "create"]}
        form = {"username": "zhou", "display_name": "周敏", "email": "zhou@rapport.test",
                "role_id": str(role.id), "team_id": str(team_id), "phone_extension": "8010",
                "password_mode": "generate"}  # fmt: skip
        bad = await post_form(admin, "/admin/users/new", csrf, {**form, "email": "nope",
                                                                "phone_extension": "80a"})  # fmt: skip
        text = await bad.text()
        assert bad.status == 422 and "Not an email address." in text and "Digits only." in text
        assert 'value="周敏"' in text  # nothing typed is lost
        async with store.bus.subscribe(USERS_CHANGED) as changes:
            created = await post_form(admin, "/admin/users/new", csrf, form)
            # The phone service re-reads extensions on this: the new 8010 pops at once.
            assert "user_id" in (await asyncio.wait_for(changes.get(), 2)).data
        assert created.status == 200 and created.headers["Cache-Control"] == "no-store"
        password = shown_password(await created.text())
        again = await post_form(admin, "/admin/users/new", csrf, form)
        assert again.status == 422 and "This user name is taken." in await again.text()
    async with store.session() as session:
        user = await session.scalar(select(User).where(User.username == "zhou"))
        assert user is not None and user.password_hash and password not in user.password_hash
        assert (user.team_id, user.phone_extension, user.role_id) == (team_id, "8010", role.id)
    async with TestClient(TestServer(create_app(store))) as them:
        await sign_in(them, "zhou", password)
        assert (await them.get("/contacts")).status == 200
        assert (await them.get("/leads")).status == 403
        assert (await them.get("/admin/users")).status == 403


async def test_deactivating_a_user_ends_their_sessions_and_a_reset_password_is_shown_once(
    store: Store,
) -> None:
    await make_user(store, "boss", "admin")
    wang = await make_user(store, "wang", "agent")
    async with (TestClient(TestServer(create_app(store))) as admin,
                TestClient(TestServer(create_app(store))) as agent):  # fmt: skip
        await sign_in(agent, "wang")
        assert (await agent.get("/")).status == 200
        csrf = await sign_in(admin, "boss")
        page = await admin.get(f"/admin/users/{wang}")
        assert "Signed-in browsers: 1" in await page.text()
        reset = await post_form(admin, f"/admin/users/{wang}/password", csrf,
                                {"password_mode": "set", "password": "short"})  # fmt: skip
        assert reset.status == 422 and "At least 10 characters." in await reset.text()
        assert (await agent.get("/", allow_redirects=False)).status == 200  # nothing changed
        reset = await post_form(admin, f"/admin/users/{wang}/password", csrf,
                                {"password_mode": "generate"})  # fmt: skip
        new_password = shown_password(await reset.text())
        assert (await agent.get("/", allow_redirects=False)).status == 303  # signed out
        await sign_in(agent, "wang", new_password)
        async with store.session() as session:
            agent_role = await session.scalar(select(Role.id).where(Role.name == "agent"))
        off = await post_form(admin, f"/admin/users/{wang}", csrf, {
            "display_name": "Wang", "email": "", "role_id": str(agent_role), "team_id": "",
            "phone_extension": ""})  # no is_active: unticked  # fmt: skip
        assert off.status == 200 and "Saved." in await off.text()
        async with store.session() as session:  # ended at once, not at their next request
            sessions = await session.scalar(select(func.count()).where(WebSession.user_id == wang))
            user = await session.get(User, wang)
        assert sessions == 0 and user is not None and not user.is_active
        assert (await agent.get("/", allow_redirects=False)).status == 303


async def test_the_last_administrator_can_be_neither_demoted_nor_deactivated(
    store: Store,
) -> None:
    boss = await make_user(store, "boss", "admin")
    async with store.session() as session:
        roles = dict((await session.execute(select(Role.name, Role.id))).all())
    keep = {"display_name": "Boss", "email": "", "team_id": "", "phone_extension": ""}
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "boss")
        demoted = await post_form(client, f"/admin/users/{boss}", csrf,
                                  {**keep, "role_id": str(roles["agent"]), "is_active": "1"})  # fmt: skip
        assert demoted.status == 422
        assert "The last administrator cannot be removed." in await demoted.text()
        gone = await post_form(client, f"/admin/users/{boss}", csrf,
                               {**keep, "role_id": str(roles["admin"])})  # fmt: skip
        assert gone.status == 422
        role = await post_form(client, f"/admin/roles/{roles['admin']}", csrf,
                               {"name": "admin", "scope": "all", "description": ""})  # fmt: skip
        assert role.status == 422
        assert "The last administrator cannot be removed." in await role.text()
        # With a second administrator, the first may step down.
        await make_user(store, "deputy", "admin")
        stepped = await post_form(client, f"/admin/users/{boss}", csrf,
                                  {**keep, "role_id": str(roles["manager"]), "is_active": "1"},
                                  allow_redirects=False)  # fmt: skip
        assert stepped.status == 303
        assert (await client.get("/admin")).status == 403
    async with store.session() as session:
        user = await session.get(User, boss)
        admin_role = await session.get(Role, roles["admin"])
    assert user is not None and user.role_id == roles["manager"]
    assert admin_role is not None and admin_role.is_admin


async def test_a_stage_edit_keeps_its_order_and_required_fields(store: Store) -> None:
    await make_user(store, "boss", "admin")
    async with store.session() as session:
        stages = {s.name: s for s in (await session.scalars(select(PipelineStage))).all()}
    negotiation = stages["Negotiation"]
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "boss")
        form = {"name": "谈判", "position": "2", "probability": "75", "is_active": "1",
                "required": ["amount", "next_step"]}  # fmt: skip
        bad = await post_form(client, f"/admin/stages/{negotiation.id}", csrf,
                              {**form, "probability": "150", "is_won": "1", "is_lost": "1"})  # fmt: skip
        text = await bad.text()
        assert bad.status == 422 and "A whole number from 0 to 100." in text
        assert "A stage is won or lost, not both." in text and 'value="谈判"' in text
        saved = await post_form(client, f"/admin/stages/{negotiation.id}", csrf, form)
        assert saved.status == 200 and "Saved." in await saved.text()
        moved = await post_form(client, f"/admin/stages/{stages['Prospecting'].id}/move", csrf,
                                {"direction": "down"})  # fmt: skip
        assert moved.status == 200
        # The only open stage cannot be switched off.
        async with store.session() as session, session.begin():
            for stage in (await session.scalars(select(PipelineStage))).all():
                stage.is_active = stage.id == stages["Qualification"].id or stage.is_closed
        alone = await post_form(client, f"/admin/stages/{stages['Qualification'].id}", csrf,
                                {"name": "Qualification", "position": "1", "probability": "20"})  # fmt: skip
        assert alone.status == 422
        assert "The pipeline needs one active stage" in await alone.text()
    async with store.session() as session:
        order = (await session.scalars(
            select(PipelineStage.name).order_by(PipelineStage.position))).all()  # fmt: skip
        edited = await session.get(PipelineStage, negotiation.id)
    assert list(order) == ["谈判", "Prospecting", "Qualification", "Needs analysis", "Proposal",
                           "Closed won", "Closed lost"]  # fmt: skip
    assert edited is not None and edited.required_fields == ["amount", "next_step"]
    assert edited.probability == 75 and edited.position == 1


async def test_a_template_that_fails_to_render_is_refused_with_its_line(store: Store) -> None:
    await make_user(store, "boss", "admin")
    services = AdminServices(templates=SampleRenderer())
    async with TestClient(TestServer(create_app(store, admin=services))) as client:
        csrf = await sign_in(client, "boss")
        form = {"name": "quote", "language": "zh-CN", "subject": "报价 {{ account.name }}",
                "text": "{{ contact.last_name }}您好：\n\n{% if opportunity.amount %}\n"
                        "金额 {{ opportunity.amount }\n{% endif %}\n", "html": ""}  # fmt: skip
        broken = await post_form(client, "/admin/templates/new", csrf, form)
        text = await broken.text()
        assert broken.status == 422 and "TemplateSyntaxError (line 4)" in text
        assert "金额 {{ opportunity.amount }" in text  # the text stays to be mended
        unknown = await post_form(client, "/admin/templates/new", csrf,
                                  {**form, "text": "Hi {{ contact.nickname }}"})  # fmt: skip
        assert unknown.status == 422 and "nickname" in await unknown.text()
        good = await post_form(client, "/admin/templates/new", csrf,
                               {**form, "text": form["text"].replace("amount }", "amount }}")})  # fmt: skip
        page = await good.text()
        assert good.status == 200 and "Saved." in page
        assert "报价 [account.name]" in page  # rendered with sample values
    async with store.session() as session:
        kept = (await session.scalars(select(MailTemplate))).all()
    assert [(m.name, m.language, m.html) for m in kept] == [("quote", "zh-CN", None)]
    # Without the daemon's checker nothing is saved.
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "boss")
        refused = await post_form(client, "/admin/templates/new", csrf, {**form, "name": "x"})
        assert refused.status == 422 and "cannot be checked here" in await refused.text()


async def test_rules_are_checked_before_they_are_kept(store: Store) -> None:
    await make_user(store, "boss", "admin")
    wang = await make_user(store, "wang", "agent")
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "boss")
        form = {"name": "VIP", "position": "10", "enabled": "1", "match": "all", "mailbox": "",
                "conditions": '[{"field": "subject", "op": "regex", "value": "(报价"}]',
                "actions": '[{"type": "assign", "user_ids": [999999]}]'}  # fmt: skip
        bad = await post_form(client, "/admin/rules/new", csrf, form)
        text = await bad.text()
        assert bad.status == 422 and "Condition 1: the regular expression does not compile" in text
        assert "Action 1: no active user 999999." in text
        garbled = await post_form(client, "/admin/rules/new", csrf, {**form, "actions": "[{"})
        assert garbled.status == 422 and "Not valid JSON" in await garbled.text()
        good = await post_form(client, "/admin/rules/new", csrf, {
            **form, "conditions": '[{"field": "from", "op": "domain", "value": "huaxin-tech.cn"}]',
            "actions": f'[{{"type": "assign", "mode": "round_robin", "user_ids": [{wang}]}},'
                       ' {"type": "tag", "tag": "VIP"}]'})  # fmt: skip
        assert good.status == 200 and "Saved." in await good.text()
    async with store.session() as session:
        rule = await session.scalar(select(MailRule))
    assert rule is not None and rule.conditions[0]["value"] == "huaxin-tech.cn"
    assert rule.actions[1] == {"type": "tag", "tag": "VIP"}


async def test_the_quarantine_lists_its_mail_and_replays_it_through_the_pipeline(
    store: Store,
) -> None:
    await make_user(store, "boss", "admin")
    pipeline = MailPipeline(store)
    empty = (await journal_inbound(store, "smtp:empty", b"   \r\n")).journal_id
    assert (await pipeline.process(empty)).state == "quarantined"
    # A good mail held back (as after a bug since mended) files on replay.
    held = (await journal_inbound(store, "smtp:held", GOOD_MAIL)).journal_id
    async with store.session() as session, session.begin():
        row = await session.get(InboundJournal, held)
        assert row is not None
        row.state, row.error = JournalState.QUARANTINED, "RuntimeError: the store was away"
    services = AdminServices(quarantine=PipelineReplay(pipeline))
    async with TestClient(TestServer(create_app(store, admin=services))) as client:
        csrf = await sign_in(client, "boss")
        page = await (await client.get("/admin/quarantine")).text()
        assert "empty message" in page and "the store was away" in page
        assert "Zhang Wei &lt;zhang.wei@huaxin-tech.cn&gt;" in page and "询价" in page
        replayed = await post_form(client, f"/admin/quarantine/{held}/replay", csrf)
        page = await replayed.text()
        assert replayed.status == 200 and f"Message {held} was filed." in page
        assert "the store was away" not in page and "empty message" in page
        again = await post_form(client, f"/admin/quarantine/{empty}/replay", csrf)
        assert f"Message {empty} could not be filed again" in await again.text()
        gone = await post_form(client, f"/admin/quarantine/{held}/replay", csrf)
        assert gone.status == 404  # no longer in quarantine
    async with store.session() as session:
        states = dict((await session.execute(
            select(InboundJournal.id, InboundJournal.attempts))).all())  # fmt: skip
        filed = await session.get(InboundJournal, held)
    assert filed is not None and filed.state == JournalState.PROCESSED and filed.email_id
    assert states[empty] == 2


SECRETS = ("imap-pass-0a1b2c", "relay-pass-3d4e5f", "ami-secret-6a7b8c")


async def test_connections_show_no_secret_and_a_test_reports_failure(store: Store) -> None:
    await make_user(store, "boss", "admin")
    await make_user(store, "wang", "agent", phone_extension="8001")
    closed = free_port()
    config = Config.model_validate({
        "imap": {"mailboxes": [{"name": "sales", "host": "127.0.0.1", "port": closed,
                                "security": "plain", "username": "sales@rapport.test",
                                "password": SECRETS[0]}]},
        "smtp_relay": {"host": "127.0.0.1", "port": closed, "security": "plain",
                       "username": "crm", "password": SECRETS[1],
                       "from_address": "crm@rapport.test"},
        "asterisk": {"pbx": [{"name": "hq", "host": "127.0.0.1", "port": closed,
                              "username": "rapport", "secret": SECRETS[2],
                              "extensions": {"8001": "wang", "8002": "nobody"}}]},
    })  # fmt: skip
    supervisor = Supervisor()
    supervisor.add_disabled("smtp-ingress", "disabled by [smtp_ingress] enabled = false")
    services = AdminServices(connections=ConfiguredConnections(config, supervisor, timeout_s=5))
    async with TestClient(TestServer(create_app(store, admin=services))) as client:
        csrf = await sign_in(client, "boss")
        page = await (await client.get("/admin/connections")).text()
        assert "sales@rapport.test" in page and "crm@rapport.test" in page and "hq" in page
        assert "no such user" in page and "smtp-ingress" in page
        tested = []
        for kind, name in (("imap", "sales"), ("relay", "relay"), ("pbx", "hq")):
            resp = await post_form(client, "/admin/connections/test", csrf,
                                   {"kind": kind, "name": name})  # fmt: skip
            html = await resp.text()
            assert resp.status == 200 and 'class="error"' in html and "failed" in html
            tested.append(html)
        assert "refused" in tested[1].lower() or "Errno" in tested[1]
        unknown = await post_form(client, "/admin/connections/test", csrf,
                                  {"kind": "imap", "name": "other"})  # fmt: skip
        assert unknown.status == 404
        for html in [page, *tested, await (await client.get("/admin")).text()]:
            assert not any(secret in html for secret in SECRETS)


async def test_teams_form_a_tree_that_cannot_loop_and_ticking_moves_members(store: Store) -> None:
    await make_user(store, "boss", "admin")
    wang = await make_user(store, "wang", "agent", team="Old")
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "boss")
        east = await post_form(client, "/admin/teams/new", csrf, {"name": "华东", "manager_id": ""},
                               allow_redirects=False)  # fmt: skip
        east_id = int(east.headers["Location"].split("/")[-1].split("?")[0])
        shanghai = await post_form(client, "/admin/teams/new", csrf, {
            "name": "上海", "parent_id": str(east_id), "member": [str(wang)]},
            allow_redirects=False)  # fmt: skip
        shanghai_id = int(shanghai.headers["Location"].split("/")[-1].split("?")[0])
        twin = await post_form(client, "/admin/teams/new", csrf,
                               {"name": "上海", "parent_id": str(east_id)})  # fmt: skip
        assert twin.status == 422 and "A team of this name is already there." in await twin.text()
        loop = await post_form(client, f"/admin/teams/{east_id}", csrf,
                               {"name": "华东", "parent_id": str(shanghai_id)})  # fmt: skip
        assert loop.status == 422 and "A team cannot sit below itself." in await loop.text()
        tree = await (await client.get("/admin/teams")).text()
        assert tree.index("华东") < tree.index("上海") and 'class="depth-1"' in tree
    async with store.session() as session:
        user = await session.get(User, wang)
        east_team = await session.get(Team, east_id)
    assert user is not None and user.team_id == shanghai_id  # moved from "Old"
    assert east_team is not None and east_team.parent_id is None
