"""HTTP edge of second opinions and notifications: ``/api/opinions`` and ``/api/notifications``.

::

    POST /api/opinions                      create a draft (201)
    GET  /api/opinions                      mine: asked by me, or of me / my centre's pool
    GET  /api/opinions/{id}                 one request
    POST /api/opinions/{id}/send|accept|decline|answer|close
    GET  /api/opinions/{id}/report.html     the whole thread as a printable HTML report
    GET  /api/notifications                 my in-app notices
    POST /api/notifications/read            mark some read

``install_opinions`` puts the service on ``app.state.opinions`` and wires the share grant into
the slide access hook, so a consultant of another centre on this node views shared slides.
"""

from __future__ import annotations

import html
import os
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from share import shares_router
from share.accounts import Accounts
from share.authz import Principal
from share.notify import MailSettings, Notifier
from share.opinions import Agreement, Answer, OpinionDraft, Opinions, PinnedRegion, Urgency
from share.shares import DbShareRegistry
from share.web import SlideAccess, principal_of

__all__ = ["install_opinions", "render_report", "router"]

# Database ids: anything outside SQL's BIGINT cannot name a row (422, never a 500).
BIGINT_MAX = 2**63 - 1
OpinionId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
DbId = Annotated[int, Field(ge=1, le=BIGINT_MAX)]
Pixel = 2**31 - 1  # region coordinates: level-0 pixels, far beyond any slide

router = APIRouter(prefix="/api", tags=["opinions"])

PrincipalDep = Annotated[Principal, Depends(principal_of)]


def _opinions(request: Request) -> Opinions:
    opinions: Opinions = request.app.state.opinions
    return opinions


OpinionsDep = Annotated[Opinions, Depends(_opinions)]


class RegionBody(BaseModel):
    slide_id: str = Field(min_length=1, max_length=200)
    x: int = Field(ge=0, le=Pixel)
    y: int = Field(ge=0, le=Pixel)
    w: int = Field(gt=0, le=Pixel)
    h: int = Field(gt=0, le=Pixel)


class ConsultantBody(BaseModel):
    centre: str = Field(min_length=1, max_length=64)
    username: str = Field(default="", max_length=150)  # "" = the centre's pool


class DraftBody(BaseModel):
    slide_ids: list[str] = Field(min_length=1, max_length=50)
    regions: list[RegionBody] = Field(default_factory=list, max_length=200)
    annotation_ids: list[DbId] = Field(default_factory=list, max_length=1000)
    question: str = Field(min_length=1, max_length=10_000)
    urgency: Urgency = Urgency.ROUTINE
    due_at: datetime
    consultant: ConsultantBody


class DeclineBody(BaseModel):
    reason: str = Field(default="", max_length=2000)


class AnswerBody(BaseModel):
    text: str = Field(min_length=1, max_length=50_000)
    agreement: Agreement
    diagnosis: str | None = Field(default=None, max_length=500)
    classification: str | None = Field(default=None, max_length=500)


class ReadBody(BaseModel):
    ids: list[DbId] = Field(max_length=1000)


@router.post("/opinions", status_code=201)
def create_opinion(body: DraftBody, who: PrincipalDep, opinions: OpinionsDep) -> dict[str, Any]:
    draft = OpinionDraft(
        slide_ids=body.slide_ids,
        question=body.question,
        due_at=body.due_at if body.due_at.tzinfo else body.due_at.replace(tzinfo=UTC),
        consultant_centre=body.consultant.centre,
        consultant_name=body.consultant.username,
        urgency=body.urgency,
        regions=[PinnedRegion(r.slide_id, r.x, r.y, r.w, r.h) for r in body.regions],
        annotation_ids=body.annotation_ids,
    )
    return opinions.create(who, draft)


@router.get("/opinions")
def list_opinions(who: PrincipalDep, opinions: OpinionsDep) -> list[dict[str, Any]]:
    return opinions.mine(who)


@router.get("/opinions/{opinion_id}")
def get_opinion(opinion_id: OpinionId, who: PrincipalDep, opinions: OpinionsDep) -> dict[str, Any]:
    return opinions.get(who, opinion_id)


@router.post("/opinions/{opinion_id}/send")
def send_opinion(opinion_id: OpinionId, who: PrincipalDep, opinions: OpinionsDep) -> dict[str, Any]:
    """Send a draft; to another centre this shares the slides with the consultant."""
    return opinions.send(who, opinion_id)


@router.post("/opinions/{opinion_id}/accept")
def accept_opinion(
    opinion_id: OpinionId, who: PrincipalDep, opinions: OpinionsDep
) -> dict[str, Any]:
    return opinions.accept(who, opinion_id)


@router.post("/opinions/{opinion_id}/close")
def close_opinion(
    opinion_id: OpinionId, who: PrincipalDep, opinions: OpinionsDep
) -> dict[str, Any]:
    """Close the request and revoke the shares it created."""
    return opinions.close(who, opinion_id)


@router.post("/opinions/{opinion_id}/decline")
def decline_opinion(
    opinion_id: OpinionId, body: DeclineBody, who: PrincipalDep, opinions: OpinionsDep
) -> dict[str, Any]:
    return opinions.decline(who, opinion_id, body.reason)


@router.post("/opinions/{opinion_id}/answer")
def answer_opinion(
    opinion_id: OpinionId, body: AnswerBody, who: PrincipalDep, opinions: OpinionsDep
) -> dict[str, Any]:
    answer = Answer(body.text, body.agreement, body.diagnosis, body.classification)
    return opinions.answer(who, opinion_id, answer)


@router.get("/opinions/{opinion_id}/report.html", response_class=HTMLResponse)
def opinion_report(opinion_id: OpinionId, who: PrincipalDep, opinions: OpinionsDep) -> HTMLResponse:
    """The thread as HTML: slides by pseudonym only (no slide names, ids or file names)."""
    opinion = opinions.get(who, opinion_id)
    thread = opinions.thread(who, opinion_id)
    return HTMLResponse(render_report(opinion, thread))


@router.get("/notifications")
def notifications(
    request: Request, who: PrincipalDep, unread: bool = False
) -> list[dict[str, Any]]:
    notifier: Notifier = request.app.state.opinions.notifier
    return notifier.for_user(who.user_id, unread_only=unread)


@router.post("/notifications/read")
def notifications_read(request: Request, body: ReadBody, who: PrincipalDep) -> dict[str, int]:
    notifier: Notifier = request.app.state.opinions.notifier
    return {"read": notifier.mark_read(who.user_id, body.ids)}


def render_report(opinion: dict[str, Any], thread: list[dict[str, Any]]) -> str:
    """A self-contained HTML page (every value escaped); slides appear by pseudonym only."""
    e = html.escape
    pseudonym = {s["slide_id"]: s["pseudonym"] for s in opinion["slides"]}
    consultant = opinion["consultant"]
    who = consultant["name"] or "pool"
    rows = [
        f"<h1>Second opinion #{opinion['id']}</h1>",
        "<table>",
        f"<tr><th>State</th><td>{e(opinion['state'])}</td></tr>",
        f"<tr><th>Urgency</th><td>{e(opinion['urgency'])}</td></tr>",
        f"<tr><th>Due</th><td>{e(opinion['due_at'])}</td></tr>",
        f"<tr><th>Requested by</th><td>{e(opinion['requester_centre'])}</td></tr>",
        f"<tr><th>Consultant</th><td>{e(who)} @ {e(consultant['centre'])}</td></tr>",
        "</table>",
        "<h2>Clinical question</h2>",
        f"<p class='question'>{e(opinion['question'])}</p>",
        "<h2>Slides</h2><ul>",
        *(f"<li>{e(s['pseudonym'])}</li>" for s in opinion["slides"]),
        "</ul>",
    ]
    if opinion["regions"]:
        rows.append("<h2>Pinned regions (level-0 pixels)</h2><ul>")
        rows += [
            f"<li>{e(pseudonym.get(r['slide_id'], '?'))}: x={int(r['x'])} y={int(r['y'])} "
            f"w={int(r['w'])} h={int(r['h'])}</li>"
            for r in opinion["regions"]
        ]
        rows.append("</ul>")
    if opinion["annotation_ids"]:
        ids = ", ".join(str(int(i)) for i in opinion["annotation_ids"])
        rows.append(f"<p>Annotations: {ids}</p>")
    answer = opinion["answer"]
    rows.append("<h2>Answer</h2>")
    if answer:
        rows += [
            f"<p class='answer'>{e(answer['text'])}</p>",
            "<table>",
            f"<tr><th>Agreement</th><td>{e(answer['agreement'])}</td></tr>",
            f"<tr><th>Diagnosis</th><td>{e(answer.get('diagnosis') or '')}</td></tr>",
            f"<tr><th>Classification</th><td>{e(answer.get('classification') or '')}</td></tr>",
            f"<tr><th>By</th><td>{e(answer['by'])} @ {e(answer['centre'])}</td></tr>",
            "</table>",
        ]
    else:
        rows.append("<p>(no answer yet)</p>")
    if opinion["decline_reason"]:
        rows.append(f"<p>Declined: {e(opinion['decline_reason'])}</p>")
    rows.append("<h2>Thread (audit trail)</h2><table>")
    rows.append("<tr><th>#</th><th>When</th><th>Who</th><th>What</th><th>Hash</th></tr>")
    for rec in thread:
        rows.append(
            f"<tr><td>{int(rec['seq'])}</td><td>{e(rec['at'])}</td><td>{e(rec['actor'])}</td>"
            f"<td>{e(rec['action'])}</td><td><code>{e(rec['hash'][:16])}</code></td></tr>"
        )
    rows.append("</table>")
    body = "\n".join(rows)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Second opinion #{opinion['id']}</title>"
        "<style>body{font-family:sans-serif;max-width:50em;margin:auto}"
        "th{text-align:left;padding-right:1em}</style></head>"
        f"<body>{body}</body></html>"
    )


def install_opinions(
    app: FastAPI, accounts: Accounts, mail: MailSettings | None = None
) -> Opinions:
    """Create the share registry, notifier and opinion service; add the routes and the grant."""
    registry = DbShareRegistry(accounts.db)
    notifier = Notifier(accounts.db, mail or MailSettings.from_env(os.environ))
    opinions = Opinions(accounts, registry, notifier)
    app.state.share_registry = registry
    app.state.opinions = opinions
    access = getattr(app.state, "slide_access", None)
    if isinstance(access, SlideAccess):
        access.grant = registry.local_grant
    app.include_router(router)
    app.include_router(shares_router.router)
    return opinions
