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
