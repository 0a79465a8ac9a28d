"""Quality and speed of importance-ordered prefixes (raw truncation vs PCA vs our adapter).

Corpus: sentences from the docstrings of the Python standard library and of the packages
installed in the running environment (torch, numpy, transformers, ...: real English
technical prose that exists on any machine that runs Peerlight), embedded with the real
all-MiniLM-L6-v2 (384-d). Disjoint splits: 20,000 as the searched corpus, 1,000 held-out
queries, 100,000 for fitting the PCA and training the adapter (the shipped one is built from
exactly this split). Ground truth: exact full-dimension search with the base vectors.

Two adapters: one trained on the training split (how a shipped adapter meets unseen text),
and one trained on the searched corpus itself — what a node does, training on its own
library's stored vectors (the queries stay held out).

Reports, for K in {8, 16, 32, 48, 64, 96, 128, 192, D}: recall@10 of prefix-only search for
raw truncation, PCA and the adapters; funnel recall@10 (int8 prefix shortlist + exact
rerank on the stored, ordered full vectors) at K = D/8 for shortlists 100/200/500; and on
1,000,000 vectors drawn to match the
corpus's statistics (its covariance in the adapter's space), the latency of a funnel query
vs a flat full-dimension float32 scan, in the same run.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import re
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cached_encoding, emit, median  # noqa: E402

from peerlight.embeddings.adapter_training import TrainingOptions, train_adapter  # noqa: E402
from peerlight.embeddings.adapters import pca_adapter  # noqa: E402
from peerlight.embeddings.prefix_index import PrefixIndex  # noqa: E402
from peerlight.embeddings.vectors import normalize  # noqa: E402

KS = (8, 16, 32, 48, 64, 96, 128, 192)
SOURCE = "docstring sentences of the installed Python stdlib and site-packages"
CHUNK = 10_000
CORPUS, QUERIES, TRAIN = 20_000, 1_000, 100_000  # searched, held-out queries, training


def docstring_sentences() -> list[str]:
    """Distinct 5-60 word sentences from installed docstrings (stdlib, then site-packages; no tests)."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    files = [f for root in roots for f in sorted(root.rglob("*.py"))]
    texts, seen = [], set()
    for file in files:
        if {"test", "tests", "idlelib"} & set(file.parts) or ("site-packages" in file.parts and file.is_relative_to(roots[0])):
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
                continue
            doc = ast.get_docstring(node)
            for paragraph in re.split(r"\n\s*\n", doc or ""):
                for sentence in re.split(r"(?<=[.!?])\s+", " ".join(paragraph.split())):
                    if 5 <= len(sentence.split()) <= 60 and sentence not in seen and not sentence.startswith(">>>"):
                        seen.add(sentence)
                        texts.append(sentence)
    random.Random(0).shuffle(texts)
    return texts


def embedded_corpus(count: int) -> tuple[np.ndarray, str, str]:
    """The first ``count`` sentences embedded, cached in chunks of 10,000 (a larger count reuses them)."""
    from peerlight.embeddings.sentence import SentenceModel, resolve_sentence_weights
    from peerlight.embeddings.weights import HubModelSpec

    texts = docstring_sentences()
    if len(texts) < count:
        raise SystemExit(f"only {len(texts)} sentences found; {count} needed")
    spec = HubModelSpec("sentence-transformers/all-MiniLM-L6-v2")
    model = SentenceModel(spec, resolve_sentence_weights(spec))
    chunks = []
    for start in range(0, count, CHUNK):
        chunks.append(cached_encoding(model, texts[start : start + CHUNK], "minilm-docstrings-chunk", batch_size=128))
    return np.concatenate(chunks)[:count], model.model_id, SOURCE


def splits(corpus: int, queries: int, train: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, str]:
    """Disjoint (searched corpus, held-out queries, training) splits, in that order of the sentences."""
    vectors, base_id, source = embedded_corpus(corpus + queries + train)
    return vectors[:corpus], vectors[corpus : corpus + queries], vectors[corpus + queries :], base_id, source


def top10(queries: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(np.ascontiguousarray(corpus, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), 10)[1]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return round(float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])), 4)


def prefix_recalls(queries: np.ndarray, corpus: np.ndarray, truth: np.ndarray, ks: list[int]) -> dict[int, float]:
    return {k: recall(top10(normalize(queries[:, :k]), normalize(corpus[:, :k])), truth) for k in ks}


def funnel_recalls(model_id: str, corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int) -> dict[str, float]:
    """Funnel recall@10 (int8 K-prefix shortlist, exact rerank on the stored full vectors) for shortlists
    100/200/500: against the base vectors' exact search (``truth``), and against exact search over
    the same stored vectors (``vs_own_exact``: the funnel's own error, apart from the adapter's)."""
    index = PrefixIndex(model_id, corpus.shape[1], k)
    index.add(model_id, np.arange(len(corpus)), corpus)
    own_truth = top10(queries, corpus)
    figures: dict[str, float] = {}
    for shortlist in (100, 200, 500):
        found = np.stack([index.search(q, 10, shortlist=shortlist, mode="funnel").ids for q in queries])
        figures[str(shortlist)] = recall(found, truth)
        figures[f"{shortlist}_vs_own_exact"] = recall(found, own_truth)
    return figures


def latency_million(adapted_corpus: np.ndarray, prefix_len: int, shortlist: int, count: int, queries: int) -> dict[str, float]:
    import faiss

    rng = np.random.default_rng(0)
    covariance = np.cov(adapted_corpus.T)
    factor = np.linalg.cholesky(covariance + 1e-9 * np.eye(len(covariance)))
    mean = adapted_corpus.mean(axis=0)
    vectors = np.empty((count, adapted_corpus.shape[1]), dtype=np.float32)
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        vectors[start : start + n] = normalize(mean + rng.normal(size=(n, len(mean))) @ factor.T)
    index = PrefixIndex("bench", vectors.shape[1], prefix_len)
    index.add("bench", np.arange(count), vectors)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    probes = normalize(mean + rng.normal(size=(queries, len(mean))) @ factor.T).astype(np.float32)
    funnel, scan, agree = [], [], []
    for probe in probes:
        started = time.perf_counter()
        hits = index.search(probe, 10, shortlist=shortlist, mode="funnel")
        funnel.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        _, exact = flat.search(probe.reshape(1, -1), 10)
        scan.append((time.perf_counter() - started) * 1000)
        agree.append(len(set(hits.ids.tolist()) & set(exact[0].tolist())) / 10)
    return {
        "million_vectors": count,
        "funnel_median_ms": round(median(funnel), 3),
        "flat_float32_median_ms": round(median(scan), 3),
        "funnel_speedup": round(median(scan) / median(funnel), 1),
        "funnel_recall_at_10_million": round(float(np.mean(agree)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=int, default=CORPUS)
    parser.add_argument("--train", type=int, default=TRAIN)
    parser.add_argument("--queries", type=int, default=QUERIES)
    parser.add_argument("--steps", type=int, default=TrainingOptions.steps)
    parser.add_argument("--million", type=int, default=1_000_000)
    parser.add_argument("--latency-queries", type=int, default=200)
    args = parser.parse_args()

    corpus, queries, train, base_id, source = splits(args.corpus, args.queries, args.train)
    d = corpus.shape[1]
    ks = [k for k in KS if k < d] + [d]
    truth = top10(queries, corpus)

    pca = pca_adapter(base_id, train)
    options = TrainingOptions(steps=args.steps)
    started = time.perf_counter()
    adapter = train_adapter(base_id, train, options)
    training_seconds = time.perf_counter() - started
    own = train_adapter(base_id, corpus, options)
    raw = prefix_recalls(queries, corpus, truth, ks)
    by_pca = prefix_recalls(pca.apply(queries), pca.apply(corpus), truth, ks)
    adapted_corpus, adapted_queries = adapter.apply(corpus), adapter.apply(queries)
    by_adapter = prefix_recalls(adapted_queries, adapted_corpus, truth, ks)
    by_own = prefix_recalls(own.apply(queries), own.apply(corpus), truth, ks)
    pca_own = pca_adapter(base_id, corpus)  # the like-for-like baseline of an adapter fit to the corpus
    by_pca_own = prefix_recalls(pca_own.apply(queries), pca_own.apply(corpus), truth, ks)

    k_small = d // 8
    emit(
        "prefix_quality",
        corpus=f"{source}: {args.corpus} searched, {args.queries} held-out queries, {args.train} for training",
        base_model=base_id,
        adapter_model=adapter.model_id,
        adapter_steps=args.steps,
        adapter_training_seconds=round(training_seconds, 1),
        recall_at_10_raw=raw,
        recall_at_10_pca=by_pca,
        recall_at_10_adapter=by_adapter,
        recall_at_10_adapter_own_corpus=by_own,
        recall_at_10_pca_own_corpus=by_pca_own,
        adapter_vs_pca_at_d_over_8=round(by_adapter[k_small] / by_pca[k_small], 3),
        own_corpus_adapter_vs_own_corpus_pca_at_d_over_8=round(by_own[k_small] / by_pca_own[k_small], 3),
        funnel_k=k_small,
        funnel_recall_at_10_pca=funnel_recalls(pca.model_id, pca.apply(corpus), pca.apply(queries), truth, k_small),
        funnel_recall_at_10_adapter=funnel_recalls(adapter.model_id, adapted_corpus, adapted_queries, truth, k_small),
        funnel_recall_at_10_adapter_own_corpus=funnel_recalls(own.model_id, own.apply(corpus), own.apply(queries), truth, k_small),
        funnel_recall_at_10_pca_k64=funnel_recalls(pca.model_id, pca.apply(corpus), pca.apply(queries), truth, 64),
        prefix_bytes_per_item_k64_int8=PrefixIndex("x", d, 64).prefix_bytes_per_item,
        **latency_million(adapted_corpus, k_small, 200, args.million, args.latency_queries),
    )


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
