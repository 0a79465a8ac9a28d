"""The funnel's shortlist fitted to the library, on a library no one tuned on: Debian's package summaries.

30,000 one-line package summaries (Debian bookworm's ``Translation-en``; never trained or tuned
on) are embedded with the real all-MiniLM-L6-v2 and stored in the shipped ordered space. The
node's fit (``funnel_fit``: where the library's own exact top 10 lie in its K = 48 prefix
ranking, measured on held-out items of the library) picks the shortlist; 400 other summaries,
never in the library, then search it with the real ``PrefixIndex`` funnel at the fixed 500 and
at the fitted shortlist, against exact search over the same stored vectors.

Latency at 100,000 and 1,000,000 items: vectors drawn from the library's covariance (their
neighbours mean nothing, so their recall is not reported), searched at 500 and at the fitted
shortlist scaled with the library's size (ranks grow with it, as the fit assumes).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, median  # noqa: E402

from peerlight.embeddings.adapters import Adapter  # noqa: E402
from peerlight.embeddings.default_adapters import file_for  # noqa: E402
from peerlight.embeddings.ordering_fit import funnel_fit, nearest  # noqa: E402
from peerlight.embeddings.prefix_index import PrefixIndex  # noqa: E402
from peerlight.embeddings.vectors import normalize  # noqa: E402

PREFIX = 48


def summaries(count: int) -> list[str]:
    from text_sources import _debian_descriptions

    seen, kept = set(), []
    for _, summary, _ in _debian_descriptions():
        if len(summary.split()) >= 3 and summary.lower() not in seen:
            seen.add(summary.lower())
            kept.append(summary)
    np.random.default_rng(0).shuffle(kept)
    if len(kept) < count:
        raise SystemExit(f"{len(kept)} distinct summaries, fewer than {count}")
    return kept[:count]


def timed(index: PrefixIndex, probes: np.ndarray, shortlist: int) -> float:
    took = []
    for probe in probes:
        started = time.perf_counter()
        index.search(probe, 10, shortlist=shortlist, mode="funnel")
        took.append((time.perf_counter() - started) * 1000)
    return round(median(took), 3)


def drawn(library: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    factor = np.linalg.cholesky(np.cov(library.T) + 1e-9 * np.eye(library.shape[1]))
    mean = library.mean(axis=0)
    out = np.empty((count, library.shape[1]), np.float32)
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        out[start : start + n] = normalize(mean + rng.normal(size=(n, len(mean))) @ factor.T)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", type=int, default=30_000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--sizes", default="100000,1000000")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import prefix_quality as pq

    model = pq.encoder()
    texts = summaries(args.library + args.queries)
    base = np.concatenate([pq.encoded(model, texts[i : i + 10_000], "debian-summaries") for i in range(0, len(texts), 10_000)])
    adapter = Adapter.load(file_for(model.model_id))
    stored, queries = adapter.apply(base[: args.library]), adapter.apply(base[args.library :])
    fit = funnel_fit(stored, PREFIX)
    index = PrefixIndex(adapter.model_id, stored.shape[1], PREFIX)
    index.add(adapter.model_id, np.arange(len(stored)), stored)
    truth = nearest(queries, stored)

    def kept(shortlist: int) -> float:
        found = [set(index.search(q, 10, shortlist=shortlist, mode="funnel").ids.tolist()) for q in queries]
        return round(float(np.mean([len(f & set(t)) / 10 for f, t in zip(found, truth)])), 4)

    figures = {
        "library": len(stored),
        "queries": len(queries),
        "fitted_shortlist": fit.shortlist,
        "fit_estimate_at_500": fit.recall_at.get(500),
        "kept_at_500": kept(500),
        "kept_at_fitted": kept(fit.shortlist),
        "ms_at_500": timed(index, queries, 500),
        "ms_at_fitted": timed(index, queries, fit.shortlist),
    }
    rng = np.random.default_rng(0)
    for size in [int(s) for s in args.sizes.split(",") if s]:
        vectors = drawn(stored, size, rng)
        big = PrefixIndex("bench", vectors.shape[1], PREFIX)
        big.add("bench", np.arange(size), vectors)
        probes = drawn(stored, 200, rng)
        scaled = int(fit.shortlist * size / len(stored)) + 1
        figures[f"shortlist_at_{size}"] = scaled
        figures[f"ms_at_500_{size}"] = timed(big, probes, 500)
        figures[f"ms_at_fitted_{size}"] = timed(big, probes, scaled)
        del big, vectors
    emit("adaptive_funnel", **figures)


if __name__ == "__main__":
    main()
