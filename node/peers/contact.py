"""What a share's answers teach about it: when it last answered, why it did not, and whether
it refused us as a whole (then our token for it and our copy of its catalog go)."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from peerlight.p2p.errors import Forbidden, WireError

from ..catalog import remote_items
from ..catalog.database import Catalog
from ..catalog.shares import record_contact, set_token

log = logging.getLogger("peerlight.peers")

# A refusal naming one of these concerns one request (a capability the grant lacks, a byte
# allowance used up for today, a filter peers may not use), not the peer: nothing is dropped.
PER_REQUEST = ("capability", "limit", "field")


def refuses_peer(error: WireError) -> bool:
    """Whether ``error`` refuses us as a whole: our grant revoked, expired or unknown there; we
    were unpaired; the share was made members-only."""
    return isinstance(error, Forbidden) and not any(key in error.data for key in PER_REQUEST)


async def drop_if_refused(catalog: Catalog, peer_id: str, error: WireError) -> None:
    """A share that refused us as a whole: the token it no longer honours and our copy of its
    catalog go, so nothing of it is shown from cache."""
    if not refuses_peer(error):
        return
    log.info("a share refused us; its token and cached catalog are dropped", extra={"peer": peer_id, "reason": error.message})

    def drop(conn: Any) -> None:
        set_token(conn, peer_id, None)
        remote_items.forget_catalog(conn, peer_id)

    await catalog.write(drop)


async def remember_failure(catalog: Catalog, peer_id: str, error: str, cause: WireError | None = None) -> None:
    """Record why a request failed. A catalog that cannot be written now (a full disk) is logged:
    this runs in background tasks, which must never take the client down."""
    try:
        await catalog.write(partial(record_contact, peer_id=peer_id, error=error))
        if cause is not None:
            await drop_if_refused(catalog, peer_id, cause)
    except Exception:
        log.exception("recording a failed request failed", extra={"peer": peer_id, "error": error})
