"""``search.*`` and ``items.*``: searching the index, and what it holds about one item."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import trio

from peerlight.p2p.errors import WireError

from ..catalog.database import Catalog
from ..catalog.items import item_info
from ..callers import Caller
from ..control.params import Params
from ..control.protocol import Forbidden, InvalidParams, NotFound, Unavailable
from ..control.server import Handler, Streaming, local_only
from ..peers.client import PeerClient
from ..peers.search import result_score
from ..search.duplicates import find_duplicates
from ..search.engine import MODES, QueryVectors, SearchEngine, SearchError, SearchRequest
from ..search.filters import MODALITIES, Filters, parse_date


class SearchMethods:
    def __init__(self, catalog: Catalog, engine: SearchEngine, peers: PeerClient | None = None) -> None:
        self._catalog = catalog
        self._engine = engine
        self._peers = peers

    def methods(self) -> dict[str, Handler | Streaming]:
        return {
            "search.query": self.query,  # for any caller, within its scope
            "search.similar": local_only(self.similar),  # an example file on this machine
            "search.duplicates": local_only(self.duplicates),
            "items.info": local_only(self.info),
        }

    async def info(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        path = params.path("path")
        params.done()
        try:
            return await self._catalog.read(partial(item_info, path=path))
        except LookupError as exc:
            raise NotFound(str(exc)) from None

    async def query(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        query = params.text("query", max_length=1000)
        if not query.strip():
            raise InvalidParams("the query is empty", data={"param": "query"})
        mode = params.choice("mode", MODES, "hybrid")
        limit = params.number("limit", 20, min=1, max=1000, integer=True)
        filters = _filters(params, caller)
        with_peers = params.flag("peers", False)
        routed_globally = params.flag("global", False)
        send_text = params.flag("send_text", False)
        params.done()
        request = SearchRequest(query, mode, limit, filters)
        if not with_peers and not routed_globally:
            try:
                return await self._engine.search(request, caller)
            except SearchError as exc:
                raise Unavailable(str(exc)) from None
        if not caller.is_local:
            raise Forbidden("only the node's own user may search through it")
        if self._peers is None:
            raise Unavailable("networking is off (network.enabled = false)")
        if filters.folder is not None or filters.rating_min is not None or filters.rating_max is not None:
            raise InvalidParams("folder and rating filters apply to this node only; search peers without them", data={"param": "peers"})
        if routed_globally and request.mode == "text":
            raise InvalidParams("global search routes by meaning: use the semantic or hybrid mode", data={"param": "mode"})
        return await self._with_peers(request, caller, send_text, routed_globally)

    async def _with_peers(self, request: SearchRequest, caller: Caller, send_text: bool = False, routed_globally: bool = False) -> dict[str, Any]:
        """Local and peers' results in one ranking; peers that do not answer in time are named, not waited for.

        Results are merged on z-scores: a cosine measured against the spread of the query's cosines
        in its model's space, as local search merges its spaces (a peer asked by vector scores with
        its full vectors; a peer that did not answer is ranked from our cached K-prefixes of its
        catalog). A peer asked by text (no model in common) contributes its own z-scores.
        """
        assert self._peers is not None
        started = time.perf_counter()
        local: dict[str, Any] = {"results": [], "warnings": []}
        answers = []
        # Embedded once, for this node's search and for the peers' (it took two encoder passes).
        query = await self._engine.query_vectors(request.query) if request.mode != "text" else QueryVectors({}, {}, {})

        async def ask_local() -> None:
            nonlocal local
            try:
                local = await self._engine.search(request, caller, query.by_role)
            except SearchError as exc:
                local["warnings"].append(str(exc))

        routing = None
        routing_warnings: list[str] = []

        async def ask_peers() -> None:
            nonlocal answers, routing
            assert self._peers is not None
            try:
                if routed_globally:
                    routing = await self._peers.routing.find(query.by_model)
                else:
                    routing = await self._peers.routing.among_known(query.by_model)
            except WireError as exc:
                routing_warnings.append(f"global search: {exc.message}")
                return
            answers = await self._peers.search.ask(peer_query(request), query.by_model, query.bases, send_text=send_text, remotes=routing.remotes)
            for answer in answers:
                if answer.results is not None or not (answer.error or "").startswith("not asked"):  # left out by us is not silence
                    self._peers.routing.answered(answer.remote.peer_id, answer.results is not None)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_local)
            nursery.start_soon(ask_peers)
        results = [result | {"source": "local"} for result in local["results"]]
        peers, warnings = [], list(local["warnings"]) + routing_warnings
        for answer in answers:
            remote = answer.remote
            given = answer.results if answer.results is not None else answer.cached
            peers.append(
                {"peer_id": remote.peer_id, "name": remote.name, "answered": answer.results is not None, "results": len(given), "error": answer.error}
            )
            if answer.results is None:
                shown = f"{len(given)} results from its cached catalog" if given else "left out"
                warnings.append(f"{remote.name or remote.peer_id} did not answer ({answer.error}); {shown}")
            for result in given:
                results.append(result | {"source": "peer", "peer_id": remote.peer_id, "share": remote.name})
        results.sort(key=result_score, reverse=True)
        return {
            "query": request.query,
            "mode": request.mode,
            "results": results[: request.limit],
            "warnings": warnings,
            "peers": peers,
            **({"routing": routing.describe()} if routing is not None else {}),
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    async def similar(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        path = params.path("path")
        limit = params.number("limit", 20, min=1, max=1000, integer=True)
        filters = _filters(params, caller)
        params.done()
        try:
            return await self._engine.similar(path, limit, filters, caller)
        except SearchError as exc:
            raise NotFound(str(exc)) from None

    async def duplicates(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        threshold = params.number("threshold", 0.95, min=0.5, max=1.0)
        modalities = params.choices("modality", MODALITIES) or MODALITIES
        params.done()
        return await self._catalog.read(partial(find_duplicates, threshold=threshold, modalities=modalities))


def peer_query(request: SearchRequest) -> dict[str, Any]:
    """The query protocol's request for a search of the local user's (what peers may be asked)."""
    filters = {
        key: value
        for key, value in {
            "modality": list(request.filters.modalities),
            "date_from": request.filters.date_from,
            "date_to": request.filters.date_to,
            "size_min": request.filters.size_min,
            "size_max": request.filters.size_max,
        }.items()
        if value not in (None, [])
    }
    return {"text": request.query, "mode": request.mode, "k": min(request.limit, 200), "filters": filters}


def _filters(params: Params, caller: Caller) -> Filters:
    """The request's filters; a peer may not filter by rating (ratings never leave the machine)
    or by folder (this machine's paths are not its business)."""
    def date(key: str) -> str | None:
        value = params.text(key, None, max_length=40)
        if value is None:
            return None
        try:
            return parse_date(value)
        except ValueError as exc:
            raise InvalidParams(str(exc), data={"param": key}) from None

    folder = params.path("folder", None)
    filters = Filters(
        modalities=params.choices("modality", MODALITIES),
        rating_min=params.number("rating_min", None, min=0, max=10),
        rating_max=params.number("rating_max", None, min=0, max=10),
        date_from=date("date_from"),
        date_to=date("date_to"),
        size_min=params.number("size_min", None, min=0, integer=True),
        size_max=params.number("size_max", None, min=0, integer=True),
        folder=folder,
    )
    private = ("rating_min", "rating_max", "folder")
    if not caller.is_local and any(getattr(filters, key) is not None for key in private):
        raise Forbidden("rating and folder filters are for the node's own user only")
    return filters
