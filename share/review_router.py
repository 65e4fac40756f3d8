"""HTTP edge of the owner-centre review: ``/api/review``.

::

    GET /api/review/slides               my centre's slides: accesses, centres, live shares
    GET /api/review/slides/{slide_id}    who looked at it, from where, when, which regions,
                                         under which share / second-opinion request

Revoking is the shares API (``POST /api/shares/{share_id}/revoke``, open to the centre's admin).
A slide of another centre answers exactly like an unknown one (404); a non-admin of the
slide's centre gets 403, like the audit export.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request

from share.accounts import Accounts
from share.authz import Principal
from share.review import AccessReview
from share.shares import DbShareRegistry
from share.web import principal_of

__all__ = ["install_review", "router"]

router = APIRouter(prefix="/api/review", tags=["review"])

PrincipalDep = Annotated[Principal, Depends(principal_of)]


def _review(request: Request) -> AccessReview:
    review: AccessReview = request.app.state.access_review
    request.app.state.view_aggregator.flush()  # pending views belong in the answer
    return review


ReviewDep = Annotated[AccessReview, Depends(_review)]


@router.get("/slides")
def reviewed_slides(who: PrincipalDep, review: ReviewDep) -> list[dict[str, Any]]:
    return review.slides(who)


@router.get("/slides/{slide_id}")
def reviewed_slide(
    slide_id: str, request: Request, who: PrincipalDep, review: ReviewDep
) -> dict[str, Any]:
    # The same hook as every slide route: unknown and other centres' slides are one 404.
    request.app.state.slide_access(request, slide_id)
    return review.slide(who, slide_id)


def install_review(app: FastAPI, accounts: Accounts, shares: DbShareRegistry) -> AccessReview:
    review = AccessReview(accounts, shares)
    app.state.access_review = review
    app.include_router(router)
    return review
