"""Search over importance-ordered vectors: a quantised prefix index with exact rerank.

Importance-ordered vectors let the first K values stand in for the whole: a query is first
compared with every item's K-prefix (L2-renormalised, int8 scalar-quantised, so K bytes an
item), and only a shortlist of the best is reranked on full vectors — the "funnel". Modes:

- ``exact``: full-dimension inner product over everything (the reference);
- ``prefix``: prefix scores only (what a peer can answer from shared prefixes alone);
- ``funnel``: prefix shortlist, then exact rerank.

One index holds one model id: vectors of different models are never compared, so adding
vectors of another model id is refused. The index persists to a directory and is updated
incrementally (add replaces vectors with the same id; remove drops ids).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .vectors import normalize

MODES = ("exact", "funnel", "prefix")
FORMAT_VERSION = 1


class ModelMismatch(ValueError):
    """Vectors of one model id were offered to an index of another."""


@dataclass(frozen=True)
class PrefixHits:
    ids: np.ndarray  # int64, best first
    scores: np.ndarray  # float32: exact cosine for exact/funnel, prefix cosine for prefix


def prefix_of(vectors: np.ndarray, prefix_len: int) -> np.ndarray:
    """The renormalised K-prefix of each row: what peers exchange and compare."""
    return normalize(np.asarray(vectors, dtype=np.float32)[..., :prefix_len])


_NO_HITS = PrefixHits(np.zeros(0, np.int64), np.zeros(0, np.float32))


class PrefixIndex:
    def __init__(self, model_id: str, dimension: int, prefix_len: int, quantizer: str = "int8") -> None:
        import faiss

        if not 1 <= prefix_len <= dimension:
            raise ValueError(f"prefix length must be within 1..{dimension}, got {prefix_len}")
        if quantizer not in ("int8", "fp16"):
            raise ValueError(f"quantizer must be int8 or fp16, got {quantizer!r}")
        self.model_id = model_id
        self.dimension = dimension
        self.prefix_len = prefix_len
        self.quantizer = quantizer
        kind = faiss.ScalarQuantizer.QT_8bit_uniform if quantizer == "int8" else faiss.ScalarQuantizer.QT_fp16
        self._prefixes = faiss.IndexScalarQuantizer(prefix_len, kind, faiss.METRIC_INNER_PRODUCT)
        if quantizer == "int8":
            # Prefixes are unit vectors: every value lies in [-1, 1], so a fixed range needs no training data.
            self._prefixes.train(np.array([[-1.0] * prefix_len, [1.0] * prefix_len], dtype=np.float32))
        # Full vectors and ids live in buffers that grow geometrically, so that adding a
        # small batch to a large index costs the batch, not a copy of the whole index.
        self._vector_buffer = np.zeros((0, dimension), dtype=np.float32)
        self._id_buffer = np.zeros(0, dtype=np.int64)
        self._count = 0
        self._row_of: dict[int, int] = {}
        self._lock = threading.RLock()
        # Caller's bookkeeping saved atomically with the vectors (e.g. how far a journal was applied).
        self.annotations: dict = {}

    def __len__(self) -> int:
        return self._count

    @property
    def _full(self) -> np.ndarray:
        return self._vector_buffer[: self._count]

    @property
    def _ids(self) -> np.ndarray:
        return self._id_buffer[: self._count]

    def ids(self) -> np.ndarray:
        """Every id held (a copy), in storage order."""
        with self._lock:
            return self._ids.copy()

    @property
    def prefix_bytes_per_item(self) -> int:
        return self.prefix_len * (1 if self.quantizer == "int8" else 2)

    # --- updates ---

    def add(self, model_id: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        if model_id != self.model_id:
            raise ModelMismatch(f"this index holds {self.model_id} vectors, not {model_id}")
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = normalize(np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1))
        if vectors.shape[1] != self.dimension:
            raise ValueError(f"expected {self.dimension}-dimensional vectors, got {vectors.shape[1]}")
        if len(set(ids.tolist())) != len(ids):
            raise ValueError("duplicate ids in one add")
        with self._lock:
            self.remove(ids)
            start = self._count
            self._prefixes.add(prefix_of(vectors, self.prefix_len))
            self._reserve(start + len(ids))
            self._vector_buffer[start : start + len(ids)] = vectors
            self._id_buffer[start : start + len(ids)] = ids
            self._count += len(ids)
            self._row_of.update((int(vid), start + i) for i, vid in enumerate(ids))

    def _reserve(self, rows: int) -> None:
        if rows <= len(self._id_buffer):
            return
        capacity = max(rows, 2 * len(self._id_buffer), 1024)
        vectors = np.zeros((capacity, self.dimension), dtype=np.float32)
        ids = np.zeros(capacity, dtype=np.int64)
        vectors[: self._count] = self._full
        ids[: self._count] = self._ids
        self._vector_buffer, self._id_buffer = vectors, ids

    def remove(self, ids: np.ndarray) -> int:
        """Drop these ids (unknown ones are ignored); returns how many were removed."""
        with self._lock:
            rows = sorted(self._row_of[int(v)] for v in np.asarray(ids).reshape(-1) if int(v) in self._row_of)
            if not rows:
                return 0
            import faiss

            keep = np.ones(self._count, dtype=bool)
            keep[rows] = False
            self._prefixes.remove_ids(faiss.IDSelectorBatch(np.array(rows, dtype=np.int64)))
            kept_vectors, kept_ids = self._full[keep], self._ids[keep]
            self._count = len(kept_ids)
            self._vector_buffer[: self._count] = kept_vectors
            self._id_buffer[: self._count] = kept_ids
            self._row_of = {int(v): i for i, v in enumerate(self._ids)}
            return len(rows)

    # --- search ---

    def search(
        self,
        query: np.ndarray,
        k: int,
        prefix_len: int | None = None,
        shortlist: int = 200,
        mode: str = "funnel",
        *,
        group_size: int = 1,
        allowed: np.ndarray | None = None,
    ) -> PrefixHits:
        """The best ``k`` groups for ``query``, each by its best id (best first).

        Ids are grouped by ``id // group_size`` (the node gives an item's vectors — the whole,
        its chunks, its moments — consecutive ids), so ``k`` means k distinct items and a few
        items with many vectors cannot crowd the others out. ``allowed`` (group ids) restricts
        the search *inside* the index (a FAISS selector over the prefix scan, a mask for the
        exact scan): a restrictive filter still gets its true top k, not what survives of a
        fixed number of unrestricted candidates.

        A ``query`` shorter than the index's vectors is a K-prefix (what a peer sends): it is
        compared with the renormalised K-prefix of every vector, the cosine peers agree on.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if prefix_len is not None and prefix_len != self.prefix_len:
            raise ValueError(f"this index holds {self.prefix_len}-prefixes, not {prefix_len}")
        query = normalize(np.asarray(query, dtype=np.float32).reshape(1, -1))[0]
        if not 1 <= len(query) <= self.dimension:
            raise ValueError(f"a query of {len(query)} values for {self.dimension}-dimensional vectors")
        with self._lock:
            n = self._count
            if n == 0 or k <= 0:
                return _NO_HITS
            groups = self._ids // group_size
            mask = np.isin(groups, np.asarray(allowed, dtype=np.int64)) if allowed is not None else None
            eligible = int(mask.sum()) if mask is not None else n
            if eligible == 0:
                return _NO_HITS
            if mode == "exact":
                rows = np.flatnonzero(mask) if mask is not None else np.arange(n)
                scores = self._scores(rows if mask is not None else None, query)
                count = 8 * k  # sorting only the best few rows is enough unless groups repeat a lot
                while True:
                    top = np.argpartition(-scores, count - 1)[:count] if count < len(rows) else np.arange(len(rows))
                    hits = self._best_per_group(rows[top], scores[top], groups, k)
                    if len(hits.ids) >= k or count >= len(rows):
                        return hits
                    count *= 4
            selector = self._selector(mask) if mask is not None else None
            # Widen the prefix shortlist until it holds k groups (or everything eligible).
            count = k if mode == "prefix" else max(shortlist, k)
            while True:
                rows, prefix_scores = self._prefix_rows(query, min(count, eligible), selector)
                scores = prefix_scores if mode == "prefix" else self._scores(rows, query)
                hits = self._best_per_group(rows, scores, groups, k)
                if len(hits.ids) >= k or count >= eligible:
                    return hits
                count *= 4

    def similarity_spread(self, query: np.ndarray, sample: int = 2048) -> tuple[float, float]:
        """Mean and standard deviation of the query's cosine over (an even sample of) all vectors.

        A cosine means little alone: CLIP's text-to-image cosines sit near 0.25, MiniLM's
        text-to-text ones near 0.5. Measured against its own space's spread for this query,
        a match becomes a z-score that can be compared across spaces.
        """
        query = normalize(np.asarray(query, dtype=np.float32).reshape(1, -1))[0]
        with self._lock:
            if self._count == 0:
                return 0.0, 1.0
            rows = np.linspace(0, self._count - 1, min(sample, self._count)).astype(np.int64)
            scores = self._full[rows] @ query
        return float(scores.mean()), float(scores.std())

    def _scores(self, rows: np.ndarray | None, query: np.ndarray) -> np.ndarray:
        """Cosines of ``query`` with the vectors at ``rows`` (None: all, without copying them);
        a shorter query is scored against the vectors' renormalised prefixes of its length."""
        vectors = self._full if rows is None else self._full[rows]
        if len(query) == self.dimension:
            return vectors @ query
        return prefix_of(vectors, len(query)) @ query

    def _selector(self, mask: np.ndarray):  # type: ignore[no-untyped-def]
        import faiss

        bits = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        selector.referenced_bits = bits  # FAISS keeps a pointer: the array must outlive the selector
        return selector

    def _prefix_rows(self, query: np.ndarray, count: int, selector=None) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
        import faiss

        params = faiss.SearchParameters(sel=selector) if selector is not None else None
        if len(query) < self.prefix_len:  # a peer's shorter prefix: the missing values count as zero
            query = np.pad(query, (0, self.prefix_len - len(query)))
        scores, rows = self._prefixes.search(prefix_of(query, self.prefix_len).reshape(1, -1), count, params=params)
        valid = rows[0] >= 0
        return rows[0][valid], scores[0][valid]

    def _best_per_group(self, rows: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int) -> PrefixHits:
        """The best row of each group among ``rows``, the ``k`` best groups, best first."""
        order = rows[np.argsort(-scores, kind="stable")]
        ranked = -np.sort(-scores, kind="stable")
        _, first = np.unique(groups[order], return_index=True)
        first = np.sort(first)[:k]
        return PrefixHits(self._ids[order[first]], ranked[first].astype(np.float32))

    def vector(self, vid: int) -> np.ndarray:
        with self._lock:
            return self._full[self._row_of[int(vid)]].copy()

    def vectors(self, vids: np.ndarray) -> np.ndarray:
        """The full vectors of these ids (all held), in that order."""
        with self._lock:
            return self._full[[self._row_of[int(v)] for v in np.asarray(vids).reshape(-1)]].copy()

    def sample(self, count: int, seed: int = 0) -> np.ndarray:
        """``count`` full vectors drawn at random (all of them if fewer), copied."""
        with self._lock:
            rows = np.random.default_rng(seed).choice(self._count, min(count, self._count), replace=False)
            return self._full[np.sort(rows)].copy()

    def leading_prefixes(self, group_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The ids and K-prefixes (as stored, before renormalising) of the first vector of every
        group (ids divisible by ``group_size``: a whole item, not its chunks): a model trained on
        prefixes scores every item from these, and only a shortlist from the full vectors."""
        with self._lock:
            leading = np.flatnonzero(self._ids % group_size == 0)
            return self._ids[leading].copy(), self._full[leading, : self.prefix_len]

    # --- persistence ---

    def write_files(self, folder: Path) -> None:
        """Write the index's files into ``folder`` (which exists); :meth:`load` reads them back.

        Making the write atomic and durable (a staging folder, fsync, rename) is the caller's
        part: the node does it for every file it writes, in one place.
        """
        import faiss

        with self._lock:
            # Serialised here and written by Python, so a failed write raises (faiss's own file
            # writer only prints a failed close, and a full disk would leave a torn file).
            (folder / "prefixes.faiss").write_bytes(faiss.serialize_index(self._prefixes).tobytes())
            np.save(folder / "full.npy", self._full)
            np.save(folder / "ids.npy", self._ids)
            meta = {
                "format": FORMAT_VERSION,
                "model_id": self.model_id,
                "dimension": self.dimension,
                "prefix_len": self.prefix_len,
                "quantizer": self.quantizer,
                "count": self._count,
                "annotations": self.annotations,
            }
        (folder / "meta.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path) -> PrefixIndex:
        import faiss

        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{folder}: unsupported index format {meta.get('format')!r}")
        index = cls(meta["model_id"], meta["dimension"], meta["prefix_len"], meta["quantizer"])
        index._prefixes = faiss.deserialize_index(np.fromfile(folder / "prefixes.faiss", dtype=np.uint8))
        index._vector_buffer = np.load(folder / "full.npy")
        index._id_buffer = np.load(folder / "ids.npy")
        index._count = len(index._id_buffer)
        if not (len(index._id_buffer) == len(index._vector_buffer) == index._prefixes.ntotal == meta["count"]):
            raise ValueError(f"{folder}: the index files disagree on the number of vectors")
        index._row_of = {int(v): i for i, v in enumerate(index._ids)}
        index.annotations = dict(meta.get("annotations") or {})
        return index
