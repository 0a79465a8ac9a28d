"""``devices.*``: pairing this node with the user's other nodes, listing and unpairing them."""

from __future__ import annotations

from functools import partial
from typing import Any

from peerlight.p2p.errors import Forbidden

from ..callers import Caller
from ..catalog import devices
from ..catalog.database import Catalog
from ..catalog.shares import SCOPES
from ..control.params import Params
from ..control.protocol import InvalidParams, NotFound, Unavailable
from ..control.server import Emit, Handler, Streaming, local_only
from ..pairing import Pairing, PairingError
from ..serving.servers import DataServers


class DeviceMethods:
    def __init__(self, catalog: Catalog, pairing: Pairing | None, servers: DataServers | None) -> None:
        self._catalog = catalog
        self._pairing = pairing
        self._servers = servers

    def methods(self) -> dict[str, Handler | Streaming]:
        return {
            "devices.pair": local_only(Streaming(self.pair)),
            "devices.list": local_only(self.list),
            "devices.unpair": local_only(self.unpair),
        }

    async def pair(self, raw: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        """Without ``join``: offer pairing, emit the code, and wait for the other node to use it.
        With ``join`` (``CODE@MULTIADDR``, as the offering node printed it): pair with that node."""
        params = Params(raw)
        join = params.text("join", None, max_length=1000)
        scope = params.choice("scope", SCOPES, "lan")
        params.done()
        if self._pairing is None:
            raise Unavailable("networking is off (network.enabled = false)")
        try:
            if join is not None:
                code, _, address = join.partition("@")
                if not address:
                    raise InvalidParams("join with CODE@ADDRESS, as the other node printed it", data={"param": "join"})
                return {"paired": await self._pairing.join(code, address, scope)}
            offered = await self._pairing.offer(scope)
            await emit({"event": "offer", **offered})
            return {"paired": await self._pairing.wait()}
        except PairingError as exc:
            raise Unavailable(str(exc)) from None

    async def list(self, raw: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        Params(raw).done()
        return await self._catalog.read(devices.list_devices)

    async def unpair(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        key = params.text("device", max_length=200)
        params.done()
        try:
            removed = await self._catalog.write(partial(devices.remove_device, key=key))
        except LookupError as exc:
            raise NotFound(str(exc)) from None
        if self._servers is not None:
            await self._servers.refresh_devices()
            for current in list(self._servers.shares.values()):
                if current.server is not None:
                    current.server.cancel_peer(removed["peer_id"], Forbidden("this device was unpaired", {"permission": "devices"}))  # what it runs on our devices share stops too
        return removed
