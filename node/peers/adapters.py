"""Peers' ordering adapters: fetched once per model id, verified against it, kept.

A share's ordered vectors live in the space of ``base model + adapter``; a node with the same
base model but another adapter (or none) can join that space for a query by applying the
share's adapter to its own base vector. An adapter proves itself: its model id is a hash of
its base model id, its weights and its dimension, so the bytes received are checked against
the id asked for, and any share's adapter for that id will do.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile

import numpy as np
import trio

from peerlight.embeddings.adapters import FORMAT, Adapter, AdapterError
from peerlight.p2p import schema
from peerlight.p2p.client import Requester
from peerlight.p2p.errors import Timeout, Unreachable, WireError

from ..catalog.shares import RemoteShare

log = logging.getLogger("peerlight.peers")

MAX_ADAPTER_BYTES = schema.MAX_ADAPTER_BYTES  # the file, as sent
MAX_ADAPTER_INFLATED = 64 * 1024 * 1024  # its arrays, inflated (a 384-wide adapter is ~2 MB)
MAX_ADAPTER_MEMBERS = 8


class PeerAdapters:
    """Verified adapters by the model id they produce, and the shares whose answer was no good."""

    def __init__(self, query_timeout: float) -> None:
        self._query_timeout = query_timeout
        self._adapters: dict[str, Adapter] = {}
        self._refused: set[tuple[str, str]] = set()  # (share, model id) whose adapter was refused: not asked again

    async def get(self, requester: Requester, remote: RemoteShare, model_id: str) -> Adapter | None:
        """The adapter for ``model_id``, asked of ``remote`` once unless already held (None if it has none)."""
        if model_id in self._adapters or (remote.peer_id, model_id) in self._refused:
            return self._adapters.get(model_id)
        adapter = None
        try:
            reply = await requester.request(
                remote.peer_id, remote.addresses, schema.ADAPTER, remote.with_token({"model_id": model_id}), timeout=self._query_timeout
            )
            adapter = await trio.to_thread.run_sync(verified_adapter, reply["adapter"], model_id)
        except (Unreachable, Timeout):
            return None  # not an answer about the adapter: ask again next time
        except (WireError, AdapterError) as exc:
            log.info("no usable adapter from a peer", extra={"peer": remote.peer_id, "model": model_id, "reason": str(exc)})
        if adapter is None:  # this share's answer is no good; another share of the space may still have one
            self._refused.add((remote.peer_id, model_id))
        else:
            self._adapters[model_id] = adapter
        return adapter

    def forget(self, peer_id: str) -> None:
        """A share was removed: what was remembered of its answers goes."""
        self._refused = {key for key in self._refused if key[0] != peer_id}


def _check_inflated_size(data: bytes) -> None:
    """Refuse a zip bomb before inflating it: the members' declared sizes bound what zipfile inflates
    (it stops reading a member at its declared size), so they are checked first."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise AdapterError(f"not an adapter file: {exc}") from None
    if len(members) > MAX_ADAPTER_MEMBERS:
        raise AdapterError(f"an adapter file of {len(members)} members")
    inflated = sum(member.file_size for member in members)
    if inflated > MAX_ADAPTER_INFLATED:
        raise AdapterError(f"an adapter file that inflates to {inflated:,} bytes (at most {MAX_ADAPTER_INFLATED:,})")


def verified_adapter(data: bytes, model_id: str) -> Adapter:
    """The adapter in ``data`` if it produces ``model_id``; AdapterError otherwise (hostile bytes included)."""
    if len(data) > MAX_ADAPTER_BYTES:
        raise AdapterError("an adapter larger than 32 MiB")
    _check_inflated_size(data)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            header = json.loads(bytes(arrays["header"]).decode())
            parts = {k: np.asarray(arrays[k], dtype=np.float32) for k in ("rotation", "hidden_weight", "hidden_bias", "out_weight", "out_bias")}
    except Exception as exc:  # np.load on hostile bytes raises many kinds
        raise AdapterError(f"not an adapter file: {type(exc).__name__}: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("base_model_id"), str):
        raise AdapterError("not an adapter of a known format")
    d_in, hidden = parts["rotation"].shape[0], parts["hidden_weight"].shape[1] if parts["hidden_weight"].ndim == 2 else -1
    shapes = (
        parts["rotation"].ndim == 2
        and parts["hidden_weight"].shape == (d_in, hidden)
        and parts["hidden_bias"].shape == (hidden,)
        and parts["out_weight"].shape == (hidden, d_in)
        and parts["out_bias"].shape == (d_in,)
    )
    if sum(p.nbytes for p in parts.values()) > MAX_ADAPTER_INFLATED:
        raise AdapterError("an adapter larger than 64 MiB inflated")
    if not shapes or not all(np.isfinite(p).all() for p in parts.values()):
        raise AdapterError("an adapter with inconsistent shapes or values")
    info = header.get("info") if isinstance(header.get("info"), dict) else {}
    adapter = Adapter(header["base_model_id"], info=info, **parts)
    if adapter.model_id != model_id:
        raise AdapterError(f"the adapter produces {adapter.model_id}, not {model_id}")
    return adapter
