"""Quality of the preference model against simple baselines, with simulated users on real text.

Corpora (real text, embedded with the real all-MiniLM-L6-v2 and ordered by the shipped
adapter, exactly as the node stores it):

- ``manpages`` (held out: nothing was tuned on it): the DESCRIPTION of English man pages;
  an item's topic is its command family (``git``, ``pam``, ``systemd``, ``perl``'s modules …,
  families of at least 8 pages) or else its manual section (commands, library calls, file
  formats, administration …);
- ``docstrings`` (the model's few constants were chosen looking at it): stdlib docstrings; an
  item's topic is its top-level module (``email``, ``xml``, ``asyncio`` …).

Simulated users. Each has hidden tastes, defined on the items' real topics and metadata,
never on the vectors the model sees: a mild view of every topic (normal, sd 0.7), and strong
feelings on a few, 1-3 liked topics and 1-2 disliked ones of random strength (1 to 3), a liking for long or short texts (a third of users), a shared per-item "quality"
that no vector shows (some pages are simply better), and a per-user-item whim. Ratings are
that utility standardised per user onto 0-10 with noise (sd 1) and rounded to integers.
Users rate items drawn at random; metrics are on 400 held-out items of each user, against
their (noisy, integer) ratings: NDCG@10 (gain 2^stars - 1, stars = rating / 2), Spearman, MAE.

Methods: ``model`` (the node's preference model), ``mlp`` (its MLP option), ``mean`` (the user's mean rating: a random
order for NDCG, averaged over shuffles), ``knn`` (the mean rating of the 10 most similar rated
items, weighted by cosine). At 10, 30, 100 and 300 ratings; and with 100 ratings, the model
scoring held-out items from K-prefixes only (a peer's items), as a share of its full-vector
NDCG@10 — beside the same share for k-NN on renormalised prefixes, which shows how much of the
ranking a prefix of the shipped ordering can carry at all.

Peer-only (``recommender_peer_only``): a node with no library rates only a peer's items, which it
knows by the catalog protocol's K = 48 prefixes (renormalised, sent as float16), and ranks the
rest of that share from the same prefixes; its NDCG@10 at each count beside the local model's
(whole vectors, rated and ranked) and their ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cached_encoding, emit  # noqa: E402
from retrieval_sets import docstring_pairs, manpage_pairs  # noqa: E402

from peerlight.embeddings.prefix_index import prefix_of  # noqa: E402
from peerlight.recommender.model import Example, train  # noqa: E402

COUNTS = (10, 30, 100, 300)
PEER_K = 48  # the prefix length a node caches of a peer's items (node/peers/sync.py SYNC_PREFIX_K)
KS = (16, 24, 32, 48, 64, 96, 192)
HELD_OUT = 400
MIN_FAMILY = 8
TOPIC_SPREAD = 0.7  # the standard deviation of a user's mild liking of each topic
SECTIONS = {"1": "user commands", "2": "system calls", "3": "library calls", "4": "devices", "5": "file formats",
            "6": "games", "7": "overviews", "8": "administration"}


@dataclass(frozen=True)
class Corpus:
    name: str
    vectors: np.ndarray  # ordered, unit
    topics: list[str]
    lengths: np.ndarray  # words per item


def _family(command: str, section: str) -> str:
    head = re.split(r"[-_.:]", command, maxsplit=1)[0].lower()
    return head or SECTIONS.get(section[:1], "other")


def load_corpus(name: str, count: int, seed: int) -> Corpus:
    if name == "manpages":
        entries = [(key, text) for key, _, text in manpage_pairs()]
    else:
        entries = [(key, text) for key, _, text in docstring_pairs()]
    rng = random.Random(seed)
    rng.shuffle(entries)
    entries = entries[:count]
    if name == "manpages":
        families = Counter(_family(*key.rsplit(".", 1)) for key, _ in entries)
        topics = []
        for key, _ in entries:
            command, section = key.rsplit(".", 1)
            family = _family(command, section)
            topics.append(family if families[family] >= MIN_FAMILY else SECTIONS.get(section[:1], "other"))
    else:
        topics = [key.split(".", 1)[0] for key, _ in entries]
    texts = [" ".join(text.split()[:160]) for _, text in entries]
    return Corpus(name, embed(texts), topics, np.array([len(text.split()) for _, text in entries]))


def embed(texts: list[str]) -> np.ndarray:
    """MiniLM then the shipped ordering adapter, as the node embeds a text; base vectors cached."""
    from peerlight.embeddings.adapters import Adapter
    from peerlight.embeddings.default_adapters import file_for
    from peerlight.embeddings.sentence import SentenceModel, resolve_sentence_weights
    from peerlight.embeddings.weights import HubModelSpec

    spec = HubModelSpec("sentence-transformers/all-MiniLM-L6-v2")
    model = SentenceModel(spec, resolve_sentence_weights(spec))
    return Adapter.load(file_for(model.model_id)).apply(cached_encoding(model, texts, "minilm-recommender"))


@dataclass
class User:
    ratings: np.ndarray  # every item's (noisy, integer) rating


def simulate_user(corpus: Corpus, quality: np.ndarray, rng: np.random.Generator) -> User:
    """A user's ratings of every item, from tastes on topics and metadata only (never the vectors)."""
    topics = sorted(set(corpus.topics))
    weights = {topic: rng.normal(0, TOPIC_SPREAD) for topic in topics}  # a mild view of every topic
    picked = rng.choice(len(topics), size=min(len(topics), 5), replace=False)
    liked = rng.integers(1, 4)
    disliked = rng.integers(1, 3)
    for i in picked[:liked]:
        weights[topics[i]] += rng.uniform(1.0, 3.0)
    for i in picked[liked : liked + disliked]:
        weights[topics[i]] -= rng.uniform(1.0, 3.0)
    utility = np.array([weights[t] for t in corpus.topics])
    if rng.random() < 1 / 3:
        length = np.log(corpus.lengths)
        utility += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0) * (length - length.mean()) / length.std()
    utility += 0.7 * quality + rng.normal(0, 0.5, size=len(utility))
    standard = (utility - utility.mean()) / utility.std()
    ratings = np.clip(np.round(5 + 2.0 * standard + rng.normal(0, 1.0, size=len(utility))), 0, 10)
    return User(ratings)


def ndcg_at_10(predicted: np.ndarray, truth: np.ndarray) -> float:
    """NDCG@10 with the usual graded gain 2^stars - 1 (stars = rating / 2): the top matters most."""
    gains = 2.0 ** (truth / 2) - 1
    order = np.argsort(-predicted, kind="stable")[:10]
    discounts = 1 / np.log2(np.arange(2, 12))
    ideal = np.sort(gains)[::-1][:10] @ discounts
    return float(gains[order] @ discounts / ideal) if ideal > 0 else 0.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    value = spearmanr(a, b).statistic
    return 0.0 if np.isnan(value) else float(value)


def evaluate(predicted: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    if np.ptp(predicted) == 0:  # a constant prediction: a random order
        ndcg = float(np.mean([ndcg_at_10(rng.random(len(truth)), truth) for _ in range(20)]))
    else:
        ndcg = ndcg_at_10(predicted, truth)
    return {"ndcg10": ndcg, "spearman": spearman(predicted, truth), "mae": float(np.mean(np.abs(predicted - truth)))}


def knn(rated: np.ndarray, ratings: np.ndarray, candidates: np.ndarray, k: int = 10) -> np.ndarray:
    similarity = candidates @ rated.T
    nearest = np.argsort(-similarity, axis=1)[:, :k]
    weights = np.clip(np.take_along_axis(similarity, nearest, axis=1), 1e-3, None)
    return (weights * ratings[nearest]).sum(axis=1) / weights.sum(axis=1)


def run_corpus(corpus: Corpus, users: int, seed: int, with_mlp: bool = True) -> None:
    rng = np.random.default_rng(seed)
    quality = rng.normal(size=len(corpus.vectors))
    dimension = corpus.vectors.shape[1]
    # A peer's items as a node holds them: the catalog protocol's renormalised K-prefix, sent as
    # float16 (node/serving/share_queries.py) and read back as float32 (node/catalog/peer_examples.py).
    peer = prefix_of(corpus.vectors, PEER_K).astype("<f2").astype(np.float32)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    prefix: dict[int, list[tuple[float, float]]] = {k: [] for k in KS}
    knn_prefix: dict[int, list[tuple[float, float]]] = {k: [] for k in KS}
    train_seconds = []
    for _ in range(users):
        user = simulate_user(corpus, quality, rng)
        order = rng.permutation(len(corpus.vectors))
        test, pool = order[:HELD_OUT], order[HELD_OUT:]
        truth = user.ratings[test]
        for count in COUNTS:
            rated = pool[:count]
            examples = [Example(str(i), corpus.vectors[i], float(user.ratings[i])) for i in rated]
            started = time.perf_counter()
            model = train({"s": examples}, {"s": dimension})
            train_seconds.append(time.perf_counter() - started)
            full, _ = model.predict("s", corpus.vectors[test])
            results.setdefault(("model", count), []).append(evaluate(full, truth, rng))
            if with_mlp:
                networks = train({"s": examples}, {"s": dimension}, kind="mlp")
                results.setdefault(("mlp", count), []).append(evaluate(networks.predict("s", corpus.vectors[test])[0], truth, rng))
            # Peer-only: the user rated the peer's items (known by their prefixes), and the rest of
            # the peer's share is ranked from its prefixes. A node with no model of its own holds
            # the space as wide as its prefixes (node/catalog/peer_examples.py), so the head is too.
            peer_examples = [Example(str(i), peer[i], float(user.ratings[i])) for i in rated]
            peer_scores, _ = train({"s": peer_examples}, {"s": PEER_K}).predict("s", peer[test])
            results.setdefault(("peer", count), []).append(evaluate(peer_scores, truth, rng))
            mean = np.full(len(test), user.ratings[rated].mean())
            results.setdefault(("mean", count), []).append(evaluate(mean, truth, rng))
            near = knn(corpus.vectors[rated], user.ratings[rated], corpus.vectors[test])
            results.setdefault(("knn", count), []).append(evaluate(near, truth, rng))
            if count == 100:
                base = results[("model", count)][-1]["ndcg10"]
                for k in KS:
                    shortened, _ = model.predict("s", corpus.vectors[test][:, :k])
                    prefix[k].append((ndcg_at_10(shortened, truth), base))
                    # The same question for k-NN: how much of the ranking a prefix can carry at all.
                    unit = corpus.vectors[:, :k] / np.linalg.norm(corpus.vectors[:, :k], axis=1, keepdims=True)
                    knn_prefix[k].append((ndcg_at_10(knn(unit[rated], user.ratings[rated], unit[test]), truth), ndcg_at_10(near, truth)))
    for count in COUNTS:
        row = {}
        for method in ("model", "mlp", "mean", "knn"):
            runs = results.get((method, count))
            if runs is None:
                continue
            for metric in ("ndcg10", "spearman", "mae"):
                row[f"{method}_{metric}"] = round(float(np.mean([r[metric] for r in runs])), 4)
        emit(
            "recommender_quality", corpus=corpus.name, held_out=corpus.name == "manpages", items=len(corpus.vectors),
            topics=len(set(corpus.topics)), users=users, ratings=count, **row,
            beats_both_ndcg=row["model_ndcg10"] > max(row["mean_ndcg10"], row["knn_ndcg10"]),
            beats_both_spearman=row["model_spearman"] > max(row["mean_spearman"], row["knn_spearman"]),
            beats_both_mae=row["model_mae"] < min(row["mean_mae"], row["knn_mae"]),
        )
    emit(
        "recommender_peer_only", corpus=corpus.name, held_out=corpus.name == "manpages", k=PEER_K, users=users,
        **{f"ndcg10_at_{count}": _mean_of(results[("peer", count)], "ndcg10") for count in COUNTS},
        **{f"local_ndcg10_at_{count}": _mean_of(results[("model", count)], "ndcg10") for count in COUNTS},
        **{f"share_of_local_at_{count}": round(_mean_of(results[("peer", count)], "ndcg10") / _mean_of(results[("model", count)], "ndcg10"), 4) for count in COUNTS},
    )
    emit(
        "recommender_prefix", corpus=corpus.name, ratings=100, dimension=dimension,
        **{f"k{k}_share_of_full_ndcg10": _share(prefix[k]) for k in KS},
        **{f"knn_k{k}_share_of_full_ndcg10": _share(knn_prefix[k]) for k in KS},
        train_ms_p50_at_300=round(1000 * float(np.median(train_seconds[COUNTS.index(300) :: len(COUNTS)])), 1),
    )


def _mean_of(runs: list[dict[str, float]], metric: str) -> float:
    return round(float(np.mean([r[metric] for r in runs])), 4)


def _share(pairs: list[tuple[float, float]]) -> float:
    return round(float(np.mean([a for a, _ in pairs]) / np.mean([b for _, b in pairs])), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=["manpages", "docstrings", "both"], default="both")
    parser.add_argument("--items", type=int, default=2500)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-mlp", action="store_true", help="leave out the MLP option (the slowest part)")
    args = parser.parse_args()
    for name in ("manpages", "docstrings") if args.corpus == "both" else (args.corpus,):
        run_corpus(load_corpus(name, args.items, args.seed), args.users, args.seed, with_mlp=not args.no_mlp)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
