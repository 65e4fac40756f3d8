"""Owner-to-peer notices about second opinions, received at the consultant's node.

::

    POST /federation/opinion-notices   (requester's node -> consultant's node, signed, body-bound)

The requester's node keeps the request; when its consultant lives at another node (a new
request sent to them, or a reminder of a late one), it cannot reach that user's inbox or mail.
It signs a notice naming the consultant (a username, or none for the centre's pool), the
request's id at the sender and the slides' pseudonyms; this node notifies only ITS OWN active
clinicians of that centre, in-app and by e-mail, with a text it writes itself (nothing
identifying crosses). Every notice is audited.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from share.authz import Role
from share.errors import InvalidInputError
from share.federation import FederationAccess
from share.federation_opinions_router import SignedDep, parse_body
from share.federation_router import OwnerState
from share.models import User
from share.opinions import Opinions

__all__ = ["notices_router", "own_clinicians"]

_PSEUDONYM = r"^[A-Za-z0-9._-]{1,64}$"
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")

notices_router = APIRouter(prefix="/federation", tags=["federation"])


class ConsultantBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    centre: str = Field(min_length=1, max_length=100)
    username: str | None = Field(default=None, max_length=100)


class NoticeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    opinion_id: int = Field(ge=1, le=2**63 - 1)
    kind: Literal["reminder", "requested"]
    consultant: ConsultantBody
    pseudonyms: list[Annotated[str, Field(pattern=_PSEUDONYM)]] = Field(max_length=50)


def own_clinicians(opinions: Opinions, centres: set[str], centre: str, username: str) -> list[int]:
    """Active pathologists/admins of ``centre`` if it is one of ``centres`` (this node's own);
    only ``username`` when given. Remote users' rows (``lille:x``) never count."""
    if centre not in centres:
        return []
    q = select(User.id).where(
        User.centre_id == centre,
        User.active.is_(True),
        User.role.in_([Role.PATHOLOGIST.value, Role.ADMIN.value]),
        User.username.not_like("%:%"),
    )
    if username:
        q = q.where(User.username == username)
    with opinions.db.session() as s:
        return list(s.scalars(q))


def _deliver(opinions: Opinions, peer: str, notice: NoticeBody, users: list[int]) -> int:
    what = (
        f"Reminder: second opinion #{notice.opinion_id} from {peer} is overdue"
        if notice.kind == "reminder"
        else f"Second opinion #{notice.opinion_id} requested by {peer}"
    )
    text = f"{what}; slides {', '.join(notice.pseudonyms)}"
    for user_id in users:
        opinions.notifier.notify(user_id, "opinion", text)  # the id is the sender's, not ours
    return len(users)


@notices_router.post("/opinion-notices")
async def opinion_notice(signed: SignedDep, request: Request) -> dict[str, int]:
    """A peer's notice about one of its requests asked of our users; answers how many told."""
    claims, data = signed
    notice = parse_body(NoticeBody, data)
    state: OwnerState = request.app.state.federation_owner
    opinions: Opinions = request.app.state.opinions
    peer = str(claims.get("iss"))
    username = notice.consultant.username or ""
    if username and not _USERNAME.fullmatch(username):
        raise InvalidInputError("consultant.username is not a username")
    own = set(opinions.accounts.settings.centres) - set(state.config.peers)
    users = await run_in_threadpool(
        own_clinicians, opinions, own, notice.consultant.centre, username
    )
    told = await run_in_threadpool(_deliver, opinions, peer, notice, users)
    _audit(state, claims, notice.opinion_id, "" if told else "no_such_consultant")
    return {"notified": told}


def _audit(state: OwnerState, claims: Mapping[str, Any], opinion_id: int, refused: str) -> None:
    if state.audit is None:
        return
    state.audit(
        FederationAccess(
            at=state.clock(),
            peer=str(claims.get("iss")),
            subject=str(claims.get("sub")),
            share_id=f"opinion:{opinion_id}",
            action="opinion.notice",
            allowed=not refused,
            reason=refused,
            slide_id=None,
            owner_centre=state.config.node,
        )
    )
