"""``feedback.*`` and ``recommend.*``: the user's ratings and events, and what to see next.

Every method here is for the node's own user only (``local_only``): ratings, events and the
model never leave the machine, and peers cannot even ask whether they exist.
"""

from __future__ import annotations

import os
import sqlite3
from functools import partial
from pathlib import Path
from typing import Any

from peerlight.recommender.feedback import DISLIKE_RATING, EVENT_KINDS, LIKE_RATING
from peerlight.recommender.ranking import RankingSettings

from .. import xmp
from ..callers import Caller
from ..catalog import feedback as store
from ..catalog.database import Catalog
from ..control.params import Params
from ..control.protocol import InvalidParams, NotFound
from ..control.server import Handler, Streaming, local_only
from ..files import open_regular, write_atomic
from ..pathnames import decode_path, readable
from ..recommendations import SOURCES, RecommendRequest, Recommendations
from ..search.filters import MODALITIES
from ..threads import run_io

MAX_IMPORT_ROWS = 10_000  # per request; the CLI sends a long CSV in batches
XMP_SCAN_SECONDS = 600.0


class FeedbackMethods:
    def __init__(self, catalog: Catalog, recommendations: Recommendations) -> None:
        self._catalog = catalog
        self._recommendations = recommendations

    def methods(self) -> dict[str, Handler | Streaming]:
        table = {
            "feedback.rate": self.rate,
            "feedback.like": partial(self._fixed, rating=LIKE_RATING, source="like"),
            "feedback.dislike": partial(self._fixed, rating=DISLIKE_RATING, source="dislike"),
            "feedback.unrate": self.unrate,
            "feedback.event": self.event,
            "feedback.list": self.list,
            "feedback.import": self.import_rows,
            "feedback.import_xmp": self.import_xmp,
            "feedback.export_xmp": self.export_xmp,
            "recommend.query": self.recommend,
            "recommend.status": self.status,
            "recommend.retrain": self.retrain,
            "recommend.rollback": self.rollback,
        }
        return {name: local_only(method) for name, method in table.items()}  # ratings never leave the machine

    async def _item(self, params: Params) -> store.ItemRef:
        item = params.key("item")
        try:
            return await self._catalog.read(partial(store.resolve_item, item=item))
        except store.AmbiguousItem as exc:
            raise InvalidParams(str(exc), data={"param": "item"}) from None
        except LookupError as exc:
            raise NotFound(str(exc)) from None

    async def rate(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        rating = float(params.number("rating", min=0, max=10))
        return await self._set(params, rating, "rating")

    async def _fixed(self, raw: dict[str, Any], caller: Caller, rating: float, source: str) -> dict[str, Any]:
        return await self._set(Params(raw), rating, source)

    async def _set(self, params: Params, rating: float, source: str) -> dict[str, Any]:
        ref = await self._item(params)
        params.done()
        await self._catalog.write(partial(store.set_rating, content_hash=ref.content_hash, rating=rating, source=source))
        self._recommendations.changed()
        return {"content_hash": ref.content_hash, "name": ref.name, "local": ref.local, "rating": rating, "source": source}

    async def unrate(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        ref = await self._item(params)
        params.done()
        removed = await self._catalog.write(partial(store.clear_rating, content_hash=ref.content_hash))
        self._recommendations.changed()
        return {"content_hash": ref.content_hash, "name": ref.name, "removed": removed}

    async def event(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """An implicit event from a player or front end: opened, finished, skipped, or watched
        (``value``: the fraction of the item's length, 0 to 1)."""
        params = Params(raw)
        ref = await self._item(params)
        kind = params.choice("kind", EVENT_KINDS)
        value = params.number("value", None, min=0, max=1)
        params.done()
        if kind == "watched" and value is None:
            raise InvalidParams("a watched event needs value: the fraction watched, 0 to 1", data={"param": "value"})
        await self._catalog.write(partial(store.record_event, content_hash=ref.content_hash, kind=kind, value=value))
        self._recommendations.changed()
        return {"content_hash": ref.content_hash, "name": ref.name, "kind": kind, "value": value}

    async def list(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        limit = params.number("limit", 1000, min=1, max=1_000_000, integer=True)
        params.done()

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute("SELECT content_hash, rating, updated_at, source FROM ratings ORDER BY updated_at DESC LIMIT ?", (limit,)).fetchall()
            return [
                {"content_hash": h, "rating": r, "updated_at": at, "source": source, "name": store.describe_hash(conn, h)} for h, r, at, source in rows
            ]

        ratings = await self._catalog.read(read)
        total = await self._catalog.read(lambda conn: conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0])
        return {"ratings": ratings, "total": total}

    async def import_rows(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Ratings from a list (a CSV the CLI read): each row names its item by ``content_hash`` or
        ``path`` and gives ``rating`` (0-10). Rows that name nothing known or carry a bad rating are
        reported, not fatal; the rest are stored."""
        params = Params(raw)
        rows = params.list("rows", max_items=MAX_IMPORT_ROWS)
        params.done()
        accepted, problems = [], []
        for number, row in enumerate(rows, 1):
            try:
                accepted.append(await self._import_row(row))
            except (InvalidParams, NotFound) as exc:
                problems.append({"row": number, "error": exc.message})
        if accepted:
            await self._catalog.write(partial(_store_imported, rows=accepted))
            self._recommendations.changed()
        return {"imported": len(accepted), "problems": problems}

    async def _import_row(self, row: Any) -> tuple[str, float]:
        if not isinstance(row, dict):
            raise InvalidParams("a row must be a map")
        item = row.get("content_hash") or row.get("path")
        rating = row.get("rating")
        if not isinstance(item, (str, bytes)) or not item:
            raise InvalidParams("a row needs content_hash or path")
        if isinstance(rating, str):
            try:
                rating = float(rating)
            except ValueError:
                raise InvalidParams(f"rating {rating[:20]!r} is not a number") from None
        if not isinstance(rating, (int, float)) or isinstance(rating, bool) or not 0 <= rating <= 10:
            raise InvalidParams("rating must be a number within 0..10")
        ref = await self._item(Params({"item": item}))
        return ref.content_hash, float(rating)

    async def import_xmp(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Star ratings from the XMP sidecars beside indexed images (optionally under ``folder``).
        A sidecar older than the rating given here does not replace it: the newer word wins."""
        params = Params(raw)
        folder = params.path("folder", None)
        params.done()
        images = await self._catalog.read(partial(_image_locations, folder=folder))
        known = {h: at for h, _, at, _ in await self._catalog.read(store.ratings)}
        found, problems = await run_io(_read_sidecars, images, timeout=XMP_SCAN_SECONDS, what="reading XMP sidecars")
        newer = [(h, rating, mtime) for h, rating, mtime in found if known.get(h, 0.0) < mtime]
        if newer:
            await self._catalog.write(partial(_store_imported, rows=[(h, r) for h, r, _ in newer], at=None))
            self._recommendations.changed()
        return {"images": len(images), "sidecars": len(found), "imported": len(newer), "problems": problems}

    async def export_xmp(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Each rated image's rating as stars in a sidecar ``IMAGE.xmp`` beside it. A sidecar that
        another program wrote is left as it is (and reported): it may hold the user's edits."""
        params = Params(raw)
        folder = params.path("folder", None)
        params.done()
        images = await self._catalog.read(partial(_image_locations, folder=folder, rated_only=True))
        written, kept = await run_io(_write_sidecars, images, timeout=XMP_SCAN_SECONDS, what="writing XMP sidecars")
        return {"written": written, "kept": kept}

    async def recommend(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        default = self._recommendations.settings.ranking
        request = RecommendRequest(
            limit=params.number("limit", 20, min=1, max=500, integer=True),
            modalities=params.choices("modality", MODALITIES),
            source=params.choice("source", SOURCES, "all"),
            explain=params.flag("explain", False),
            include_rated=params.flag("include_rated", False),
            ranking=RankingSettings(
                exploration=params.number("exploration", default.exploration, min=0, max=10),
                novelty=params.number("novelty", default.novelty, min=0, max=10),
                diversity=params.number("diversity", default.diversity, min=0, max=1),
                temperature=params.number("temperature", default.temperature, min=0, max=100),
                seed=params.number("seed", None, min=0, max=2**32 - 1, integer=True),
            ),
        )
        params.done()
        return await self._recommendations.recommend(request)

    async def status(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        Params(raw).done()
        return await self._recommendations.status()

    async def retrain(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        Params(raw).done()
        return await self._recommendations.retrain()

    async def rollback(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        Params(raw).done()
        try:
            return await self._recommendations.roll_back()
        except LookupError as exc:
            raise NotFound(str(exc)) from None


def _store_imported(conn: sqlite3.Connection, rows: list[tuple[str, float]], at: float | None = None) -> None:
    for content_hash, rating in rows:
        store.set_rating(conn, content_hash, rating, source="import", at=at)


def _image_locations(conn: sqlite3.Connection, folder: str | None, rated_only: bool = False) -> list[tuple[str, str, float | None]]:
    """(content hash, path, rating) of every image location (under ``folder``)."""
    rows = conn.execute(
        """SELECT i.content_hash, l.path, r.rating FROM items AS i JOIN locations AS l ON l.item_id = i.id
           LEFT JOIN ratings AS r ON r.content_hash = i.content_hash
           WHERE i.modality = 'image' AND i.missing_since IS NULL""" + (" AND r.rating IS NOT NULL" if rated_only else "")
    ).fetchall()
    found = [(h, decode_path(p), rating) for h, p, rating in rows]
    if folder is not None:
        prefix = folder.rstrip("/") + "/"
        found = [row for row in found if row[1].startswith(prefix)]
    return found


def _read_sidecars(images: list[tuple[str, str, float | None]]) -> tuple[list[tuple[str, float, float]], list[dict[str, str]]]:
    """(content hash, rating, sidecar mtime) of every image whose sidecar has a rating; problems."""
    found, problems = [], []
    for content_hash, path, _ in images:
        for candidate in xmp.sidecars_of(Path(path)):
            try:
                with open_regular(candidate) as handle:
                    mtime = os.fstat(handle.fileno()).st_mtime
                    rating = xmp.parse_rating(handle.read(xmp.MAX_SIDECAR_BYTES + 1))
            except FileNotFoundError:
                continue
            except (OSError, xmp.SidecarError) as exc:
                problems.append({"path": readable(str(candidate)), "error": str(exc)})
                break
            if rating is not None:
                found.append((content_hash, rating, mtime))
            break
    return found, problems


def _write_sidecars(images: list[tuple[str, str, float | None]]) -> tuple[int, list[str]]:
    written, kept = 0, []
    for _, path, rating in images:
        assert rating is not None
        target = xmp.sidecars_of(Path(path))[0]
        existing = next((c for c in xmp.sidecars_of(Path(path)) if c.exists()), None)
        if existing is not None:
            try:
                with open_regular(existing) as handle:
                    ours = xmp.written_by_us(handle.read(4096))
            except OSError:
                ours = False
            if not ours:
                kept.append(readable(str(existing)))
                continue
            target = existing
        write_atomic(target, xmp.sidecar(rating), mode=0o644)
        written += 1
    return written, kept
