"""Quality and speed of importance-ordered prefixes on text the ordering never saw.

The shipped text adapter is the network's universal ordering, so it is judged on kinds of
text it was not trained on. Sources (:mod:`text_sources`): seven kinds of real English that
exist offline (dictionary glosses and definitions, quotations, man pages, documentation
prose, docstrings, book-length prose), and Debian's package descriptions, kept aside: never
trained or tuned on. Every unit is embedded with the real all-MiniLM-L6-v2 (384-d).

Leave one source out: for each of the seven, an adapter and a PCA are trained on the other
six (``--train-per-source`` units of each), and prefix search is measured on the one left
out: ``--corpus`` searched units and ``--queries`` held-out queries of that source, truth
the exact 384-d search with the base vectors. Beside them: raw truncation, and a PCA fit on
the searched corpus itself (the in-domain baseline a node could compute alone). Then the
adapter file that ships (whatever embeddings/default_adapters/build.py last built) on the
Debian descriptions, with the same baselines, and a task: each package's one-line summary finding its long description
(success@10 at K = D/8 as a share of full-dimension success). Two bounds beside the
left-out figures: the best PCA fit on any *single* other source (what choosing among
per-kind orderings could reach), and the shipped file on held-out units of the seven kinds
it was trained on (the ceiling: a universal ordering on text like its training).

Reported per left-out source: recall@10 at K in {16, 32, 48, 64, 96} for each method, the
adapter's full-length fidelity (its 384-d top 10 against the base top 10), and the funnel
(int8 K = D/8 prefix shortlist of 500, exact rerank on the stored vectors) against exact
search over the same stored vectors. Last, on 1,000,000 vectors drawn to match the
statistics of the shipped adapter's space, the latency of a funnel query against a flat
full-dimension float32 scan, in the same run.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cached_encoding, emit, median  # noqa: E402

from peerlight.embeddings.adapter_training import TrainingOptions, train_adapter  # noqa: E402
from peerlight.embeddings.adapters import Adapter, pca_adapter  # noqa: E402
from peerlight.embeddings.default_adapters import file_for  # noqa: E402
from peerlight.embeddings.ordering_fit import nearest as top10  # noqa: E402
from peerlight.embeddings.ordering_fit import prefix_recall, share_found  # noqa: E402
from peerlight.embeddings.prefix_index import PrefixIndex  # noqa: E402
from peerlight.embeddings.vectors import normalize  # noqa: E402
from text_sources import BY_NAME, SOURCES, debian_summaries  # noqa: E402

KS = (16, 32, 48, 64, 96)
CHUNK = 10_000
TRAIN_PER_SOURCE, CORPUS, QUERIES, TASK = 8_000, 8_000, 400, 2_000


def encoder():  # type: ignore[no-untyped-def]
    from peerlight.embeddings.sentence import SentenceModel, resolve_sentence_weights
    from peerlight.embeddings.weights import HubModelSpec

    spec = HubModelSpec("sentence-transformers/all-MiniLM-L6-v2")
    return SentenceModel(spec, resolve_sentence_weights(spec))


def encoded(model, texts: list[str], name: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The texts' base vectors, cached in chunks of 10,000 (a longer list reuses the chunks)."""
    chunks = [cached_encoding(model, texts[i : i + CHUNK], f"minilm-{name}", batch_size=128) for i in range(0, len(texts), CHUNK)]
    return np.concatenate(chunks) if chunks else np.zeros((0, model.dimension), np.float32)


@dataclass
class Split:
    """One source's disjoint parts: searched corpus, held-out queries, training units."""

    corpus: np.ndarray
    queries: np.ndarray
    train: np.ndarray


def source_splits(model, names: list[str], corpus: int, queries: int, train: int) -> dict[str, Split]:  # type: ignore[no-untyped-def]
    splits = {}
    for name in names:
        texts = BY_NAME[name].texts()
        # A small source (fortunes: ~11,000 quotations) gives the training what is left.
        available = len(texts) - corpus - queries
        if available < (1_000 if BY_NAME[name].trains else 0):
            raise SystemExit(f"{name}: {len(texts)} units, too few for a corpus of {corpus} and {queries} queries")
        needed = corpus + queries + (min(train, available) if BY_NAME[name].trains else 0)
        vectors = encoded(model, texts[:needed], name)
        splits[name] = Split(vectors[:corpus], vectors[corpus : corpus + queries], vectors[corpus + queries :])
        print(f"{name}: {len(vectors)} units embedded", file=sys.stderr)
    return splits


def media_encoder(kind: str, name: str | None, pretrained: str | None):  # type: ignore[no-untyped-def]
    """The node's image (open_clip) or audio (CLAP) encoder, loaded as the node loads it."""
    if kind == "image":
        from peerlight.embeddings.clip import ClipModel, ClipSpec, resolve_clip_weights

        clip = ClipSpec(name or "ViT-B-32", pretrained or "laion2b_s34b_b79k")
        return ClipModel(clip, resolve_clip_weights(clip))
    from peerlight.embeddings.clap import ClapModel, resolve_clap_weights
    from peerlight.embeddings.weights import HubModelSpec

    clap = HubModelSpec(name or "laion/clap-htsat-unfused")
    return ClapModel(clap, resolve_clap_weights(clap))


def media_splits(model, folder: Path, queries: float = 0.1, train: float = 0.5) -> dict[str, Split]:  # type: ignore[no-untyped-def]
    """A source per subfolder of ``folder`` (e.g. photos/, scans/, drawings/): its files embedded
    and split into searched corpus, held-out queries (``queries`` of them) and training units
    (``train`` of them). Files the encoder cannot read are skipped."""
    splits = {}
    for source in sorted(path for path in folder.iterdir() if path.is_dir()):
        files = sorted(path for path in source.rglob("*") if path.is_file())
        random.Random(0).shuffle(files)
        prepared = []
        for path in files:
            try:
                prepared.append(model.prepare(str(path)))
            except Exception as exc:  # noqa: BLE001 - a file of another kind, or damaged
                print(f"skipped {path}: {exc}", file=sys.stderr)
        vectors = np.concatenate([model.encode(prepared[i : i + 32]) for i in range(0, len(prepared), 32)]) if prepared else None
        if vectors is None or len(vectors) < 30:
            raise SystemExit(f"{source}: {0 if vectors is None else len(vectors)} readable files; at least 30 needed")
        held, trained = max(3, int(len(vectors) * queries)), int(len(vectors) * train)
        searched = len(vectors) - held - trained
        splits[source.name] = Split(vectors[:searched], vectors[searched : searched + held], vectors[searched + held :])
        print(f"{source.name}: {len(vectors)} files embedded", file=sys.stderr)
    if len(splits) < 2:
        raise SystemExit(f"{folder}: at least two subfolders (sources) are needed to leave one out")
    return splits


def leave_one_out(splits: dict[str, Split], training: list[str], base_id: str, options: TrainingOptions, left_out: list[str]) -> None:
    """For each source left out: an adapter and a PCA trained on the others, judged on it."""
    for name in left_out:
        mix = np.concatenate([splits[other].train for other in training if other != name])
        started = time.perf_counter()
        adapter = train_adapter(base_id, mix, options)
        emit(
            "prefix_quality_left_out",
            base_model=base_id,
            trained_on=[other for other in training if other != name],
            train_units=len(mix), steps=options.steps,
            training_seconds=round(time.perf_counter() - started, 1),
            corpus=len(splits[name].corpus), queries=len(splits[name].queries),
            **judged(name, splits[name], adapter, pca_adapter(base_id, mix), base_id),
            **best_single_source_pca(name, splits, [other for other in training if other != name], base_id),
        )


def best_single_source_pca(name: str, splits: dict[str, Split], others: list[str], base_id: str) -> dict[str, object]:
    """The best ordering one *other* kind of text gives the left-out source: each other source's
    own PCA, judged on it at K = D/8. An ordering that adapts to the kind of text it meets (a
    gate choosing among per-kind orderings) that picks one reaches at most this on a kind it never saw."""
    split = splits[name]
    k = split.corpus.shape[1] // 8
    truth = top10(split.queries, split.corpus)
    figures = {}
    for other in others:
        pca = pca_adapter(base_id, splits[other].train)
        figures[other] = prefix_recalls(pca.apply(split.queries), pca.apply(split.corpus), truth, [k])[k]
    best = max(figures, key=figures.__getitem__)
    return {"pca_best_single_other_source": best, "recall_at_d_over_8_pca_best_single_other_source": figures[best]}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return round(share_found(found, truth), 4)


def prefix_recalls(queries: np.ndarray, corpus: np.ndarray, truth: np.ndarray, ks: list[int]) -> dict[int, float]:
    return {k: round(prefix_recall(queries, corpus, truth, k), 4) for k in ks}


def funnel_recalls(
    model_id: str, corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int, shortlists: tuple[int, ...] = (100, 200, 500)
) -> dict[str, float]:
    """Funnel recall@10 (int8 K-prefix shortlist, exact rerank on the stored full vectors) for shortlists
    100/200/500: against the base vectors' exact search (``truth``), and against exact search over
    the same stored vectors (``vs_own_exact``: the funnel's own error, apart from the adapter's)."""
    index = PrefixIndex(model_id, corpus.shape[1], k)
    index.add(model_id, np.arange(len(corpus)), corpus)
    own_truth = top10(queries, corpus)
    figures: dict[str, float] = {}
    for shortlist in shortlists:
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


def orderings(queries: np.ndarray, corpus: np.ndarray, adapter, pca_mix, base_id: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:  # type: ignore[no-untyped-def]
    """Queries and corpus as each method orders them: raw, the training mix's PCA, a PCA fit on
    this corpus itself (what a node could compute alone), and the adapter."""
    pca_own = pca_adapter(base_id, corpus)
    return {
        "raw": (queries, corpus),
        "pca_training_mix": (pca_mix.apply(queries), pca_mix.apply(corpus)),
        "pca_in_domain": (pca_own.apply(queries), pca_own.apply(corpus)),
        "adapter": (adapter.apply(queries), adapter.apply(corpus)),
    }


def judged(name: str, split: Split, adapter, pca_mix, base_id: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Every method's recall@10 at each K on one source's corpus, the adapter's fidelity and funnel."""
    d = split.corpus.shape[1]
    truth = top10(split.queries, split.corpus)
    methods = orderings(split.queries, split.corpus, adapter, pca_mix, base_id)
    k = d // 8
    recalls = {method: prefix_recalls(q, c, truth, sorted({*KS, k})) for method, (q, c) in methods.items()}
    stored_queries, stored = methods["adapter"]
    funnel = funnel_recalls(adapter.model_id, stored, stored_queries, truth, k, shortlists=(500,))
    own_queries, own_stored = methods["pca_in_domain"]  # what the funnel can reach with the library's own PCA
    funnel_own = funnel_recalls("pca", own_stored, own_queries, truth, k, shortlists=(500,))
    return {
        "source": name,
        **{f"recall_at_10_{method}": figures for method, figures in recalls.items()},
        "adapter_vs_pca_in_domain_at_d_over_8": round(recalls["adapter"][k] / recalls["pca_in_domain"][k], 3),
        "adapter_vs_pca_training_mix_at_d_over_8": round(recalls["adapter"][k] / recalls["pca_training_mix"][k], 3),
        "raw_vs_pca_in_domain_at_d_over_8": round(recalls["raw"][k] / recalls["pca_in_domain"][k], 3),
        "adapter_full_length_fidelity": recall(top10(stored_queries, stored), truth),
        "funnel_500_recall_vs_stored": funnel["500_vs_own_exact"],
        "funnel_500_recall_vs_stored_pca_in_domain": funnel_own["500_vs_own_exact"],
    }


def task_level(model, adapter, pca_mix, base_id: str, count: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Debian: a package's one-line summary finds its long description. success@10 at each K."""
    summaries, bodies = debian_summaries(count)
    queries, targets = encoded(model, summaries, "debian-summaries"), encoded(model, bodies, "debian-bodies")
    figures: dict[str, object] = {"pairs": len(summaries)}
    d = targets.shape[1]
    for method, (q, t) in orderings(queries, targets, adapter, pca_mix, base_id).items():
        success = {}
        for k in (*KS, d):
            found = top10(normalize(q[:, :k]), normalize(t[:, :k]))
            success[k] = round(float(np.mean([i in row for i, row in enumerate(found)])), 4)
        figures[f"success_at_10_{method}"] = success
        figures[f"{method}_d_over_8_share_of_full"] = round(success[d // 8] / success[d], 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", choices=["text", "image", "audio"], default="text")
    parser.add_argument("--media", type=Path, help="image/audio: a folder whose subfolders are the sources")
    parser.add_argument("--model", help="image/audio: the open_clip architecture or CLAP name (the node's defaults)")
    parser.add_argument("--pretrained", help="image: the open_clip pretrained tag (\"random\": untrained, for trying the mechanics)")
    parser.add_argument("--train-per-source", type=int, default=TRAIN_PER_SOURCE)
    parser.add_argument("--corpus", type=int, default=CORPUS)
    parser.add_argument("--queries", type=int, default=QUERIES)
    parser.add_argument("--task", type=int, default=TASK, help="summary/description pairs of the task-level figure")
    parser.add_argument("--steps", type=int, default=TrainingOptions.steps)
    parser.add_argument("--left-out", nargs="*", help="only these sources left out (default: each training source; none: only the shipped adapter)")
    parser.add_argument("--million", type=int, default=1_000_000, help="vectors of the latency figure (0: skip it)")
    parser.add_argument("--latency-queries", type=int, default=200)
    args = parser.parse_args()
    options = TrainingOptions(steps=args.steps)

    if args.encoder != "text":
        if args.media is None:
            parser.error("--media FOLDER is needed for image and audio")
        model = media_encoder(args.encoder, args.model, args.pretrained)
        splits = media_splits(model, args.media)
        leave_one_out(splits, list(splits), model.model_id, options, list(splits) if args.left_out is None else args.left_out)
        shipped_file = file_for(model.model_id)
        if shipped_file.exists():
            shipped = Adapter.load(shipped_file)
            pca_mix = pca_adapter(model.model_id, np.concatenate([split.train for split in splits.values()]))
            for name, split in splits.items():
                emit("prefix_quality_shipped", adapter_model=shipped.model_id, **judged(name, split, shipped, pca_mix, model.model_id))
        return

    model = encoder()
    names = [source.name for source in SOURCES]
    splits = source_splits(model, names, args.corpus, args.queries, args.train_per_source)
    training = [source.name for source in SOURCES if source.trains]
    base_id = model.model_id
    leave_one_out(splits, training, base_id, options, training if args.left_out is None else args.left_out)
    # What ships: the adapter file in the source tree (embeddings/default_adapters/build.py
    # trains it with this recipe on all seven sources), judged on text kept aside.
    mix = np.concatenate([splits[name].train for name in training])
    shipped, pca_mix = Adapter.load(file_for(base_id)), pca_adapter(base_id, mix)
    for name in [source.name for source in SOURCES if not source.trains]:
        emit(
            "prefix_quality_never_trained",
            trained_on=[entry["name"] for entry in shipped.info.get("sources", [])] or shipped.info.get("corpus"),
            adapter_model=shipped.model_id,
            **judged(name, splits[name], shipped, pca_mix, base_id),
            task=task_level(model, shipped, pca_mix, base_id, args.task),
        )
    # The ceiling: the shipped file on held-out units of the kinds it *was* trained on. What a
    # universal ordering reaches on a kind it has seen bounds what it can reach on one it has not.
    for name in training:
        emit("prefix_quality_in_training", adapter_model=shipped.model_id, **judged(name, splits[name], shipped, pca_mix, base_id))
    if args.million:
        debian = shipped.apply(splits["debian"].corpus)
        emit("prefix_funnel_latency", **latency_million(debian, debian.shape[1] // 8, 200, args.million, args.latency_queries))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
