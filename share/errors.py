"""Errors raised by accounts, access control, audit and annotations.

::

    ShareError                        base; ``code`` is a stable machine string
    ├── AuthenticationError           no valid session / bad credentials      -> 401
    │   ├── InvalidCredentialsError   wrong username or password              -> 401
    │   └── SessionExpiredError       idle or absolute timeout, or logged out -> 401
    ├── LoginRateLimitedError         too many failed logins (username+IP)    -> 429
    ├── CsrfError                     missing / wrong CSRF token              -> 403
    ├── ForbiddenError                authenticated, decision says no         -> 403
    ├── SlideNotFoundError            unknown slide OR slide not visible      -> 404
    ├── NotFoundError (LookupError)   unknown user / centre / record          -> 404
    ├── ConflictError                 stale version, duplicate name           -> 409
    ├── InvalidInputError (ValueError) bad request body / argument            -> 422
    ├── PayloadTooLargeError          import body past its size cap           -> 413
    └── AuditChainError               the audit hash chain does not verify

``SlideNotFoundError`` deliberately carries the same message for "does not exist" and "exists
but you may not see it", so that the two answers are byte-identical.
"""

from __future__ import annotations

__all__ = [
    "AuditChainError",
    "AuthenticationError",
    "ConflictError",
    "CsrfError",
    "ForbiddenError",
    "IllegalTransitionError",
    "InvalidCredentialsError",
    "InvalidInputError",
    "LoginRateLimitedError",
    "MailError",
    "NotFoundError",
    "OpinionNotFoundError",
    "PayloadTooLargeError",
    "SessionExpiredError",
    "ShareError",
    "SlideNotFoundError",
]


class ShareError(Exception):
    """Base of every error of the share package."""

    code = "share_error"


class AuthenticationError(ShareError):
    code = "not_authenticated"


class InvalidCredentialsError(AuthenticationError):
    code = "invalid_credentials"


class SessionExpiredError(AuthenticationError):
    code = "session_expired"


class LoginRateLimitedError(ShareError):
    code = "login_rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CsrfError(ShareError):
    code = "csrf_failed"


class ForbiddenError(ShareError):
    code = "forbidden"


class SlideNotFoundError(ShareError, LookupError):
    code = "slide_not_found"

    def __init__(self, slide_id: str) -> None:
        # Same text whether the slide is unknown or merely not visible: never leak existence.
        super().__init__(f"slide {slide_id!r} not found")
        self.slide_id = slide_id


class NotFoundError(ShareError, LookupError):
    code = "not_found"


class ConflictError(ShareError):
    code = "conflict"


class InvalidInputError(ShareError, ValueError):
    code = "invalid_input"


class PayloadTooLargeError(ShareError):
    code = "payload_too_large"


class AuditChainError(ShareError):
    code = "audit_chain_broken"


class OpinionNotFoundError(NotFoundError):
    """Unknown second-opinion request, or one the caller may not see (same answer)."""

    code = "opinion_not_found"


class IllegalTransitionError(ConflictError):
    """A second-opinion state change not allowed from the current state (draft -> answered...)."""

    code = "illegal_transition"


class MailError(ShareError):
    """The SMTP server refused or could not be reached (the in-app notice is still kept)."""

    code = "mail_failed"
