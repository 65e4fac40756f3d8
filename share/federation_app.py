"""Wiring of the federation routers into the app when ``SHARE_FEDERATION_FILE`` is set.

Owner side: ``/federation/*`` answers peers from the ``shares`` table (:class:`DbShareRegistry`),
every request authenticated by a signed node token and audited in the hash-chained trail.
Recipient side: ``/shared/*`` asks the peers on behalf of the logged-in user (``current_caller``
is the session's principal, with the share groups of :func:`share.shares.groups_of`).
Revoking a share tells the recipient's node to purge what it cached (best effort).
Second opinions asked of another node's users, and their annotations on the shared slide, go
through :mod:`share.federation_opinions_router` (the requester's node stays the source of truth);
reminders of late ones reach the consultant through their node (:mod:`share.federation_notices`).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request

from share.accounts import Accounts
from share.deidentify import derive_shared_pyramid
from share.federation import FederationAuditTrail, FederationConfig, Share
from share.federation_errors import FederationError, PeerError
from share.federation_notices import notices_router
from share.federation_opinions import RemoteOpinions
from share.federation_opinions_router import owner_opinions_router, recipient_opinions_router
from share.federation_router import (
    OwnerState,
    RecipientState,
    current_caller,
    federation_error_handler,
    owner_router,
    recipient_router,
)
from share.opinions import Opinions
from share.peers import CachingPeerClient, Caller, HttpPeerClient, PeerClient
from share.shares import DbShareRegistry, groups_of
from share.signing import NodeKey
from share.web import principal_of

__all__ = ["FEDERATION_PREFIX", "install_federation", "session_caller"]

logger = logging.getLogger(__name__)

FEDERATION_PREFIX = "/federation/"


def session_caller(request: Request) -> Caller:
    """``current_caller`` for the recipient routes: the logged-in user and their groups."""
    principal = principal_of(request)
    return Caller(principal.username, tuple(groups_of(principal)))


def install_federation(
    app: FastAPI,
    accounts: Accounts,
    registry: DbShareRegistry,
    source_of: Callable[[str], Path | None] | None = None,
    opinions: Opinions | None = None,
) -> None:
    """Add owner and recipient routes; the peers file and node key come from the settings.

    ``source_of(slide_id)`` is the slide's local OME-Zarr store: a share to a peer centre gets
    its de-identified copy derived there at creation (and removed on revocation).
    """
    settings = accounts.settings
    config = FederationConfig.from_file(settings.federation_file)
    key = NodeKey.from_file(config.node, settings.node_key_file)
    derived = Path(settings.data_dir) / "shared"  # derived (de-identified) pyramids, per share
    app.state.federation_owner = OwnerState(
        config=config,
        shares=registry,
        pyramid_for=lambda share: derived / share.share_id,
        audit=FederationAuditTrail(accounts.db, app.state.view_aggregator),
    )
    clients: dict[str, PeerClient] = {
        name: CachingPeerClient(HttpPeerClient(key, peer)) for name, peer in config.peers.items()
    }
    app.state.federation_recipient = RecipientState(clients=clients)
    if opinions is not None:
        opinions.peers = clients  # reminders of requests asked of another node's users

    def derive(share: Share) -> None:
        if share.recipient.centre not in config.peers or source_of is None:
            return  # a centre on this node reads the slide itself
        source = source_of(share.slide_id)
        if source is None:
            logger.warning("share %s: no local store to derive from", share.pseudonym)
            return
        try:
            derive_shared_pyramid(
                source, derived / share.share_id, pseudonym=share.pseudonym, region=share.region
            )
        except (FederationError, OSError) as exc:  # the peer then gets 404/5xx, never the source
            logger.warning("share %s not derived: %s", share.pseudonym, type(exc).__name__)

    def purge_at_recipient(share: Share) -> None:
        shutil.rmtree(derived / share.share_id, ignore_errors=True)
        client = clients.get(share.recipient.centre)
        if client is None:
            return  # a centre on this node: nothing cached elsewhere
        try:
            client.notify_revoked([share.share_id])
        except PeerError as exc:  # the 60 s token lifetime still ends access
            logger.warning("peer %s not told of a revocation: %s", client.peer_name, exc.code)

    registry.on_create = derive
    registry.on_revoke = purge_at_recipient
    app.dependency_overrides[current_caller] = session_caller
    if opinions is not None:
        app.state.federation_opinions = RemoteOpinions(opinions, registry)
        app.include_router(owner_opinions_router)
        app.include_router(recipient_opinions_router)
        app.include_router(notices_router)
    app.include_router(owner_router)
    app.include_router(recipient_router)
    app.add_exception_handler(FederationError, federation_error_handler)
    logger.info("federation on: node %s, %d peers", config.node, len(config.peers))
