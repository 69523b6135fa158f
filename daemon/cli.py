"""The ``rapport`` command: run the daemon, check the config, migrate, manage users."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from daemon import calls_cli, mail_cli, webform_cli
from daemon.config import Config, load_config
from daemon.logs import setup_logging
from store.errors import ConfigError, ValidationError

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rapport", description="Rapport CRM daemon")
    parser.add_argument(
        "--config", type=Path, help="rapport.toml (default: ./rapport.toml or $RAPPORT_CONFIG)"
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the daemon (the default)")
    check = sub.add_parser(
        "check-config", help="validate the configuration and print it, secrets masked"
    )
    check.add_argument("--quiet", action="store_true", help="print nothing when it is valid")
    sub.add_parser("migrate", help="migrate the store to the newest schema")
    mail_cli.add_parser(sub)
    calls_cli.add_parser(sub)
    webform_cli.add_parser(sub)
    user = sub.add_parser("user", help="manage users").add_subparsers(
        dest="user_command", required=True
    )
    create = user.add_parser("create", help="create a user")
    create.add_argument("--username", required=True)
    create.add_argument("--role", default="agent")
    create.add_argument("--display-name", default="")
    create.add_argument("--email")
    create.add_argument("--password-env", help="read the password from this environment variable")
    token = sub.add_parser("token", help="API tokens").add_subparsers(
        dest="token_command", required=True
    )
    make = token.add_parser("create", help="create a token for a user and print it once")
    make.add_argument("--user", required=True, help="the user name the token acts as")
    make.add_argument("--name", default="", help="what the token is for")
    return parser


def _load(path: Path | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as err:
        print(f"rapport: the configuration has {len(err.problems)} problem(s):", file=sys.stderr)
        for problem in err.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


async def _migrate(config: Config) -> int:
    from store.migrate import upgrade_to_head

    print(f"store at revision {await upgrade_to_head(config.store.url)}")
    return 0


async def _create_user(config: Config, args: argparse.Namespace) -> int:
    import getpass

    from store.db import open_store
    from store.migrate import upgrade_to_head
    from store.users import create_user

    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            print(f"rapport: {args.password_env} is not set", file=sys.stderr)
            return EXIT_CONFIG
    else:
        password = getpass.getpass(f"password for {args.username}: ")
    await upgrade_to_head(config.store.url)
    async with open_store(config.store.url, config.store.blob_dir) as store:
        try:
            async with store.session() as session, session.begin():
                user = await create_user(
                    session,
                    args.username,
                    password,
                    role=args.role,
                    display_name=args.display_name,
                    email=args.email,
                )
        except ValidationError as err:
            for field, why in err.errors.items():
                print(f"rapport: {field}: {why}", file=sys.stderr)
            return EXIT_CONFIG
    print(f"created user {user.username!r} (id {user.id}, role {args.role})")
    return 0


async def _create_token(config: Config, args: argparse.Namespace) -> int:
    from store.api_tokens import create_api_token
    from store.db import open_store
    from store.errors import NotFound
    from store.migrate import upgrade_to_head

    await upgrade_to_head(config.store.url)
    async with open_store(config.store.url, config.store.blob_dir) as store:
        try:
            async with store.session() as session, session.begin():
                token = await create_api_token(session, args.user, args.name)
        except NotFound as err:
            print(f"rapport: {err}", file=sys.stderr)
            return EXIT_CONFIG
    print(token)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "run"
    if command == "mail" and args.mail_command == "inspect":
        return mail_cli.inspect_paths(args.paths)  # needs no configuration
    config = _load(args.config)
    setup_logging(config.log.level, config.log.json_lines)
    if command == "check-config":
        if not args.quiet:
            print(json.dumps(config.masked_dict(), indent=2, ensure_ascii=False))
        return 0
    if command == "migrate":
        return asyncio.run(_migrate(config))
    if command == "mail":
        return asyncio.run(mail_cli.run(config, args))
    if command == "calls":
        return calls_cli.run(config, args)
    if command == "user":
        return asyncio.run(_create_user(config, args))
    if command == "token":
        return asyncio.run(_create_token(config, args))
    if command == "webform":
        return asyncio.run(webform_cli.run(config, args))
    from daemon.app import run_daemon

    return asyncio.run(run_daemon(config))


if __name__ == "__main__":
    sys.exit(main())
