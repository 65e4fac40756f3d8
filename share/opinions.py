"""Second-opinion requests between centres: a small state machine over ``opinion_requests``.

::

    draft --send--> sent --accept--> accepted --answer--> answered
                      \\--decline--> declined
    any state but closed --close--> closed

Who may do what is ``authorize`` (``opinion.request`` / ``opinion.consult`` / ``opinion.read``);
an illegal transition is :class:`IllegalTransitionError` (409), applied by a conditional UPDATE
so two racing clicks cannot both win. Sending to another centre shares the request's slides
with the consultant (or the centre's pool) until the due date plus a margin; declining and
closing revoke those shares. Every step is an audit record ``opinion.<verb>`` of the
requester's centre, and the requester is notified in-app and by e-mail.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from share import audit
from share.accounts import Accounts
from share.authz import Action, OpinionRef, Principal, Role, authorize
from share.errors import (
    ForbiddenError,
    IllegalTransitionError,
    InvalidInputError,
    OpinionNotFoundError,
)
from share.federation import Permission, Recipient, RecipientKind, new_pseudonym
from share.federation_errors import PeerError
from share.models import Annotation, User
from share.notify import Notifier
from share.opinion_models import OpinionRow
from share.peers import OpinionNotice, PeerClient
from share.shares import POOL_GROUP, DbShareRegistry, NewShare

__all__ = [
    "SHARE_MARGIN",
    "Agreement",
    "Answer",
    "OpinionDraft",
    "Opinions",
    "PinnedRegion",
    "State",
    "Urgency",
]

logger = logging.getLogger(__name__)

SHARE_MARGIN = timedelta(days=7)  # shares outlive the due date by this: late answers still see
REMIND_EVERY = timedelta(hours=24)


class State(enum.StrEnum):
    DRAFT = "draft"
    SENT = "sent"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    ANSWERED = "answered"
    CLOSED = "closed"


class Urgency(enum.StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"


class Agreement(enum.StrEnum):
    YES = "yes"
    PARTLY = "partly"
    NO = "no"


# verb -> (states it may start from, state it leads to, action authorised)
_TRANSITIONS: dict[str, tuple[frozenset[State], State, Action]] = {
    "send": (frozenset({State.DRAFT}), State.SENT, Action.OPINION_REQUEST),
    "accept": (frozenset({State.SENT}), State.ACCEPTED, Action.OPINION_CONSULT),
    "decline": (frozenset({State.SENT}), State.DECLINED, Action.OPINION_CONSULT),
    "answer": (frozenset({State.ACCEPTED}), State.ANSWERED, Action.OPINION_CONSULT),
    "close": (frozenset(State) - {State.CLOSED}, State.CLOSED, Action.OPINION_REQUEST),
}


@dataclass(frozen=True, slots=True)
class PinnedRegion:
    """A region the requester points at, level-0 pixels (x, y, width, height)."""

    slide_id: str
    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        if self.x < 0 or self.y < 0 or self.w <= 0 or self.h <= 0:
            raise InvalidInputError("a pinned region needs x, y >= 0 and w, h > 0")


@dataclass(frozen=True, slots=True)
class OpinionDraft:
    """What the requester fills in."""

    slide_ids: Sequence[str]
    question: str
    due_at: datetime
    consultant_centre: str
    consultant_name: str = ""  # a username; "" asks the centre's pool
    urgency: Urgency = Urgency.ROUTINE
    regions: Sequence[PinnedRegion] = ()
    annotation_ids: Sequence[int] = ()


@dataclass(frozen=True, slots=True)
class Answer:
    """The consultant's answer; ``diagnosis`` / ``classification`` are optional structure."""

    text: str
    agreement: Agreement
    diagnosis: str | None = None
    classification: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _ref(row: OpinionRow) -> OpinionRef:
    return OpinionRef(
        requester_id=row.requester_id,
        requester_centre=row.requester_centre,
        consultant_kind=row.consultant_kind,
        consultant_centre=row.consultant_centre,
        consultant_name=row.consultant_name,
        assignee=row.assignee,
        state=row.state,
    )


class Opinions:
    """The second-opinion service: one per app (``app.state.opinions``)."""

    def __init__(self, accounts: Accounts, shares: DbShareRegistry, notifier: Notifier) -> None:
        self.accounts = accounts
        self.db = accounts.db
        self.shares = shares
        self.notifier = notifier
        # Other nodes by centre name: their users are reminded through their node.
        self.peers: Mapping[str, PeerClient] = {}

    # ------------------------------------------------------------------ requester side

    def create(self, requester: Principal, draft: OpinionDraft) -> dict[str, Any]:
        """Save a draft; slides must be the requester's centre's and visible to them."""
        kind = "user" if draft.consultant_name else "pool"
        ref = OpinionRef(
            None, requester.centre, kind, draft.consultant_centre, draft.consultant_name
        )
        decision = authorize(requester, Action.OPINION_REQUEST, ref)
        if not decision:
            raise ForbiddenError(f"second opinion: {decision.reason}")
        question = draft.question.strip()
        if not question or len(question) > 10_000:
            raise InvalidInputError("the clinical question must be 1-10000 characters")
        if draft.due_at.tzinfo is None:
            raise InvalidInputError("due date must carry a timezone")
        slide_ids = list(dict.fromkeys(draft.slide_ids))
        if not 1 <= len(slide_ids) <= 50:
            raise InvalidInputError("a request names 1-50 slides")
        for slide_id in slide_ids:
            slide = self.accounts.slide(slide_id)
            if slide is None or slide.centre != requester.centre:
                raise InvalidInputError(f"slide {slide_id!r} is not one of your centre's")
            if not authorize(requester, Action.SLIDE_VIEW, slide):
                raise InvalidInputError(f"slide {slide_id!r} is not one of your centre's")
        for region in draft.regions:
            if region.slide_id not in slide_ids:
                raise InvalidInputError("a pinned region must be on one of the request's slides")
        self._check_consultant(requester, kind, draft.consultant_centre, draft.consultant_name)
        self._check_annotations(list(draft.annotation_ids), slide_ids)
        items = {
            "slides": [{"slide_id": s, "pseudonym": new_pseudonym()} for s in slide_ids],
            "regions": [asdict(r) for r in draft.regions],
            "annotation_ids": list(dict.fromkeys(draft.annotation_ids)),
        }
        now = datetime.now(UTC)
        row = OpinionRow(
            requester_id=requester.user_id,
            requester_centre=requester.centre,
            consultant_kind=kind,
            consultant_centre=draft.consultant_centre,
            consultant_name=draft.consultant_name,
            assignee=None,
            question=question,
            urgency=Urgency(draft.urgency).value,
            due_at=draft.due_at.astimezone(UTC),
            state=State.DRAFT.value,
            items=json.dumps(items),
            answer=None,
            decline_reason=None,
            created_at=now,
            updated_at=now,
            last_reminder_at=None,
        )
        with self.db.session() as s:
            s.add(row)
            s.flush()
            self._audit(s, requester, row, "create", None)
        return self._json(row, requester)

    def _check_consultant(self, requester: Principal, kind: str, centre: str, name: str) -> None:
        if centre == requester.centre and kind == "pool":
            raise InvalidInputError("ask a named colleague of your own centre, or another centre")
        if kind == "user" and name == requester.username:
            raise InvalidInputError("you cannot ask yourself")
        if kind != "user":
            return
        with self.db.session() as s:
            user = s.scalar(select(User).where(User.username == name))
            known_here = s.scalar(  # remote users ("lille:dr.x") do not make a centre local
                select(User.id)
                .where(User.centre_id == centre, User.username.not_like("%:%"))
                .limit(1)
            )
        if user is None and known_here is None:
            return  # a centre served by another node: its node checks the name
        if (
            user is None
            or user.centre_id != centre
            or Role(user.role)
            not in (
                Role.PATHOLOGIST,
                Role.ADMIN,
            )
        ):
            raise InvalidInputError(f"no pathologist {name!r} at {centre}")

    def _check_annotations(self, ids: list[int], slide_ids: list[str]) -> None:
        if not ids:
            return
        with self.db.session() as s:
            rows = s.execute(
                select(Annotation.id, Annotation.slide_id).where(
                    Annotation.id.in_(ids), Annotation.deleted.is_(False)
                )
            ).all()
            found = {int(row[0]): str(row[1]) for row in rows}
        for ann_id in ids:
            if found.get(ann_id) not in slide_ids:
                raise InvalidInputError(f"annotation {ann_id} is not on the request's slides")

    # ------------------------------------------------------------------ transitions

    def send(self, who: Principal, opinion_id: int) -> dict[str, Any]:
        row = self._transition(who, opinion_id, "send", {})
        if row.consultant_centre != row.requester_centre:
            self._share_slides(who, row)
        self._tell_consultants(
            row, "requested", f"Second opinion #{row.id} requested ({row.urgency})"
        )  # a node that is down misses this notice only: the request is in its inbox
        return self._json(row, who)

    def accept(self, who: Principal, opinion_id: int) -> dict[str, Any]:
        row = self._transition(who, opinion_id, "accept", {"assignee": who.username})
        self._notify_requester(row, f"Second opinion #{row.id} accepted by {who.centre}")
        return self._json(row, who)

    def decline(self, who: Principal, opinion_id: int, reason: str = "") -> dict[str, Any]:
        if len(reason) > 2000:
            raise InvalidInputError("reason longer than 2000 characters")
        row = self._transition(who, opinion_id, "decline", {"decline_reason": reason})
        self.shares.revoke_for_opinion(who.username, row.id)
        self._notify_requester(row, f"Second opinion #{row.id} declined by {who.centre}")
        return self._json(row, who)

    def answer(self, who: Principal, opinion_id: int, answer: Answer) -> dict[str, Any]:
        if not answer.text.strip() or len(answer.text) > 50_000:
            raise InvalidInputError("the answer must be 1-50000 characters")
        for value in (answer.diagnosis, answer.classification):
            if value is not None and len(value) > 500:
                raise InvalidInputError("diagnosis and classification are at most 500 characters")
        body = {
            "text": answer.text,
            "agreement": Agreement(answer.agreement).value,
            "diagnosis": answer.diagnosis,
            "classification": answer.classification,
            "by": who.username,
            "centre": who.centre,
            "at": datetime.now(UTC).isoformat(),
        }
        row = self._transition(who, opinion_id, "answer", {"answer": json.dumps(body)})
        self._notify_requester(row, f"Second opinion #{row.id} answered ({body['agreement']})")
        return self._json(row, who)

    def close(self, who: Principal, opinion_id: int) -> dict[str, Any]:
        row = self._transition(who, opinion_id, "close", {})
        self.shares.revoke_for_opinion(who.username, row.id)
        return self._json(row, who)

    def _transition(
        self, who: Principal, opinion_id: int, verb: str, values: dict[str, Any]
    ) -> OpinionRow:
        sources, target, action = _TRANSITIONS[verb]
        with self.db.session() as s:
            row = self._visible(s, who, opinion_id)
            decision = authorize(who, action, _ref(row))
            if not decision:
                raise ForbiddenError(f"{verb}: {decision.reason}")
            before = State(row.state)
            if before not in sources:
                raise IllegalTransitionError(f"cannot {verb} a request that is {before.value}")
            result = s.execute(
                update(OpinionRow)
                .where(OpinionRow.id == opinion_id, OpinionRow.state == before.value)
                .values(state=target.value, updated_at=datetime.now(UTC), **values)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:  # someone else moved it meanwhile
                raise IllegalTransitionError(f"cannot {verb}: the request changed meanwhile")
            s.refresh(row)
            self._audit(s, who, row, verb, before)
        logger.info("opinion %d: %s -> %s", opinion_id, before.value, target.value)
        return row

    # ------------------------------------------------------------------ reading

    def get(self, who: Principal, opinion_id: int) -> dict[str, Any]:
        with self.db.session() as s:
            return self._json(self._visible(s, who, opinion_id), who)

    def mine(self, who: Principal) -> list[dict[str, Any]]:
        """Requests the caller made, and those asked of them (or their centre's pool)."""
        with self.db.session() as s:
            rows = s.scalars(
                select(OpinionRow)
                .where(
                    (OpinionRow.requester_id == who.user_id)
                    | (OpinionRow.consultant_centre == who.centre)
                )
                .order_by(OpinionRow.id.desc())
                .limit(1000)
            ).all()
            return [
                self._json(row, who)
                for row in rows
                if authorize(who, Action.OPINION_READ, _ref(row))
            ]

    def thread(self, who: Principal, opinion_id: int) -> list[dict[str, Any]]:
        """The request's audit records (oldest first): who did what, when."""
        with self.db.session() as s:
            row = self._visible(s, who, opinion_id)
            centre = row.requester_centre
        return [
            rec
            for rec in audit.records(self.db, centre_id=centre, action_prefix="opinion.")
            if isinstance(rec["detail"], dict) and rec["detail"].get("opinion") == opinion_id
        ]

    def _visible(self, s: Any, who: Principal, opinion_id: int) -> OpinionRow:
        row = s.get(OpinionRow, opinion_id)
        if row is None or not authorize(who, Action.OPINION_READ, _ref(row)):
            raise OpinionNotFoundError(f"second opinion #{opinion_id} not found")
        assert isinstance(row, OpinionRow)
        return row

    def _json(self, row: OpinionRow, who: Principal) -> dict[str, Any]:
        items = json.loads(row.items)
        return {
            "id": row.id,
            "state": row.state,
            "requester_centre": row.requester_centre,
            "consultant": {
                "kind": row.consultant_kind,
                "centre": row.consultant_centre,
                "name": row.consultant_name or None,
            },
            "assignee": row.assignee,
            "question": row.question,
            "urgency": row.urgency,
            "due_at": _aware(row.due_at).isoformat(),
            "slides": items["slides"],
            "regions": items["regions"],
            "annotation_ids": items["annotation_ids"],
            "answer": json.loads(row.answer) if row.answer else None,
            "decline_reason": row.decline_reason,
            "created_at": _aware(row.created_at).isoformat(),
            "updated_at": _aware(row.updated_at).isoformat(),
            "role": "requester" if who.user_id == row.requester_id else "consultant",
        }

    # ------------------------------------------------------------------ side effects

    def _share_slides(self, who: Principal, row: OpinionRow) -> None:
        recipient = (
            Recipient(RecipientKind.USER, row.consultant_centre, row.consultant_name)
            if row.consultant_kind == "user"
            else Recipient(RecipientKind.GROUP, row.consultant_centre, POOL_GROUP)
        )
        expires = _aware(row.due_at) + SHARE_MARGIN
        for item in json.loads(row.items)["slides"]:
            self.shares.create(
                who,
                NewShare(
                    slide_id=item["slide_id"],
                    recipient=recipient,
                    permission=Permission.ANNOTATE,
                    expires_at=expires,
                    note=f"second opinion #{row.id}",
                    pseudonym=item["pseudonym"],
                ),
                opinion_id=row.id,
            )

    def _consultant_ids(self, row: OpinionRow) -> list[int]:
        with self.db.session() as s:
            q = select(User.id).where(
                User.centre_id == row.consultant_centre,
                User.active.is_(True),
                User.role.in_([Role.PATHOLOGIST.value, Role.ADMIN.value]),
            )
            name = row.assignee or (row.consultant_name if row.consultant_kind == "user" else None)
            if name:
                q = q.where(User.username == name)
            return list(s.scalars(q))

    def _pseudonyms(self, row: OpinionRow) -> str:
        return ", ".join(item["pseudonym"] for item in json.loads(row.items)["slides"])

    def _notify_consultants(self, row: OpinionRow, text: str) -> None:
        for user_id in self._consultant_ids(row):
            self.notifier.notify(
                user_id, "opinion", f"{text}; slides {self._pseudonyms(row)}", opinion_id=row.id
            )

    def _notify_requester(self, row: OpinionRow, text: str) -> None:
        self.notifier.notify(
            row.requester_id,
            "opinion",
            f"{text}; slides {self._pseudonyms(row)}",
            opinion_id=row.id,
        )

    def _audit(
        self, s: Any, who: Principal, row: OpinionRow, verb: str, before: State | None
    ) -> None:
        audit.append(
            s,
            actor=who.username,
            action=f"opinion.{verb}",
            centre_id=row.requester_centre,
            detail={
                "opinion": row.id,
                "from": before.value if before else None,
                "to": row.state,
                "by_centre": who.centre,
            },
        )

    # ------------------------------------------------------------------ reminders

    def send_reminders(self, now: datetime | None = None) -> int:
        """Remind consultants of late requests (sent or accepted, past due), once a day each.

        Returns how many requests were reminded; run by ``iain opinions remind`` (cron).
        """
        now = now or datetime.now(UTC)
        with self.db.session() as s:
            rows = s.scalars(
                select(OpinionRow).where(
                    OpinionRow.state.in_([State.SENT.value, State.ACCEPTED.value]),
                    OpinionRow.due_at < now,
                )
            ).all()
        count = 0
        for row in rows:
            last = row.last_reminder_at
            if last is not None and _aware(last) > now - REMIND_EVERY:
                continue
            if not self._remind(row):
                continue  # a peer that is down: no last_reminder_at, so the next run retries
            with self.db.session() as s:
                s.execute(
                    update(OpinionRow)
                    .where(OpinionRow.id == row.id)
                    .values(last_reminder_at=now)
                    .execution_options(synchronize_session=False)
                )
                audit.append(
                    s,
                    actor="system",
                    action="opinion.remind",
                    centre_id=row.requester_centre,
                    detail={"opinion": row.id, "state": row.state},
                )
            count += 1
        logger.info("%d overdue second-opinion requests reminded", count)
        return count

    def _remind(self, row: OpinionRow) -> bool:
        return self._tell_consultants(
            row, "reminder", f"Reminder: second opinion #{row.id} is overdue"
        )

    def _tell_consultants(self, row: OpinionRow, kind: str, local_text: str) -> bool:
        """Notify the consultants here, or through their node (which words the notice itself
        from ``kind``); False if that node failed."""
        peer = self.peers.get(row.consultant_centre)
        if peer is None:
            self._notify_consultants(row, local_text)
            return True
        name = row.assignee or (row.consultant_name if row.consultant_kind == "user" else "")
        notice = OpinionNotice(
            opinion_id=row.id,
            kind=kind,
            centre=row.consultant_centre,
            username=name.removeprefix(f"{row.consultant_centre}:"),  # "lille:x" is x at Lille
            pseudonyms=tuple(item["pseudonym"] for item in json.loads(row.items)["slides"]),
        )
        try:
            told = peer.send_opinion_notice(notice)
        except PeerError as exc:
            logger.warning(
                "opinion %d: %s not told (%s, %s)", row.id, peer.peer_name, kind, exc.code
            )
            return False
        if not told:
            logger.warning("opinion %d: %s knows no such consultant", row.id, peer.peer_name)
        return True
