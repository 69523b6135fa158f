"""Web forms on both engines: hashed keys, one lead per person, known customers get a note."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.activities import timeline
from store.errors import NotFound, ValidationError
from store.identity import index_record
from store.models import Contact, Lead, User, WebForm
from store.users import create_user
from store.web_forms import (
    allowed_origins,
    capture_lead,
    create_web_form,
    form_for_key,
    list_web_forms,
    revoke_web_form,
    rotate_web_form_key,
    update_web_form,
    web_form_named,
)


async def test_a_key_is_kept_hashed_and_finds_its_live_form(session: AsyncSession) -> None:
    await create_user(session, "sales", None)
    key = await create_web_form(session, "contact-us", owner="sales",
                                origins=["https://www.jinlong.cn/"])  # fmt: skip
    form = await form_for_key(session, key)
    assert form is not None and form.name == "contact-us"
    assert key not in form.key_sha256 and len(form.key_sha256) == 64
    assert form.allowed_origins == ["https://www.jinlong.cn"]
    assert await allowed_origins(session) == {"https://www.jinlong.cn"}
    assert await form_for_key(session, key[:-1] + ("x" if key[-1] != "x" else "y")) is None
    assert await form_for_key(session, "rpt_" + key[4:]) is None  # an API token is no form key
    with pytest.raises(ValidationError):
        await create_web_form(session, "contact-us")
    with pytest.raises(ValidationError):
        await create_web_form(session, "other", origins=["www.jinlong.cn"])
    with pytest.raises(NotFound):
        await create_web_form(session, "third", owner="nobody")
    form.revoked_at = form.created_at
    assert await form_for_key(session, key) is None
    assert await allowed_origins(session) == set()


async def test_one_person_is_one_lead_and_a_customer_gets_a_note(session: AsyncSession) -> None:
    owner = await create_user(session, "sales", None)
    await create_web_form(session, "contact-us", owner="sales")
    form = await session.scalar(select(WebForm))
    assert form is not None
    first = await capture_lead(session, form, {"last_name": "陈", "email": "chen@jinlong.cn"},
                               "想了解报价")  # fmt: skip
    assert first.new and first.record_type == "lead"
    lead = await session.get(Lead, first.record_id)
    assert lead is not None and lead.source == "web" and lead.owner_id == owner.id

    again = await capture_lead(session, form, {"last_name": "陈", "email": "CHEN@jinlong.cn",
                                               "phone": "13800138000"}, "再问一次")  # fmt: skip
    assert (again.record_type, again.record_id, again.new) == ("lead", first.record_id, False)
    await session.refresh(lead)
    assert lead.phone == "13800138000"  # an empty field filled, nothing overwritten
    notes = await timeline(session, "lead", lead.id)
    assert [a.body for a in notes] == ["再问一次", "想了解报价"]
    assert await session.scalar(select(func.count()).select_from(Lead)) == 1

    customer = Contact(last_name="王", phone="+86 139 0000 1111")
    session.add(customer)
    await session.flush()
    await index_record(session, customer)
    known = await capture_lead(session, form, {"last_name": "Wang", "mobile": "13900001111"}, "hi")
    assert (known.record_type, known.record_id, known.new) == ("contact", customer.id, False)
    assert customer.last_name == "王"  # a customer's record is not rewritten by a web form
    assert [a.subject for a in await timeline(session, "contact", customer.id)] == [
        "Web form: contact-us"
    ]
    assert await session.scalar(select(func.count()).select_from(Lead)) == 1
    assert await session.get(User, owner.id) is not None


async def test_a_revoked_or_rotated_away_key_finds_no_form(session: AsyncSession) -> None:
    await create_user(session, "sales", None)
    await create_user(session, "li", None)
    key = await create_web_form(session, "contact-us", origins=["https://www.jinlong.cn"])
    form = await web_form_named(session, "contact-us")
    assert form.key_hint == key[-4:] and form.key_made_at is not None
    made = form.key_made_at

    await revoke_web_form(session, form)
    assert form.revoked_at is not None
    assert await form_for_key(session, key) is None
    assert await allowed_origins(session) == set()
    [row] = await list_web_forms(session)
    assert (row.name, row.active) == ("contact-us", False)

    # A new key switches the form back on; the old key stays dead.
    new_key = await rotate_web_form_key(session, form)
    assert new_key != key and new_key.startswith("rpf_")
    assert await form_for_key(session, key) is None
    found = await form_for_key(session, new_key)
    assert found is not None and found.id == form.id and found.key_hint == new_key[-4:]
    assert form.key_made_at is not None and form.key_made_at >= made
    again = await rotate_web_form_key(session, form)
    assert await form_for_key(session, new_key) is None
    assert await form_for_key(session, again) is not None

    await update_web_form(session, form, owner="li", thank_you_url="https://www.jinlong.cn/ok",
                          origins=["HTTPS://WWW.Jinlong.cn:8443/", "http://[::1]:8080"])  # fmt: skip
    [row] = await list_web_forms(session)
    assert (row.owner, row.origins, row.thank_you_url, row.active) == (
        "li", ("https://www.jinlong.cn:8443", "http://[::1]:8080"), "https://www.jinlong.cn/ok",
        True)  # fmt: skip
    for origins, thanks in (
        (["https://www.jinlong.cn/contact"], None),
        (["ftp://www.jinlong.cn"], None),
        (["https://user@www.jinlong.cn"], None),
        (["https://www.jinlong.cn:99999"], None),
        ([], "javascript:alert(1)"),
        ([], "/thanks.html"),
    ):
        with pytest.raises(ValidationError):
            await update_web_form(session, form, owner=None, origins=origins,
                                  thank_you_url=thanks)  # fmt: skip
    with pytest.raises(NotFound):
        await update_web_form(session, form, owner="nobody", origins=[], thank_you_url=None)
    with pytest.raises(NotFound):
        await web_form_named(session, "other")
