"""How well an importance ordering suits one library: its prefixes against the library's own PCA.

The shipped text ordering is universal: every node on defaults orders its vectors the same
way, so peers compare prefixes directly. Its price shows on a library unlike the text it
was trained on — on the King James Bible, left out of its training, its K = D/8 prefix
finds 0.72× the true neighbours a PCA fit to the Bible itself finds. A node can measure
that price on its own stored vectors, so that its user can choose with figures between the
universal space (comparable with every peer) and an ordering trained on the library (better
prefixes here, comparable only by peers that fetch its adapter).

The PCA here is fit on the stored (already ordered) vectors; whole vectors keep ≥ 0.98 of
the base top 10, so it stands for the PCA of the base vectors, and an adapter trained on
the library does at least as well as it (1.05× on the Bible).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .adapters import pca_adapter
from .vectors import normalize

MIN_VECTORS = 100  # fewer than this give no meaningful neighbours
NEIGHBOURS = 10


class TooFewVectors(ValueError):
    """Not enough stored vectors to judge an ordering on."""


@dataclass(frozen=True)
class OrderingFit:
    vectors: int  # searched
    queries: int  # held out of the searched vectors
    prefix_len: int
    prefix_recall: float  # recall@10 of the stored K-prefixes, against search with whole vectors
    own_pca_recall: float  # the same after a PCA fit to these vectors: what this library's own ordering reaches

    @property
    def ratio(self) -> float:
        return self.prefix_recall / self.own_pca_recall if self.own_pca_recall else 1.0

    def to_wire(self) -> dict[str, float | int]:
        return {**vars(self), "ratio": round(self.ratio, 3)}


def nearest(queries: np.ndarray, corpus: np.ndarray, count: int = NEIGHBOURS) -> np.ndarray:
    """Each query's ``count`` nearest corpus rows by inner product (exact), best first."""
    import faiss

    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(np.ascontiguousarray(corpus, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), count)[1]


def share_found(found: np.ndarray, truth: np.ndarray) -> float:
    """Recall: the mean share of each row's true neighbours that ``found`` holds."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def prefix_recall(queries: np.ndarray, corpus: np.ndarray, truth: np.ndarray, prefix_len: int) -> float:
    """Recall of search by renormalised K-prefixes (what peers compare) against ``truth``."""
    return share_found(nearest(normalize(queries[:, :prefix_len]), normalize(corpus[:, :prefix_len])), truth)


def ordering_fit(vectors: np.ndarray, prefix_len: int | None = None, queries: int = 200, seed: int = 0) -> OrderingFit:
    """Judge the ordering of ``vectors`` (a library's stored vectors, importance-ordered) at
    ``prefix_len`` (default D/8, the length searches use): ``queries`` of them, drawn at random,
    search the rest by K-prefix, in the stored order and after the library's own PCA."""
    x = normalize(np.asarray(vectors, dtype=np.float32))
    if x.ndim != 2 or len(x) < MIN_VECTORS:
        raise TooFewVectors(f"{len(x)} vectors; at least {MIN_VECTORS} are needed")
    k = prefix_len or max(1, x.shape[1] // 8)
    count = min(queries, len(x) // 5)
    chosen = np.zeros(len(x), dtype=bool)
    chosen[np.random.default_rng(seed).choice(len(x), count, replace=False)] = True
    asked, searched = x[chosen], x[~chosen]
    truth = nearest(asked, searched)
    pca = pca_adapter("library", searched)
    return OrderingFit(
        vectors=len(searched),
        queries=count,
        prefix_len=k,
        prefix_recall=round(prefix_recall(asked, searched, truth, k), 4),
        own_pca_recall=round(prefix_recall(pca.apply(asked), pca.apply(searched), truth, k), 4),
    )


FUNNEL_TARGET = 0.99  # the share of the exact top 10 the funnel should keep
FUNNEL_SAMPLE = 50_000  # vectors the shortlist is measured on (scaled up to the whole library)


@dataclass(frozen=True)
class FunnelFit:
    """The prefix shortlist a library needs: how deep in the K-prefix ranking its exact neighbours lie."""

    vectors: int  # in the library
    measured_on: int  # the sample searched
    queries: int
    prefix_len: int
    target: float
    shortlist: int  # the shortest shortlist that keeps ``target`` of the exact top 10 (for the whole library)
    recall_at: dict[int, float]  # shortlist -> the share of the exact top 10 it keeps (for the whole library)

    def to_wire(self) -> dict[str, object]:
        return {**vars(self), "recall_at": {str(k): v for k, v in self.recall_at.items()}}


def funnel_fit(
    vectors: np.ndarray, prefix_len: int, target: float = FUNNEL_TARGET, queries: int = 200, seed: int = 0, library_size: int | None = None
) -> FunnelFit:
    """Where a library's exact top 10 lie in its K-prefix ranking, and so the shortlist the funnel needs.

    ``queries`` stored vectors, held out, search a sample of the rest (``FUNNEL_SAMPLE`` at
    most) exactly; each true neighbour's rank among the sample by K-prefix is counted. Ranks
    grow with the library, so a rank in a sample of m out of n stands for n/m of them. The
    shortlist is the ``target`` quantile of those ranks: a library whose prefixes rank well
    (the text it was trained on) gets a short one, one unlike it (software descriptions) a longer one.
    ``vectors`` may be a sample of a library of ``library_size`` vectors.
    """
    x = normalize(np.asarray(vectors, dtype=np.float32))
    if x.ndim != 2 or len(x) < MIN_VECTORS:
        raise TooFewVectors(f"{len(x)} vectors; at least {MIN_VECTORS} are needed")
    rng = np.random.default_rng(seed)
    count = min(queries, len(x) // 5)
    order = rng.permutation(len(x))
    asked = x[order[:count]]
    searched = x[order[count : count + FUNNEL_SAMPLE]]
    size = library_size or len(x)
    scale = (size - count) / len(searched)
    truth = nearest(asked, searched)
    prefixes = normalize(searched[:, :prefix_len])
    ranks = []
    for query, neighbours in zip(normalize(asked[:, :prefix_len]), truth):
        scores = prefixes @ query
        ranks += [int(np.sum(scores > scores[n])) for n in neighbours]
    scaled = np.asarray(ranks, dtype=np.float64) * scale
    needed = int(np.ceil(np.quantile(scaled, target))) + 1
    depths = sorted({100, 200, 500, 1000, 2000, 5000, needed})
    return FunnelFit(
        vectors=size,
        measured_on=len(searched),
        queries=count,
        prefix_len=prefix_len,
        target=target,
        shortlist=needed,
        recall_at={depth: round(float(np.mean(scaled < depth)), 4) for depth in depths},
    )
