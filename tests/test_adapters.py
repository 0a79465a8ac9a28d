"""Importance-ordering adapters: ordering, identity, persistence, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from peerlight.embeddings.adapter_training import TrainingOptions, train_adapter
from peerlight.embeddings.adapters import Adapter, AdapterError, pca_adapter
from peerlight.embeddings.vectors import normalize

D = 48


def corpus(n: int, seed: int) -> np.ndarray:
    """Anisotropic data whose important directions are hidden by a random rotation."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(D, D)))
    clusters = np.random.default_rng(1).normal(size=(40, D)) * np.geomspace(3, 0.05, D)
    points = clusters[rng.integers(0, 40, n)] + rng.normal(size=(n, D)) * np.geomspace(0.6, 0.05, D)
    return normalize(points @ rotation.T)


def prefix_correlation(vectors: np.ndarray, columns: np.ndarray) -> float:
    """Correlation of pairwise cosines on the chosen columns with the full cosines."""
    full = vectors @ vectors.T
    part = normalize(vectors[:, columns])
    partial = part @ part.T
    upper = np.triu_indices(len(vectors), 1)
    return float(np.corrcoef(full[upper], partial[upper])[0, 1])


@pytest.fixture(scope="module")
def trained() -> Adapter:
    return train_adapter("st:test:0", corpus(3000, seed=2), TrainingOptions(steps=60, hidden=64, prefixes=(4, 8, 16)))


def test_the_adapter_orders_dimensions_on_held_out_data(trained: Adapter) -> None:
    held_out = corpus(400, seed=3)
    ordered = trained.apply(held_out)
    k = 8
    prefix = prefix_correlation(ordered, np.arange(k))
    rng = np.random.default_rng(4)
    random_subsets = [prefix_correlation(ordered, rng.choice(D, k, replace=False)) for _ in range(10)]
    assert prefix > max(random_subsets) + 0.05
    # The full-length vector stays faithful to the base one.
    full_base = held_out @ held_out.T
    full_ordered = ordered @ ordered.T
    assert np.corrcoef(full_base.ravel(), full_ordered.ravel())[0, 1] > 0.95


def test_an_untrained_pca_adapter_keeps_full_similarities_exactly() -> None:
    vectors = corpus(500, seed=5)
    adapter = pca_adapter("st:test:0", vectors)
    ordered = adapter.apply(vectors)
    assert np.allclose(ordered @ ordered.T, vectors @ vectors.T, atol=1e-5)


def test_model_ids_are_stable_and_change_with_the_weights(trained: Adapter, tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    path.write_bytes(trained.to_bytes())
    loaded = Adapter.load(path)
    assert loaded.model_id == trained.model_id and loaded.adapter_id == trained.adapter_id
    assert np.allclose(loaded.apply(corpus(5, 9)), trained.apply(corpus(5, 9)))
    changed = Adapter.load(path)
    changed.out_bias = changed.out_bias.copy()
    changed.out_bias[0] += 1e-3
    assert changed.adapter_id != trained.adapter_id and changed.model_id != trained.model_id
    other_base = Adapter.load(path)
    other_base.base_model_id = "st:other:1"
    assert other_base.model_id != trained.model_id
    assert trained.model_id.startswith("ordered:")


def test_training_is_deterministic_given_the_seed() -> None:
    vectors = corpus(800, seed=6)
    options = TrainingOptions(steps=15, hidden=32, prefixes=(4, 8))
    a = train_adapter("st:test:0", vectors, options)
    b = train_adapter("st:test:0", vectors, options)
    c = train_adapter("st:test:0", vectors, TrainingOptions(steps=15, hidden=32, prefixes=(4, 8), seed=1))
    assert a.adapter_id == b.adapter_id and a.adapter_id != c.adapter_id


def test_corrupt_adapter_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an adapter")
    with pytest.raises(AdapterError):
        Adapter.load(bad)


def test_a_further_encoder_joins_an_existing_space_through_its_text_tower() -> None:
    from peerlight.embeddings.adapter_training import train_alignment

    rng = np.random.default_rng(11)
    latent_dim, n_texts, n_media = 24, 2000, 300
    # Two encoders see the same underlying meaning through different (unknown) maps.
    existing = np.linalg.qr(rng.normal(size=(latent_dim, D)).T)[0].T  # latent -> existing space
    joining = rng.normal(size=(latent_dim, 40))  # latent -> the joining encoder's space (40-d)

    def meaning(n: int) -> np.ndarray:
        return rng.normal(size=(n, latent_dim)) * np.geomspace(2, 0.3, latent_dim)

    texts = meaning(n_texts)
    space_adapter = pca_adapter("st:space:0", normalize(texts @ existing))
    target = space_adapter.apply(normalize(texts @ existing))  # texts in the existing, ordered space
    source = normalize(texts @ joining + rng.normal(size=(n_texts, 40)) * 0.01)  # the joining text tower
    aligned = train_alignment("clip:joining:0", source, space_adapter.model_id, target, TrainingOptions(steps=40, hidden=32))
    assert aligned.space_id == space_adapter.model_id and aligned.model_id != space_adapter.model_id
    assert aligned.input_dimension == 40 and aligned.dimension == D

    # Media seen by the joining encoder (its media tower agrees with its text tower) now
    # land next to the same meaning in the existing space.
    media = meaning(n_media)
    in_space = space_adapter.apply(normalize(media @ existing))
    joined = aligned.apply(normalize(media @ joining))
    nearest = np.argmax(joined @ in_space.T, axis=1)
    assert np.mean(nearest == np.arange(n_media)) > 0.9
    # Without alignment the joining encoder's vectors mean nothing in this space.
    unaligned = normalize(normalize(media @ joining) @ rng.normal(size=(40, D)))
    assert np.mean(np.argmax(unaligned @ in_space.T, axis=1) == np.arange(n_media)) < 0.1
