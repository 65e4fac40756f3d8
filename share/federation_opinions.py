"""Second opinions and annotations across nodes, as the requester's (owner's) node serves them.

The requester's node stays the source of truth: the request, its state machine
(:class:`share.opinions.Opinions`), the audit trail and the notifications live there. The
consultant's node only relays what its user does, signed as that user (``iss`` = centre,
``sub`` = username, ``groups`` = what that node asserts; ``pool`` = a clinician).

What crosses is an ALLOW-LIST (:func:`remote_view`): question, urgency, dates, state, the
answer, and the request's slides as *share ids and pseudonyms* with pinned regions in the
share's coordinates (level-0 pixels of the derived pyramid, which keeps the slide's frame).
Never a slide id, a slide name, a requester's username, or annotation comments of the owner.

A consultant's annotations are stored at the owner under a *remote user*, ``lille:dr.lille``
(a users row that cannot log in: no password, inactive), authorised by the share's
``annotate`` permission and audited like local annotations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from share import annotations as store
from share.accounts import now_utc
from share.authz import Principal, Role, SlideRef
from share.errors import ForbiddenError, InvalidInputError, NotFoundError
from share.federation import Permission, Share, authorize_share
from share.federation_errors import ShareNotFoundError, ShareRecipientError
from share.geometry import validate_geometry
from share.models import Centre, User
from share.opinion_models import OpinionRow, ShareRow
from share.opinions import Agreement, Answer, Opinions
from share.shares import POOL_GROUP, DbShareRegistry

__all__ = [
    "CONSULT_VERBS",
    "RemoteOpinions",
    "RemoteUser",
    "remote_username",
    "remote_view",
]

_DENSITY_LIMIT = 50_000  # a consultant's own and the pinned annotations: far fewer
CONSULT_VERBS = frozenset({"accept", "decline", "answer"})
_ANSWER_KEYS = ("text", "agreement", "diagnosis", "classification", "by", "centre", "at")
_SUBJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")


def remote_username(centre: str, username: str) -> str:
    """How a peer's user is named at this node (``lille:dr.lille``); ':' is never local."""
    return f"{centre}:{username}"


@dataclass(frozen=True, slots=True)
class RemoteUser:
    """The verified caller of a peer request: ``username`` at ``centre``; ``clinician`` when
    their node put them in the ``pool`` group."""

    centre: str
    username: str
    clinician: bool

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> RemoteUser:
        centre, user, groups = claims.get("iss"), claims.get("sub"), claims.get("groups")
        if not isinstance(centre, str) or not isinstance(user, str) or not _SUBJECT.fullmatch(user):
            raise ShareRecipientError("the token names no usable user")
        clinician = isinstance(groups, list) and POOL_GROUP in groups
        return cls(centre, user, clinician)

    @property
    def qualified(self) -> str:
        return remote_username(self.centre, self.username)


def _region_json(share: Share, item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "share_id": share.share_id,
        "pseudonym": share.pseudonym,
        "x": int(item["x"]),
        "y": int(item["y"]),
        "w": int(item["w"]),
        "h": int(item["h"]),
    }


def remote_view(opinion: Mapping[str, Any], shares: list[Share], now: datetime) -> dict[str, Any]:
    """THE allow-list of a request as a consultant's node sees it (``Opinions._json`` input).

    ``shares`` are the request's shares to the consultant's centre; slides are named by them.
    """
    by_slide = {share.slide_id: share for share in shares}
    slides = []
    for item in opinion["slides"]:
        share = by_slide.get(item["slide_id"])
        if share is None:
            continue
        live = share.revoked_at is None and share.expires_at > now
        slides.append({"share_id": share.share_id, "pseudonym": share.pseudonym, "live": live})
    regions = [
        _region_json(by_slide[r["slide_id"]], r)
        for r in opinion["regions"]
        if r["slide_id"] in by_slide
    ]
    answer = opinion.get("answer")
    consultant = opinion["consultant"]
    return {
        "id": int(opinion["id"]),
        "state": str(opinion["state"]),
        "requester_centre": str(opinion["requester_centre"]),
        "consultant": {
            "kind": str(consultant["kind"]),
            "centre": str(consultant["centre"]),
            "name": consultant["name"],
        },
        "assignee": opinion["assignee"],
        "question": str(opinion["question"]),
        "urgency": str(opinion["urgency"]),
        "due_at": str(opinion["due_at"]),
        "created_at": str(opinion["created_at"]),
        "updated_at": str(opinion["updated_at"]),
        "slides": slides,
        "regions": regions,
        "annotation_ids": [int(i) for i in opinion["annotation_ids"]],
        "answer": (
            {
                key: answer.get(key)
                for key in (
                    "text",
                    "agreement",
                    "diagnosis",
                    "classification",
                    "by",
                    "centre",
                    "at",
                )
            }
            if isinstance(answer, dict)
            else None
        ),
        "decline_reason": opinion.get("decline_reason"),
    }


class RemoteOpinions:
    """Owner-side answers to peers: requests addressed to their users, relayed transitions,
    and annotations on the slides shared with them."""

    def __init__(self, opinions: Opinions, shares: DbShareRegistry) -> None:
        self.opinions = opinions
        self.shares = shares
        self.db = opinions.db
        self.settings = opinions.accounts.settings

    # ------------------------------------------------------------------ identities

    def user_id(self, user: RemoteUser) -> int:
        """The remote user's row here (created on first use; it can never log in)."""
        name = user.qualified[:150]
        with self.db.session() as s:
            found = s.scalar(select(User.id).where(User.username == name))
            if found is not None:
                return int(found)
            if s.get(Centre, user.centre) is None:
                s.add(Centre(id=user.centre, name=user.centre.capitalize()))
            row = User(
                username=name,
                centre_id=user.centre,
                role=Role.PATHOLOGIST.value if user.clinician else Role.ML.value,
                password_hash=None,
                oidc_subject=None,
                active=False,  # no login, no notices: it only owns annotations and audit lines
                created_at=now_utc(),
            )
            s.add(row)
            s.flush()
            return int(row.id)

    def _consultant(self, user: RemoteUser) -> Principal:
        """The consultant as the requester's state machine sees them: ``username`` at their
        centre (the name the request was addressed to). No row here: id 0 is nobody's."""
        if not user.clinician:
            raise ShareRecipientError("second opinions are for clinicians")
        return Principal(0, user.username, user.centre, Role.PATHOLOGIST)

    # ------------------------------------------------------------------ opinions

    def _view(self, opinion: dict[str, Any], user: RemoteUser) -> dict[str, Any]:
        shares = [
            share
            for share in self.shares.for_opinion(int(opinion["id"]))
            if share.recipient.centre == user.centre
        ]
        return remote_view(opinion, shares, datetime.now(UTC))

    def list_for(self, user: RemoteUser) -> list[dict[str, Any]]:
        """Requests asked of ``user`` (or of their centre's pool), drafts excepted; none for a
        non-clinician (their inbox is empty, not an error)."""
        if not user.clinician:
            return []
        who = self._consultant(user)
        return [
            self._view(opinion, user)
            for opinion in self.opinions.mine(who)
            if opinion["role"] == "consultant"
        ]

    def get(self, user: RemoteUser, opinion_id: int) -> dict[str, Any]:
        who = self._consultant(user)
        try:
            return self._view(self.opinions.get(who, opinion_id), user)
        except NotFoundError as exc:
            raise ShareNotFoundError("no such request") from exc

    def act(
        self, user: RemoteUser, opinion_id: int, verb: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """accept / decline / answer, through the requester's state machine and audit."""
        who = self._consultant(user)
        try:
            if verb == "accept":
                result = self.opinions.accept(who, opinion_id)
            elif verb == "decline":
                result = self.opinions.decline(who, opinion_id, str(body.get("reason", "")))
            elif verb == "answer":
                result = self.opinions.answer(who, opinion_id, _answer(body))
            else:
                raise ShareNotFoundError(f"no verb {verb!r}")
        except (ForbiddenError, NotFoundError) as exc:  # not theirs: as unknown
            raise ShareNotFoundError("no such request") from exc
        return self._view(result, user)

    # ------------------------------------------------------------------ annotations

    def _annotator(self, share: Share, user: RemoteUser) -> tuple[Principal, SlideRef]:
        # ML-like at the owner's centre: own annotations writable, every read pseudonymised.
        who = Principal(self.user_id(user), user.qualified[:150], share.owner_centre, Role.ML)
        return who, SlideRef(share.slide_id, share.owner_centre)

    def _pinned(self, share: Share) -> set[int]:
        with self.db.session() as s:
            opinion_id = s.scalar(
                select(ShareRow.opinion_id).where(ShareRow.share_id == share.share_id)
            )
            row = s.get(OpinionRow, opinion_id) if opinion_id is not None else None
            return set(json.loads(row.items)["annotation_ids"]) if row is not None else set()

    def annotations(
        self,
        share: Share,
        user: RemoteUser,
        view: store.Viewport,
        *,
        layer: str | None,
        limit: int,
    ) -> dict[str, Any]:
        """The share's visible annotations in ``view``: the caller centre's own, and those the
        requester pinned to the request; clipped to a region share."""
        if share.region is not None:
            r = share.region
            x0, y0 = max(view.x, r.x), max(view.y, r.y)
            x1 = min(view.x + view.width, r.x + r.width)
            y1 = min(view.y + view.height, r.y + r.height)
            if x1 <= x0 or y1 <= y0:
                return {"type": "FeatureCollection", "features": [], "truncated": False}
            view = store.Viewport(x0, y0, x1 - x0, y1 - y0)
        who, slide = self._annotator(share, user)
        text = store.query_viewport(self.db, who, slide, view, layer=layer, limit=limit)
        collection = json.loads(text)
        pinned = self._pinned(share)
        prefix = remote_username(user.centre, "")
        features = []
        for feature in collection["features"]:
            owner = str(feature["iain"]["owner"])
            if owner.startswith(prefix):
                features.append(feature)
            elif int(feature["iain"]["id"]) in pinned:  # the owner centre's staff stay unnamed
                feature["iain"]["owner"] = share.owner_centre
                features.append(feature)
        collection["features"] = features
        return dict(collection)

    def density(
        self,
        share: Share,
        user: RemoteUser,
        view: store.Viewport,
        *,
        cols: int,
        rows: int,
        layer: str | None,
    ) -> list[list[int]]:
        """Counts per cell of what :meth:`annotations` lets the caller see (bbox centres), never
        of the whole slide: a density raster would show where the owner's private ones are."""
        features = self.annotations(share, user, view, layer=layer, limit=_DENSITY_LIMIT)
        grid = [[0] * cols for _ in range(rows)]
        for feature in features["features"]:
            box = _bbox(feature["geometry"]["coordinates"])
            cx = int(((box[0] + box[2]) / 2 - view.x) * cols / view.width)
            cy = int(((box[1] + box[3]) / 2 - view.y) * rows / view.height)
            grid[min(max(cy, 0), rows - 1)][min(max(cx, 0), cols - 1)] += 1
        return grid

    def _check_region(self, share: Share, geometry: Any) -> None:
        if share.region is None:
            return
        _, box = validate_geometry(
            geometry, None, where="annotation", max_vertices=self.settings.annotation_max_vertices
        )
        r = share.region
        if (
            box.min_x < r.x
            or box.min_y < r.y
            or box.max_x > r.x + r.width
            or box.max_y > r.y + r.height
        ):
            raise InvalidInputError("the annotation leaves the shared region")

    def create_annotation(
        self, share: Share, user: RemoteUser, item: store.AnnotationInput
    ) -> dict[str, Any]:
        self._check_region(share, item.geometry)
        who, slide = self._annotator(share, user)
        return store.create(self.db, who, slide, item, self._limits())

    def update_annotation(
        self,
        share: Share,
        user: RemoteUser,
        annotation_id: int,
        item: store.AnnotationInput,
        version: int,
    ) -> dict[str, Any]:
        self._check_region(share, item.geometry)
        who, slide = self._annotator(share, user)
        try:
            return store.update_annotation(
                self.db, who, slide, annotation_id, item, version, self._limits()
            )
        except ForbiddenError as exc:  # the owner centre's own annotation: as unknown
            raise ShareNotFoundError("no such annotation") from exc

    def delete_annotation(
        self, share: Share, user: RemoteUser, annotation_id: int, version: int
    ) -> int:
        who, slide = self._annotator(share, user)
        try:
            return store.remove(self.db, who, slide, annotation_id, version)
        except ForbiddenError as exc:
            raise ShareNotFoundError("no such annotation") from exc

    def _limits(self) -> store.Limits:
        return store.Limits(
            max_vertices=self.settings.annotation_max_vertices,
            max_features=self.settings.annotation_max_features,
        )


def authorize_remote(
    share: Share | None, claims: Mapping[str, Any], now: datetime, *, write: bool
) -> Share:
    """The share check of an annotation call: ``annotate`` permission to write."""
    action = Permission.ANNOTATE if write else Permission.VIEW
    return authorize_share(share, claims, now, action=action)


def _bbox(coords: Any, box: list[float] | None = None) -> list[float]:
    """[min_x, min_y, max_x, max_y] of nested GeoJSON coordinates."""
    box = box if box is not None else [float("inf"), float("inf"), float("-inf"), float("-inf")]
    if coords and isinstance(coords[0], int | float):
        x, y = float(coords[0]), float(coords[1])
        box[:] = [min(box[0], x), min(box[1], y), max(box[2], x), max(box[3], y)]
        return box
    for part in coords:
        _bbox(part, box)
    return box


def _answer(body: Mapping[str, Any]) -> Answer:
    text, agreement = body.get("text"), body.get("agreement")
    diagnosis, classification = body.get("diagnosis"), body.get("classification")
    if not isinstance(text, str) or agreement not in {a.value for a in Agreement}:
        raise InvalidInputError("an answer needs text and agreement yes / partly / no")
    for value in (diagnosis, classification):
        if value is not None and not isinstance(value, str):
            raise InvalidInputError("diagnosis and classification are text")
    return Answer(text, Agreement(str(agreement)), diagnosis, classification)
