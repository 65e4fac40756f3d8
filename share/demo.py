"""Demo accounts and slide assignment for ``make demo`` (known passwords: never in production)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from share.accounts import Accounts
from share.config import ShareSettings
from share.db import open_database
from share.errors import ConflictError

__all__ = [
    "DEMO_ACCOUNTS",
    "DemoAccount",
    "assign_demo_slides",
    "create_demo_accounts",
    "prepare_demo",
]


@dataclass(frozen=True)
class DemoAccount:
    username: str
    centre: str
    role: str
    password: str


DEMO_ACCOUNTS: tuple[DemoAccount, ...] = (
    DemoAccount("caen-patho", "caen", "pathologist", "demo-caen-patho"),
    DemoAccount("lille-patho", "lille", "pathologist", "demo-lille-patho"),
    DemoAccount("rouen-patho", "rouen", "pathologist", "demo-rouen-patho"),
    DemoAccount("caen-admin", "caen", "admin", "demo-caen-admin"),
    DemoAccount("ml", "caen", "ml", "demo-ml-engineer"),
    DemoAccount("operator", "caen", "operator", "demo-operator"),
)


def create_demo_accounts(accounts: Accounts) -> list[DemoAccount]:
    """Create the demo accounts that do not exist yet; returns all of them for printing."""
    accounts.ensure_centres([a.centre for a in DEMO_ACCOUNTS])
    for account in DEMO_ACCOUNTS:
        with contextlib.suppress(ConflictError):
            accounts.add_user(account.username, account.centre, account.role, account.password)
    return list(DEMO_ACCOUNTS)


def assign_demo_slides(accounts: Accounts, slide_ids: Sequence[str]) -> dict[str, str]:
    """Spread registered slides over the centres round-robin (sorted ids, so it is stable)."""
    centres = list(accounts.settings.centres)
    out = {}
    for i, slide_id in enumerate(sorted(slide_ids)):
        centre = centres[i % len(centres)]
        accounts.assign_slide(slide_id, centre)
        out[slide_id] = centre
    return out


def prepare_demo(settings: ShareSettings, slides: Sequence[tuple[str, str]]) -> list[DemoAccount]:
    """For ``iain demo``: migrate the database, register ``(slide_id, name)`` pairs, spread
    them over the centres and create the demo accounts; returns the accounts to print."""
    db = open_database(settings.url)
    try:
        accounts = Accounts(db, settings)
        accounts.ensure_centres()
        accounts.register_slides(slides)
        assign_demo_slides(accounts, [slide_id for slide_id, _ in slides])
        return create_demo_accounts(accounts)
    finally:
        db.dispose()
