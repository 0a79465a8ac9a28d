"""Judging how well an ordering suits a library: the stored prefixes against the library's own PCA."""

from __future__ import annotations

import numpy as np
import pytest

from peerlight.embeddings.ordering_fit import MIN_VECTORS, TooFewVectors, ordering_fit

D, SIGNAL = 64, 8


def library(where: slice, count: int = 2000, seed: int = 0) -> np.ndarray:
    """Vectors that vary along SIGNAL directions (at ``where`` in the stored order) and barely elsewhere."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=0.05, size=(count, D))
    x[:, where] += rng.normal(size=(count, SIGNAL))
    return x.astype(np.float32)


def test_an_ordering_that_puts_the_librarys_directions_first_is_as_good_as_its_own_pca() -> None:
    fit = ordering_fit(library(slice(0, SIGNAL)), prefix_len=SIGNAL)
    assert fit.prefix_recall > 0.6 and fit.ratio == pytest.approx(1.0, abs=0.05)
    assert fit.prefix_len == SIGNAL and fit.queries == 200 and fit.vectors == 1800
    assert fit.to_wire()["ratio"] == round(fit.ratio, 3)


def test_an_ordering_that_puts_them_last_finds_far_less_than_the_librarys_own_pca() -> None:
    fit = ordering_fit(library(slice(D - SIGNAL, D)), prefix_len=SIGNAL)
    assert fit.own_pca_recall > 0.6  # the library's own PCA finds its directions wherever they are
    assert fit.prefix_recall < 0.2 and fit.ratio < 0.3


def test_the_prefix_length_defaults_to_an_eighth_and_too_few_vectors_are_refused() -> None:
    assert ordering_fit(library(slice(0, SIGNAL), count=500)).prefix_len == D // 8
    assert ordering_fit(library(slice(0, SIGNAL), count=MIN_VECTORS)).queries == MIN_VECTORS // 5
    with pytest.raises(TooFewVectors, match="at least"):
        ordering_fit(library(slice(0, SIGNAL), count=MIN_VECTORS - 1))
    with pytest.raises(TooFewVectors):
        ordering_fit(np.zeros((0, 0), np.float32))


def ordered_library(count: int, seed: int, decay: float) -> np.ndarray:
    """Vectors whose variance falls along the stored order by ``decay`` per value: the faster it
    falls, the better K-prefixes rank (as a library like the ordering's training text)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(count, D)) * decay ** np.arange(D)).astype(np.float32)


@pytest.mark.parametrize("decay", [0.8, 0.95])
def test_the_fitted_shortlist_keeps_the_target_share_of_the_exact_top_10_on_new_queries(decay: float) -> None:
    """Fitted on the library alone, judged with queries it never saw (real PrefixIndex funnel against exact search)."""
    from peerlight.embeddings.ordering_fit import funnel_fit
    from peerlight.embeddings.prefix_index import PrefixIndex
    from peerlight.embeddings.vectors import normalize

    stored = normalize(ordered_library(20_000, 0, decay))
    queries = normalize(ordered_library(300, 1, decay))
    fit = funnel_fit(stored, 8)
    index = PrefixIndex("ordered:test:0", D, 8)
    index.add("ordered:test:0", np.arange(len(stored)), stored)
    exact = np.argsort(-(queries @ stored.T), axis=1)[:, :10]

    def kept(shortlist: int) -> float:
        found = [set(index.search(q, 10, shortlist=shortlist, mode="funnel").ids.tolist()) for q in queries]
        return float(np.mean([len(f & set(t)) / 10 for f, t in zip(found, exact)]))

    assert kept(fit.shortlist) >= 0.985  # the target is 0.99 of the whole population of queries
    assert kept(max(10, fit.shortlist // 4)) < 0.99  # and it is not simply long
    assert fit.recall_at[fit.shortlist] >= 0.99 and fit.vectors == 20_000


def test_a_library_that_prefixes_rank_worse_needs_a_longer_shortlist_and_a_sample_stands_for_the_whole() -> None:
    from peerlight.embeddings.ordering_fit import funnel_fit

    easy, hard = funnel_fit(ordered_library(10_000, 2, 0.8), 8), funnel_fit(ordered_library(10_000, 2, 0.97), 8)
    assert easy.shortlist * 3 < hard.shortlist
    sample = funnel_fit(ordered_library(10_000, 2, 0.97)[:5_000], 8, library_size=10_000)
    assert sample.vectors == 10_000 and 0.6 * hard.shortlist < sample.shortlist < 1.6 * hard.shortlist
