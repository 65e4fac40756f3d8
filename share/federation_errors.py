"""Errors of sharing between centres (to be folded into ``share/errors.py`` by the lead).

::

    FederationError                      base; ``code`` is a stable machine string
    ├── DeidentifyError                  a derived (shareable) pyramid cannot be made
    │   ├── SourcePyramidError           the source is not a readable IAIN pyramid
    │   ├── InvalidPseudonymError        (also ValueError) pseudonym not [A-Za-z0-9._-]{1,64}
    │   ├── InvalidRegionError           (also ValueError) empty region, or outside the slide
    │   └── DerivedExistsError           (also FileExistsError) the output path is taken
    ├── NodeKeyError                     this node's private key is missing or unreadable
    ├── PeerConfigError                  the peers file / env is invalid (names the peer)
    ├── RequestAuthError                 a node-to-node request is refused (HTTP 401)
    │   ├── MalformedTokenError          not a JWT, or a required claim is missing
    │   ├── UnknownIssuerError           ``iss`` is not a configured peer
    │   ├── BadSignatureError            signature does not verify with the issuer's key
    │   ├── TokenExpiredError            ``exp`` passed (or ``nbf``/``iat`` in the future)
    │   ├── TokenLifetimeError           the issuer asked for more than ``MAX_TOKEN_TTL_S``
    │   ├── WrongAudienceError           ``aud`` is another node
    │   ├── RequestMismatchError         signed for another method, path or body
    │   └── ReplayedTokenError           the ``jti`` was already used
    ├── RevocationBodyError              (also ValueError) a revocation notice is malformed
    ├── ShareAccessError                 the share does not grant this (HTTP 404, like unknown)
    │   ├── ShareNotFoundError           no such share
    │   ├── ShareRevokedError            revoked
    │   ├── ShareExpiredError            past its expiry
    │   ├── ShareRecipientError          the caller is not the share's recipient
    │   ├── SharePermissionError         view-only share, annotate asked
    │   └── SharedTileNotFoundError      level / column / row outside the shared pyramid
    └── PeerError                        talking to a remote node failed
        ├── PeerUnavailableError         network error, timeout, 5xx
        ├── PeerRejectedError            the peer refused our signature (401/403)
        ├── PeerNotFoundError            the peer answered 404 (unknown or ended share)
        ├── PeerConflictError            the peer answered 409 (e.g. a request already answered)
        ├── PeerInputError               the peer refused what we sent (400/413/422)
        └── PeerProtocolError            the peer answered something we cannot use
"""

from __future__ import annotations

__all__ = [
    "BadSignatureError",
    "DeidentifyError",
    "DerivedExistsError",
    "FederationError",
    "InvalidPseudonymError",
    "InvalidRegionError",
    "MalformedTokenError",
    "NodeKeyError",
    "PeerConfigError",
    "PeerConflictError",
    "PeerError",
    "PeerInputError",
    "PeerNotFoundError",
    "PeerProtocolError",
    "PeerRejectedError",
    "PeerUnavailableError",
    "ReplayedTokenError",
    "RequestAuthError",
    "RequestMismatchError",
    "RevocationBodyError",
    "ShareAccessError",
    "ShareExpiredError",
    "ShareNotFoundError",
    "SharePermissionError",
    "ShareRecipientError",
    "ShareRevokedError",
    "SharedTileNotFoundError",
    "SourcePyramidError",
    "TokenExpiredError",
    "TokenLifetimeError",
    "UnknownIssuerError",
    "WrongAudienceError",
]


class FederationError(Exception):
    """Base of every error about sharing between centres."""

    code = "federation_error"


class DeidentifyError(FederationError):
    code = "deidentify_failed"


class SourcePyramidError(DeidentifyError):
    code = "bad_source_pyramid"


class InvalidPseudonymError(DeidentifyError, ValueError):
    code = "invalid_pseudonym"


class InvalidRegionError(DeidentifyError, ValueError):
    code = "invalid_region"


class DerivedExistsError(DeidentifyError, FileExistsError):
    code = "derived_exists"


class NodeKeyError(FederationError):
    code = "bad_node_key"


class PeerConfigError(FederationError):
    code = "bad_peer_config"


class RequestAuthError(FederationError):
    code = "request_unauthenticated"


class MalformedTokenError(RequestAuthError):
    code = "malformed_token"


class UnknownIssuerError(RequestAuthError):
    code = "unknown_issuer"


class BadSignatureError(RequestAuthError):
    code = "bad_signature"


class TokenExpiredError(RequestAuthError):
    code = "token_expired"


class TokenLifetimeError(RequestAuthError):
    code = "token_lifetime"


class WrongAudienceError(RequestAuthError):
    code = "wrong_audience"


class RequestMismatchError(RequestAuthError):
    code = "request_mismatch"


class ReplayedTokenError(RequestAuthError):
    code = "token_replayed"


class RevocationBodyError(FederationError, ValueError):
    code = "bad_revocation"


class ShareAccessError(FederationError):
    code = "share_not_found"


class ShareNotFoundError(ShareAccessError):
    code = "share_not_found"


class ShareRevokedError(ShareAccessError):
    code = "share_revoked"


class ShareExpiredError(ShareAccessError):
    code = "share_expired"


class ShareRecipientError(ShareAccessError):
    code = "share_wrong_recipient"


class SharePermissionError(ShareAccessError):
    code = "share_permission"


class SharedTileNotFoundError(ShareAccessError):
    code = "tile_not_found"


class PeerError(FederationError):
    code = "peer_error"


class PeerUnavailableError(PeerError):
    code = "peer_unavailable"


class PeerRejectedError(PeerError):
    code = "peer_rejected"


class PeerNotFoundError(PeerError):
    code = "peer_not_found"


class PeerProtocolError(PeerError):
    code = "peer_protocol"


class PeerConflictError(PeerError):
    code = "peer_conflict"


class PeerInputError(PeerError):
    code = "peer_refused_input"
