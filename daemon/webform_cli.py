"""``rapport webform create|list|revoke|rotate``: a company site's lead forms and their keys.

A key is printed once, when a form is made or its key replaced; the store keeps
its hash.  Revoking switches a form off (its key is refused like a wrong one);
rotating gives it a new key, kills the old one at once and switches it on again.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from daemon.config import Config

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

EXIT_CONFIG = 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    forms = sub.add_parser("webform", help="web site lead forms").add_subparsers(
        dest="webform_command", required=True
    )
    make = forms.add_parser("create", help="create a form and print its key once")
    make.add_argument("--name", required=True, help="what the form is, e.g. contact-us")
    make.add_argument("--owner", help="the user name its leads belong to (else unassigned)")
    make.add_argument("--origin", action="append", default=[],
                      help="a site whose pages may post it, e.g. https://www.example.cn "
                           "(repeat for several)")  # fmt: skip
    make.add_argument("--thank-you-url", help="where a browser goes after posting the form")
    forms.add_parser("list", help="every form: name, state, owner, origins, key's last characters")
    revoke = forms.add_parser("revoke", help="switch a form off: its key is refused from now on")
    revoke.add_argument("name")
    rotate = forms.add_parser(
        "rotate", help="give a form a new key (printed once); the old key stops working at once"
    )
    rotate.add_argument("name")


async def run(config: Config, args: argparse.Namespace) -> int:
    from store.db import open_store
    from store.errors import NotFound, ValidationError
    from store.migrate import upgrade_to_head

    await upgrade_to_head(config.store.url)
    async with open_store(config.store.url, config.store.blob_dir) as store:
        try:
            async with store.session() as session, session.begin():
                said = await _command(session, args)
        except NotFound as err:
            print(f"rapport: {err}", file=sys.stderr)
            return EXIT_CONFIG
        except ValidationError as err:
            for field, why in err.errors.items():
                print(f"rapport: {field}: {why}", file=sys.stderr)
            return EXIT_CONFIG
    if said:
        print(said)
    return 0


async def _command(session: AsyncSession, args: argparse.Namespace) -> str:
    """What the verb prints on success (after its transaction commits)."""
    from store.web_forms import (
        create_web_form,
        list_web_forms,
        revoke_web_form,
        rotate_web_form_key,
        web_form_named,
    )

    command = args.webform_command
    if command == "create":
        return await create_web_form(
            session, args.name, owner=args.owner, origins=args.origin,
            thank_you_url=args.thank_you_url,
        )  # fmt: skip
    if command == "list":
        lines = []
        for row in await list_web_forms(session):
            used = row.last_used_at.isoformat(timespec="seconds") if row.last_used_at else "-"
            lines.append("\t".join([
                row.name, "active" if row.active else "revoked", row.owner or "-",
                ",".join(row.origins) or "-", row.thank_you_url or "-",
                f"...{row.key_hint}" if row.key_hint else "-",
                row.created_at.isoformat(timespec="seconds"), used,
            ]))  # fmt: skip
        return "\n".join(lines)
    form = await web_form_named(session, args.name)
    if command == "revoke":
        await revoke_web_form(session, form)
        return f"web form {form.name!r} revoked: its key is refused from now on"
    return await rotate_web_form_key(session, form)
