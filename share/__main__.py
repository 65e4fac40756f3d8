"""CLI of the share package: ``iain user|audit ...``, ``iain db upgrade``, ``iain opinions remind``.

``iain user add NAME --centre caen --role pathologist`` reads the password from stdin.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from pathlib import Path

from share import audit
from share.accounts import Accounts
from share.authz import Role
from share.config import ShareSettings
from share.db import open_database
from share.demo import create_demo_accounts
from share.errors import ShareError
from share.federation import FederationConfig
from share.federation_errors import FederationError
from share.notify import MailSettings, Notifier
from share.opinions import Opinions
from share.peers import HttpPeerClient, PeerClient
from share.shares import DbShareRegistry
from share.signing import NodeKey

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", type=Path, help="data directory (SQLite file iain.db)")
    common.add_argument("--db", help="database URL (overrides --data; SHARE_DATABASE_URL)")
    parser = argparse.ArgumentParser(prog="iain")
    top = parser.add_subparsers(dest="command", required=True)

    user = top.add_parser("user", help="manage user accounts").add_subparsers(
        dest="action", required=True
    )
    add = user.add_parser("add", parents=[common], help="add a user (password from stdin)")
    add.add_argument("name")
    add.add_argument("--centre", required=True)
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument("--oidc-only", action="store_true", help="no password: OIDC login only")
    add.add_argument("--oidc-subject", help="link the account to this OIDC 'sub' claim")
    user.add_parser("demo", parents=[common], help="create the demo accounts and print them")

    aud = top.add_parser("audit", help="verify or export the audit trail").add_subparsers(
        dest="action", required=True
    )
    aud.add_parser("verify", parents=[common], help="check the hash chain")
    export = aud.add_parser("export", parents=[common], help="print a centre's records")
    export.add_argument("--centre", required=True)
    export.add_argument("--slide-id")
    export.add_argument("--format", choices=["json", "csv"], default="json")

    dbp = top.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    dbp.add_parser("upgrade", parents=[common], help="apply migrations")

    ops = top.add_parser("opinions", help="second-opinion requests").add_subparsers(
        dest="action", required=True
    )
    remind = ops.add_parser(
        "remind", parents=[common], help="remind consultants of overdue requests (run from cron)"
    )
    remind.add_argument("--smtp-host", help="SMTP server (default SHARE_SMTP_HOST; none: in-app)")
    remind.add_argument("--smtp-port", type=int, help="SMTP port (default SHARE_SMTP_PORT or 25)")
    return parser


def _settings(args: argparse.Namespace) -> ShareSettings:
    env = dict(os.environ)
    if args.data is not None:
        env["SHARE_DATA_DIR"] = str(args.data)
    if args.db is not None:
        env["SHARE_DATABASE_URL"] = args.db
    return ShareSettings.from_env(env)


def _read_password() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    return sys.stdin.readline().rstrip("\r\n")


def _run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    db = open_database(settings.url)
    try:
        if args.command == "db":
            print(f"schema up to date ({db.dialect})")
            return 0
        if args.command == "audit":
            if args.action == "verify":
                result = audit.verify(db)
                print(f"audit trail intact: {result.records} records")
                return 0
            rows = audit.records(db, centre_id=args.centre, slide_id=args.slide_id)
            export = audit.export_csv if args.format == "csv" else audit.export_json
            sys.stdout.write(export(rows) + ("" if args.format == "csv" else "\n"))
            return 0
        accounts = Accounts(db, settings)
        accounts.ensure_centres()
        if args.command == "opinions":
            return _remind(args, accounts)
        if args.action == "demo":
            for a in create_demo_accounts(accounts):
                print(f"{a.username:<12} {a.centre:<6} {a.role:<12} password: {a.password}")
            return 0
        password = None if args.oidc_only else _read_password()
        p = accounts.add_user(args.name, args.centre, args.role, password, args.oidc_subject)
        print(f"user {p.username} added ({p.role.value}, {p.centre})")
        return 0
    finally:
        db.dispose()


def _remind(args: argparse.Namespace, accounts: Accounts) -> int:
    env = dict(os.environ)
    if args.smtp_host:
        env["SHARE_SMTP_HOST"] = args.smtp_host
    if args.smtp_port:
        env["SHARE_SMTP_PORT"] = str(args.smtp_port)
    notifier = Notifier(accounts.db, MailSettings.from_env(env))
    opinions = Opinions(accounts, DbShareRegistry(accounts.db), notifier)
    opinions.peers = _peer_clients(accounts.settings)
    try:
        count = opinions.send_reminders()
    finally:
        for client in opinions.peers.values():
            client.close()
    print(f"{count} overdue second-opinion requests reminded")
    return 0


def _peer_clients(settings: ShareSettings) -> dict[str, PeerClient]:
    """The server's peers (SHARE_FEDERATION_FILE, SHARE_NODE_KEY_FILE): remote consultants are
    reminded through their node; none without federation."""
    if not settings.federation_file:
        return {}
    config = FederationConfig.from_file(settings.federation_file)
    key = NodeKey.from_file(config.node, settings.node_key_file)
    return {name: HttpPeerClient(key, peer) for name, peer in config.peers.items()}


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``argv`` starts with the subcommand (user, audit, db, opinions)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args)
    except (ShareError, FederationError) as exc:
        print(f"iain {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
