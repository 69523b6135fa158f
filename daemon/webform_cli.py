"""``rapport webform create``: a company site's lead form and its key, printed once."""

from __future__ import annotations

import argparse
import sys

from daemon.config import Config

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


async def run(config: Config, args: argparse.Namespace) -> int:
    from store.db import open_store
    from store.errors import NotFound, ValidationError
    from store.migrate import upgrade_to_head
    from store.web_forms import create_web_form

    await upgrade_to_head(config.store.url)
    async with open_store(config.store.url, config.store.blob_dir) as store:
        try:
            async with store.session() as session, session.begin():
                key = await create_web_form(
                    session, args.name, owner=args.owner, origins=args.origin,
                    thank_you_url=args.thank_you_url,
                )  # fmt: skip
        except NotFound as err:
            print(f"rapport: {err}", file=sys.stderr)
            return EXIT_CONFIG
        except ValidationError as err:
            for field, why in err.errors.items():
                print(f"rapport: {field}: {why}", file=sys.stderr)
            return EXIT_CONFIG
    print(key)
    return 0
