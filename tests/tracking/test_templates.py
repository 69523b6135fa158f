"""Mail templates: merge fields, languages, escaping, the sandbox, and refusal on error."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from store.db import Store
from store.errors import ValidationError
from store.models import Account, Contact, MailTemplate, Opportunity, OutboxEntry, PipelineStage
from tracking.compose import Sender
from tracking.templates import find_template, merge_fields, queue_from_template, render

SENDER = Sender("sales@rapport.test", "销售部")


async def setup_records(store: Store) -> tuple[int, int, int]:
    async with store.session() as session, session.begin():
        account = Account(name="金龙钢管有限公司")
        person = Contact(first_name="芳", last_name="王", email="wang.fang@jinlong.cn")
        session.add_all([account, person])
        await session.flush()
        stage = PipelineStage(pipeline="test", name="报价")
        session.add(stage)
        await session.flush()
        deal = Opportunity(
            name="不锈钢管 200 吨",
            account_id=account.id,
            amount=Decimal("120000.00"),
            stage_id=stage.id,
        )
        session.add(deal)
        session.add_all([
            MailTemplate(name="quote", language="zh-CN", subject="{{ account.name }} 报价单",
                         text="{{ contact.last_name }}{{ contact.first_name }}您好：\n金额 {{ opportunity.amount }} 元。",
                         html="<p>{{ contact.last_name }}您好，{{ opportunity.name }}</p>"),
            MailTemplate(name="quote", language="en", subject="Quotation for {{ account.name }}",
                         text="Dear {{ contact.first_name }}, the amount is {{ opportunity.amount }}."),
        ])  # fmt: skip
        await session.flush()
        return person.id, account.id, deal.id


async def test_templates_merge_crm_fields_in_each_language(store: Store) -> None:
    contact_id, account_id, deal_id = await setup_records(store)
    async with store.session() as session:
        fields = await merge_fields(
            session, contact_id=contact_id, account_id=account_id, opportunity_id=deal_id
        )
        chinese = render(await find_template(session, "quote", "zh-CN"), fields)
        english = render(await find_template(session, "quote", "en"), fields)
        fallback = await find_template(session, "quote", "fr")
    assert chinese.subject == "金龙钢管有限公司 报价单"
    assert chinese.text == "王芳您好：\n金额 120000.00 元。"
    assert chinese.html == "<p>王您好，不锈钢管 200 吨</p>"
    assert english.subject == "Quotation for 金龙钢管有限公司" and english.html is None
    assert fallback.language == "zh-CN"  # no French: Chinese first


async def test_html_escapes_merged_values_and_the_sandbox_holds() -> None:
    template = MailTemplate(name="t", subject="Hi {{ contact.first_name }}", text="x",
                            html="<b>{{ contact.first_name }}</b>")  # fmt: skip
    rendered = render(template, {"contact": {"first_name": "<script>alert(1)</script>"}})
    assert rendered.html == "<b>&lt;script&gt;alert(1)&lt;/script&gt;</b>"
    escape = MailTemplate(
        name="t", subject="s", text="{{ ''.__class__.__mro__[1].__subclasses__() }}"
    )
    with pytest.raises(ValidationError) as refused:
        render(escape, {})
    assert "text" in refused.value.errors and "SecurityError" in refused.value.errors["text"]


async def test_a_template_that_fails_queues_nothing_and_says_why(store: Store) -> None:
    contact_id, _account_id, _deal_id = await setup_records(store)
    async with store.session() as session, session.begin():
        session.add(MailTemplate(name="broken", language="zh-CN", subject="{{ contact.nickname }}",
                                 text="{% if %}"))  # fmt: skip
    with pytest.raises(ValidationError) as refused:
        await queue_from_template(store, "broken", "zh-CN", ["wang.fang@jinlong.cn"], SENDER,
                                  contact_id=contact_id)  # fmt: skip
    assert set(refused.value.errors) == {"subject", "text"}
    assert (
        "nickname" in refused.value.errors["subject"] and "line 1" in refused.value.errors["text"]
    )
    async with store.session() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxEntry)) == 0


async def test_a_template_queues_a_rendered_mail(store: Store) -> None:
    contact_id, account_id, deal_id = await setup_records(store)
    email_id = await queue_from_template(
        store, "quote", "en", ["wang.fang@jinlong.cn"], SENDER, records=[("opportunity", deal_id)],
        contact_id=contact_id, account_id=account_id, opportunity_id=deal_id,
    )  # fmt: skip
    async with store.session() as session:
        entry = await session.scalar(select(OutboxEntry).where(OutboxEntry.email_id == email_id))
        assert entry is not None and entry.state == "queued"
