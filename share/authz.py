"""The one authorisation function: ``authorize(principal, action, obj) -> Decision``.

Deny by default: every branch that is not an explicit allow returns a denial with a reason.

=================  ==========================  =========================  ==================
action             pathologist / admin         ml                         operator
=================  ==========================  =========================  ==================
slide.view         own centre                  own centre, pseudonymised  never (no patient data)
slide.associated   own centre (label, macro)   never                      never
annotation.read    own centre's slides         own centre, pseudonymised  never
annotation.write   own annotations on slides   own annotations on slides  never
                   they may view               they may view
labels.validate    pathologist: own centre     never                      never
                   (admin: never)
audit.read         admin: own centre only      never                      never
system.operate     admin                       never                      yes
opinion.request    own requests                never                      never
opinion.consult    named consultant / pool     never                      never
opinion.read       requester, consultant/pool  never                      never
collection.create  own centre                  never                      never
collection.read    own centre, or a centre of  never                      never
                   the collection's audience
collection.manage  its creator; admin: own     never                      never
                   centre's
access.review      admin: own centre only      never                      never
=================  ==========================  =========================  ==================

A pool is every clinician of the consultant centre; once one accepts, only they may consult.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Action",
    "AnnotationRef",
    "AuditScope",
    "CollectionRef",
    "Decision",
    "OpinionRef",
    "Principal",
    "Role",
    "SlideRef",
    "SystemRef",
    "authorize",
]


class Role(StrEnum):
    PATHOLOGIST = "pathologist"
    ADMIN = "admin"
    ML = "ml"
    OPERATOR = "operator"


class Action(StrEnum):
    SLIDE_VIEW = "slide.view"
    SLIDE_ASSOCIATED = "slide.associated"
    ANNOTATION_READ = "annotation.read"
    ANNOTATION_WRITE = "annotation.write"
    LABEL_VALIDATE = "labels.validate"
    AUDIT_READ = "audit.read"
    SYSTEM_OPERATE = "system.operate"
    OPINION_REQUEST = "opinion.request"
    OPINION_CONSULT = "opinion.consult"
    OPINION_READ = "opinion.read"
    COLLECTION_CREATE = "collection.create"
    COLLECTION_READ = "collection.read"
    COLLECTION_MANAGE = "collection.manage"
    ACCESS_REVIEW = "access.review"


@dataclass(frozen=True)
class Principal:
    """Who is asking: resolved from the session, immutable for the request."""

    user_id: int
    username: str
    centre: str
    role: Role


@dataclass(frozen=True)
class SlideRef:
    slide_id: str
    centre: str


@dataclass(frozen=True)
class AnnotationRef:
    slide: SlideRef
    owner_id: int | None  # None: a new annotation (owner will be the caller)


@dataclass(frozen=True)
class AuditScope:
    centre: str
    slide_id: str | None = None


@dataclass(frozen=True)
class SystemRef:
    name: str = "system"


@dataclass(frozen=True)
class OpinionRef:
    """A second-opinion request; ``requester_id`` None: one about to be created."""

    requester_id: int | None
    requester_centre: str
    consultant_kind: str  # "user" | "pool"
    consultant_centre: str
    consultant_name: str  # the username for "user"
    assignee: str | None = None  # who accepted
    state: str = "draft"


@dataclass(frozen=True)
class CollectionRef:
    """A teaching collection: the owner centre, who made it, the centres it is shown to."""

    owner_centre: str
    created_by: str | None = None  # None: one about to be created
    audience: frozenset[str] = frozenset()


Object = SlideRef | AnnotationRef | AuditScope | SystemRef | OpinionRef | CollectionRef


@dataclass(frozen=True)
class Decision:
    """An allow / deny with its reason; ``pseudonymised`` means: strip identifying fields."""

    allowed: bool
    reason: str
    pseudonymised: bool = False

    def __bool__(self) -> bool:
        return self.allowed


def _deny(reason: str) -> Decision:
    return Decision(False, reason)


_CLINICAL = (Role.PATHOLOGIST, Role.ADMIN)


def _slide_view(p: Principal, slide: SlideRef) -> Decision:
    if p.role is Role.OPERATOR:
        return _deny("operators see no patient data")
    if slide.centre != p.centre:
        return _deny("slide belongs to another centre")
    if p.role is Role.ML:
        return Decision(True, "ml: own centre, pseudonymised", pseudonymised=True)
    if p.role in _CLINICAL:
        return Decision(True, "own centre")
    return _deny("unknown role")


def _opinion(p: Principal, action: Action, o: OpinionRef) -> Decision:
    if p.role not in _CLINICAL:
        return _deny("second opinions are for clinicians")
    requester = p.centre == o.requester_centre and (
        o.requester_id is None or o.requester_id == p.user_id
    )
    if action is Action.OPINION_REQUEST:
        return Decision(True, "requester") if requester else _deny("not the requester")
    consultant = p.centre == o.consultant_centre and (
        p.username == o.assignee
        if o.assignee is not None
        else (o.consultant_kind == "pool" or p.username == o.consultant_name)
    )
    if o.state == "draft":
        consultant = False  # a draft is the requester's alone
    if action is Action.OPINION_CONSULT:
        return Decision(True, "consultant") if consultant else _deny("not the consultant")
    if requester or consultant:
        return Decision(True, "party to the request")
    return _deny("not a party to the request")


def _collection(p: Principal, action: Action, c: CollectionRef) -> Decision:
    if p.role not in _CLINICAL:
        return _deny("teaching collections are for clinicians")
    own = p.centre == c.owner_centre
    if action is Action.COLLECTION_CREATE:
        return Decision(True, "own centre") if own else _deny("collections hold own slides only")
    if action is Action.COLLECTION_MANAGE:
        if own and (p.username == c.created_by or p.role is Role.ADMIN):
            return Decision(True, "creator or centre admin")
        return _deny("only its creator or the centre's admin manages a collection")
    if own:
        return Decision(True, "own centre")
    if p.centre in c.audience:
        # Another centre reads the de-identified collection: pseudonyms and pixels only.
        return Decision(True, "audience centre", pseudonymised=True)
    return _deny("collection not shared with this centre")


def authorize(principal: Principal | None, action: Action, obj: Object) -> Decision:
    """Decide whether ``principal`` may perform ``action`` on ``obj``; deny unless a rule allows."""
    if principal is None:
        return _deny("no session")
    p = principal
    if action is Action.SLIDE_VIEW and isinstance(obj, SlideRef):
        return _slide_view(p, obj)
    if action is Action.SLIDE_ASSOCIATED and isinstance(obj, SlideRef):
        # Label and macro images carry names and barcodes: clinicians of the centre only.
        if p.role in _CLINICAL and obj.centre == p.centre:
            return Decision(True, "own centre clinician")
        return _deny("associated images are for the centre's clinicians only")
    if action is Action.ANNOTATION_READ and isinstance(obj, AnnotationRef):
        return _slide_view(p, obj.slide)
    if action is Action.ANNOTATION_WRITE and isinstance(obj, AnnotationRef):
        view = _slide_view(p, obj.slide)
        if not view:
            return view
        if obj.owner_id is not None and obj.owner_id != p.user_id:
            return _deny("annotations of others are read-only")
        return Decision(True, "own annotation", pseudonymised=view.pseudonymised)
    if action is Action.LABEL_VALIDATE and isinstance(obj, SlideRef):
        # Human oversight of AI output: a diagnosing pathologist of the slide's centre.
        if p.role is Role.PATHOLOGIST and obj.centre == p.centre:
            return Decision(True, "pathologist of the centre")
        return _deny("only the centre's pathologists validate AI output")
    if action is Action.AUDIT_READ and isinstance(obj, AuditScope):
        if p.role is Role.ADMIN and obj.centre == p.centre:
            return Decision(True, "admin of the centre")
        return _deny("audit trail is for the centre's admin only")
    if action is Action.ACCESS_REVIEW and isinstance(obj, AuditScope):
        # Who looked at our slides, from which centre, under which share: the owner's admin.
        if p.role is Role.ADMIN and obj.centre == p.centre:
            return Decision(True, "admin of the centre")
        return _deny("access review is for the centre's admin only")
    if isinstance(obj, CollectionRef) and action in (
        Action.COLLECTION_CREATE,
        Action.COLLECTION_READ,
        Action.COLLECTION_MANAGE,
    ):
        return _collection(p, action, obj)
    if action is Action.SYSTEM_OPERATE and isinstance(obj, SystemRef):
        if p.role in (Role.ADMIN, Role.OPERATOR):
            return Decision(True, "operator or admin")
        return _deny("operators and admins only")
    if isinstance(obj, OpinionRef) and action in (
        Action.OPINION_REQUEST,
        Action.OPINION_CONSULT,
        Action.OPINION_READ,
    ):
        return _opinion(p, action, obj)
    return _deny(f"no rule allows {action.value} on {type(obj).__name__}")
