"""What the admin pages need from the other packages, handed to the web UI by the daemon.

The web package imports only the store; these adapters put the mail-out
renderer, the mail-in pipeline's replay and the configured connections
behind the protocols of ``web.admin_base``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from daemon.config import Config
from daemon.connections import ConfiguredConnections
from daemon.supervisor import Supervisor
from scanner.pipeline import MailPipeline
from store.errors import ValidationError
from store.models import MailTemplate
from tracking.templates import MERGE_FIELDS, render
from web.admin_base import AdminServices, ReplayOutcome, TemplateCheck

# Typed samples where a template may format the value (``{{ opportunity.amount | round }}``).
_TYPED_SAMPLES: dict[str, Any] = {"amount": Decimal("12345.00"),
                                  "expected_close": dt.date(2026, 12, 31)}  # fmt: skip
# The merge fields' names per record, as the renderer offers them (``merge_fields``).
_RECORD_NAMES = {"Contact": "contact", "Lead": "lead", "Account": "account",
                 "Opportunity": "opportunity", "User": "sender"}  # fmt: skip


def sample_fields() -> dict[str, dict[str, Any]]:
    """Every merge field a template may use, with a sample value: ``contact.first_name`` ..."""
    return {
        _RECORD_NAMES[model.__name__]: {
            name: _TYPED_SAMPLES.get(name, f"[{_RECORD_NAMES[model.__name__]}.{name}]")
            for name in names
        }
        for model, names in MERGE_FIELDS.items()
    }


class SampleRenderer:
    """``TemplateChecker``: the outbox's own sandboxed renderer, with sample merge fields.

    A template that renders here renders when mail is sent, for any record the
    template names; one that fails is refused with the renderer's message,
    which names the part and the line.
    """

    def check(self, subject: str, text: str, html: str | None) -> TemplateCheck:
        template = MailTemplate(name="check", language="", subject=subject, text=text, html=html)
        try:
            rendered = render(template, sample_fields())
        except ValidationError as err:
            return TemplateCheck(errors=err.errors)
        return TemplateCheck(errors={}, subject=rendered.subject, text=rendered.text)


class PipelineReplay:
    """``QuarantineReplay``: the pipeline's replay, as ``rapport mail quarantine replay``."""

    def __init__(self, pipeline: MailPipeline) -> None:
        self.pipeline = pipeline

    async def replay(self, journal_id: int) -> ReplayOutcome:
        outcome = await self.pipeline.replay(journal_id)
        return ReplayOutcome(state=outcome.state, error=outcome.error)


def admin_services(
    config: Config, supervisor: Supervisor | None, pipeline: MailPipeline
) -> AdminServices:
    return AdminServices(
        templates=SampleRenderer(),
        quarantine=PipelineReplay(pipeline),
        connections=ConfiguredConnections(config, supervisor),
    )
