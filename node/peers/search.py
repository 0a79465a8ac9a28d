"""Searching peers' shares: asking each by vector or by text, or ranking its items from our copy
of its catalog when it does not answer; every peer's scores made comparable with ours."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import trio

from peerlight.embeddings.model_ids import is_ordered
from peerlight.embeddings.vectors import normalize
from peerlight.p2p import schema
from peerlight.p2p.errors import Forbidden, RateLimited, WireError

from ..catalog import remote_items
from ..catalog.database import Catalog
from ..catalog.shares import RemoteShare, list_remote, record_contact
from ..search.engine import ROLE_MODALITIES
from .adapters import PeerAdapters
from .contact import drop_if_refused
from .host import PeerHost
from .sync import SYNC_PREFIX_K

TYPICAL_SPREAD = 0.1  # the standard deviation of a query's cosines, when no items tell it
SPREAD_SAMPLE = 2000  # cached prefixes that estimate a query's spread in a space we hold no items of
BUSY_RETRIES = 5  # a busy share is asked again this often within the search's deadline
MAX_BUSY_WAIT = 5.0  # seconds a share may ask us to wait before asking again
STRANGER_PREFIX = SYNC_PREFIX_K  # values of an ordered query vector a stranger's share is sent

# model id -> (the query's vector in it, the mean and spread of its cosine over our own items, if known)
QueryVectors = dict[str, tuple[np.ndarray, float | None, float | None]]


@dataclass
class PeerAnswer:
    remote: RemoteShare
    results: list[dict[str, Any]] | None = None  # the share's own answer
    error: str | None = None  # why there is none
    cached: list[dict[str, Any]] = field(default_factory=list)  # ranked from our copy of its catalog instead


class PeerSearch:
    def __init__(self, catalog: Catalog, host: PeerHost, adapters: PeerAdapters, query_timeout: float) -> None:
        self._catalog = catalog
        self._host = host
        self._adapters = adapters
        self.query_timeout = query_timeout

    async def ask(
        self,
        body: dict[str, Any],
        vectors: QueryVectors,
        bases: dict[str, np.ndarray] | None = None,
        *,
        send_text: bool = False,
        remotes: list[RemoteShare] | None = None,
    ) -> list[PeerAnswer]:
        """Ask the given shares (every known one if None) at once; those that do not answer within the deadline are left out.

        A share whose items live in one of our models' spaces (``vectors``) is asked by vector:
        it refines with its full vectors. If it does not answer, its items are ranked from our
        cached copy of its catalog (K-prefixes) instead, and marked ``from_cache``. Their
        cosines become z-scores against our spread, comparable with local results. A share
        whose space is our base model under another ordering adapter is joined: its adapter
        (fetched once, verified against its model id) turns our base vector (``bases``) into a
        query in its space. Other shares are asked by text, and score on their own z-scores.

        Strangers (shares found by discovery, neither added by the user nor granted to us) learn
        as little of the query as works: a K-prefix of an ordered vector, never the whole vector
        (embedding inversion turns whole vectors back into much of the text), and no text unless
        the user asks (``send_text``); they are ranked from our cached catalog instead.
        """
        requester = await self._host.requester()
        answers = [PeerAnswer(remote) for remote in (remotes if remotes is not None else await self._catalog.read(list_remote))]
        k = body.get("k", 20)
        spaces = {model: await self._with_spread(model, *known) for model, known in vectors.items()}
        bases = bases or {}
        kinds = tuple(body.get("filters", {}).get("modality") or ())

        def models_of(remote: RemoteShare) -> list[str]:
            """The spaces we share with the remote share that hold the kinds of media asked for."""
            offered = [m for m in (remote.manifest or {}).get("models") or [] if m.get("id") in spaces]
            return [m["id"] for m in offered if not kinds or set(ROLE_MODALITIES.get(m.get("space") or "", ())) & set(kinds)]

        async def join_spaces(remote: RemoteShare) -> None:
            """Add the share's ordered spaces whose adapter turns one of our base vectors into a query."""
            for model in (remote.manifest or {}).get("models") or []:
                model_id = model.get("id")
                if model_id in spaces or not isinstance(model_id, str) or not is_ordered(model_id):
                    continue
                adapter = await self._adapters.get(requester, remote, model_id)
                if adapter is not None and adapter.base_model_id in bases:
                    vector = adapter.apply(bases[adapter.base_model_id].reshape(1, -1))[0]
                    spaces[model_id] = await self._with_spread(model_id, vector, None, None)

        async def ask_one(answer: PeerAnswer) -> None:
            remote = answer.remote
            if bases and not remote.stranger:
                await join_spaces(remote)
            models = models_of(remote)
            if remote.stranger:
                models = [model for model in models if is_ordered(model)]
                if not models and not send_text:
                    answer.error = "not asked: a share found by discovery gets no query text (search with --send-text to ask it)"
                    return
            requests = [(None, body)] if not models else [
                (model, {"vector": query_vector(spaces[model][0], remote.stranger), "model_id": model, "k": k, "filters": body.get("filters", {})})
                for model in models
            ]
            best: dict[str, dict[str, Any]] = {}
            try:
                for model, request in requests:
                    reply = await self._asked(requester, remote, request)
                    for result in reply["results"]:  # each checked against the schema: invalid ones are left out
                        if model is not None:
                            result = z_scored(result, *spaces[model][1:])
                        known = best.get(result["content_hash"])
                        if known is None or result_score(result) > result_score(known):
                            best[result["content_hash"]] = result
                answer.results = sorted(best.values(), key=result_score, reverse=True)[:k]
            except WireError as exc:
                answer.error = f"{exc.code}: {exc.message}"
                await drop_if_refused(self._catalog, remote.peer_id, exc)
                if isinstance(exc, Forbidden):
                    await self._catalog.write(partial(record_contact, peer_id=remote.peer_id, error=answer.error))

        with trio.move_on_after(self.query_timeout + 1):
            async with trio.open_nursery() as nursery:
                for answer in answers:
                    nursery.start_soon(ask_one, answer)
        for answer in answers:
            if answer.results is None and answer.error is None:
                answer.error = f"timeout: no answer within {self.query_timeout:g} s"
            if answer.results is None:
                for model in models_of(answer.remote):
                    vector, mean, spread = spaces[model]
                    cached = await self._from_cache(answer.remote.peer_id, model, vector, k, kinds)
                    answer.cached += [z_scored(r, mean, spread) for r in cached]
                answer.cached = sorted(answer.cached, key=result_score, reverse=True)[:k]
        return answers

    async def _asked(self, requester: Any, remote: RemoteShare, request: dict[str, Any]) -> dict[str, Any]:
        """One query's answer; a share that is busy (``rate_limited``: a node holding several of the
        shares asked serves each peer a fair share of its work) is asked again after the wait it
        names, while the search's deadline allows."""
        for attempt in range(BUSY_RETRIES + 1):
            try:
                return await requester.request(remote.peer_id, remote.addresses, schema.QUERY, remote.with_token(request), timeout=self.query_timeout)
            except RateLimited as exc:
                wait = exc.data.get("retry_after")
                if attempt == BUSY_RETRIES or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_BUSY_WAIT:
                    raise
                await trio.sleep(wait)
        raise AssertionError("unreachable")

    async def _with_spread(self, model_id: str, vector: np.ndarray, mean: float | None, spread: float | None) -> tuple[np.ndarray, float, float]:
        """The query's vector with the spread of its cosines: our own items', else the cached peers' items'."""
        if mean is not None and spread is not None:
            return vector, mean, spread
        # A sample is enough for a spread (every cached prefix of a big space would cost seconds and GBs).
        _, matrix = await self._catalog.read(partial(remote_items.cached_prefixes, model_id=model_id, limit=SPREAD_SAMPLE))
        if len(matrix) < 2:
            return vector, 0.0, TYPICAL_SPREAD
        scores = normalize(matrix) @ normalize(vector[: matrix.shape[1]].reshape(1, -1))[0]
        return vector, float(scores.mean()), max(float(scores.std()), 1e-3)

    async def _from_cache(self, peer_id: str, model_id: str, vector: np.ndarray, k: int, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
        """The share's items nearest to ``vector`` (of the given kinds; all if none), ranked from our
        cached K-prefixes of its catalog. (Other filters need what a cache does not hold: dates.)"""
        keys, matrix = await self._catalog.read(partial(remote_items.cached_prefixes, model_id=model_id, peer_id=peer_id))
        if not keys:
            return []
        scores = normalize(matrix) @ normalize(vector[: matrix.shape[1]].reshape(1, -1))[0]
        best = np.argsort(-scores)
        found: list[dict[str, Any]] = []
        window = max(4 * k, 200)  # details are read for the best few only, more if the kinds asked for are rare
        for start in range(0, len(best), window):
            rows = best[start : start + window]
            chosen = [keys[i] for i in rows]
            details = await self._catalog.read(partial(remote_items.cached_items, keys=chosen))
            found += [
                details[key] | {"similarity": round(float(scores[i]), 4), "from_cache": True}
                for key, i in zip(chosen, rows)
                if key in details and (not kinds or details[key]["modality"] in kinds)
            ]
            if len(found) >= k:
                break
        return found[:k]


def query_vector(vector: np.ndarray, stranger: bool) -> bytes:
    """The query as sent: whole for a share the user chose, a K-prefix for a stranger's."""
    return (vector[:STRANGER_PREFIX] if stranger else vector).astype("<f4").tobytes()


def result_score(result: dict[str, Any]) -> float:
    score = result.get("score")
    return float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) and score == score else -10.0


def z_scored(result: dict[str, Any], mean: float, spread: float) -> dict[str, Any]:
    """A peer's result scored as a z-score of its cosine against our spread for the query."""
    similarity = result.get("similarity")
    if not isinstance(similarity, (int, float)) or isinstance(similarity, bool) or not -1.01 <= similarity <= 1.01:
        return result | {"score": -10.0}
    return result | {"score": round((float(similarity) - mean) / spread, 6)}
