"""Human oversight of AI label layers: a pathologist of the slide's centre accepts or rejects.

``POST /api/slides/{slide_id}/labels/{name}/review`` records the decision in the audit trail
(hash-chained, append-only; action ``labels.review``). The trail is the record: the latest
review of a layer is read back from it (``latest_review``), which the tile server shows as the
overlay's status, so no store write (which S3 stores would not allow) is needed.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from share import audit
from share.accounts import Accounts
from share.annotations_router import visible_slide
from share.authz import Action, Principal, SlideRef, authorize
from share.db import Database
from share.errors import ForbiddenError, NotFoundError
from share.models import AuditRecord
from share.web import principal_of
from tiling.catalog import SlideRef as TilingRef
from tiling.overlay import label_names

__all__ = ["REVIEW_ACTION", "install_label_reviews", "latest_review", "router"]

REVIEW_ACTION = "labels.review"
NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"

router = APIRouter(tags=["overlays"])


class ReviewBody(BaseModel):
    decision: Literal["accept", "reject"]
    comment: str = Field(default="", max_length=2000)


def latest_review(db: Database, slide_id: str, name: str) -> dict[str, Any] | None:
    """The newest review of label layer ``name`` of the slide: decision, by, at, comment."""
    q = (
        select(AuditRecord)
        .where(AuditRecord.slide_id == slide_id, AuditRecord.action == REVIEW_ACTION)
        .order_by(AuditRecord.seq.desc())
        .limit(200)
    )
    with db.session() as s:
        for rec in s.scalars(q):
            detail = json.loads(rec.detail)
            if detail.get("label") == name:
                return {
                    "decision": detail.get("decision"),
                    "by": rec.actor,
                    "at": rec.at,
                    "comment": detail.get("comment", ""),
                }
    return None


def _label_exists(request: Request, slide_id: str, name: str) -> bool:
    """Whether the slide's store lists the layer (the hook hands tile routes a tiling ref)."""
    ref = request.app.state.slide_access(request, slide_id)
    return not isinstance(ref, TilingRef) or name in label_names(ref)


@router.post("/api/slides/{slide_id}/labels/{name}/review")
def review_labels(
    request: Request,
    slide: Annotated[SlideRef, Depends(visible_slide)],
    me: Annotated[Principal, Depends(principal_of)],
    name: Annotated[str, Path(pattern=NAME_PATTERN)],
    body: ReviewBody,
) -> dict[str, Any]:
    """Accept or reject an AI label layer; recorded in the audit trail with who and when."""
    decision = authorize(me, Action.LABEL_VALIDATE, slide)
    if not decision:
        raise ForbiddenError(f"review of AI output: {decision.reason}")
    if not _label_exists(request, slide.slide_id, name):
        raise NotFoundError(f"no label layer {name!r}")
    accounts: Accounts = request.app.state.accounts
    with accounts.db.session() as s:
        audit.append(
            s,
            actor=me.username,
            action=REVIEW_ACTION,
            centre_id=slide.centre,
            slide_id=slide.slide_id,
            detail={"label": name, "decision": body.decision, "comment": body.comment},
        )
    review = latest_review(accounts.db, slide.slide_id, name)
    assert review is not None
    return {"slide_id": slide.slide_id, "label": name, **review}


def install_label_reviews(app: FastAPI) -> None:
    """Add the review route and ``app.state.label_reviews`` (read by the slide JSON)."""
    accounts: Accounts = app.state.accounts
    app.state.label_reviews = lambda slide_id, name: latest_review(accounts.db, slide_id, name)
    app.include_router(router)
