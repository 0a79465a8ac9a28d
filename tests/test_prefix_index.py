from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from peerlight.embeddings.prefix_index import ModelMismatch, PrefixIndex, prefix_of
from peerlight.embeddings.vectors import normalize


def data(n: int = 2000, d: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Decaying variance per dimension, like importance-ordered vectors.
    return normalize(rng.normal(size=(n, d)) * np.linspace(3, 0.2, d))


def exact_top(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = vectors @ normalize(query[None])[0]
    return ids[np.argsort(-scores)[:k]].tolist()


def test_exact_and_funnel_agree_with_brute_force() -> None:
    vectors = data()
    ids = np.arange(10, 10 + len(vectors))
    index = PrefixIndex("m", 64, 16)
    index.add("m", ids, vectors)
    query = data(1, seed=5)[0]
    truth = exact_top(vectors, ids, query, 10)
    assert index.search(query, 10, mode="exact").ids.tolist() == truth
    # A shortlist as long as the index makes the funnel exact.
    assert index.search(query, 10, shortlist=len(vectors), mode="funnel").ids.tolist() == truth
    funnel = index.search(query, 10, shortlist=200, mode="funnel")
    assert len(set(funnel.ids.tolist()) & set(truth)) >= 8
    assert np.all(np.diff(funnel.scores) <= 1e-6)


def test_prefix_mode_ranks_by_the_quantised_prefix() -> None:
    vectors = data()
    ids = np.arange(len(vectors))
    index = PrefixIndex("m", 64, 16)
    index.add("m", ids, vectors)
    query = data(1, seed=9)[0]
    hits = index.search(query, 20, mode="prefix")
    reference = exact_top(prefix_of(vectors, 16), ids, prefix_of(query, 16), 20)
    assert len(set(hits.ids.tolist()) & set(reference)) >= 18  # int8 rounding may swap near-ties


def test_vectors_of_another_model_are_refused() -> None:
    index = PrefixIndex("clip:a", 64, 8)
    with pytest.raises(ModelMismatch):
        index.add("clip:b", np.arange(3), data(3))
    assert len(index) == 0


def test_incremental_add_replace_and_remove_stay_consistent() -> None:
    vectors = data(300)
    index = PrefixIndex("m", 64, 8)
    index.add("m", np.arange(300), vectors)
    assert index.remove(np.arange(0, 300, 2)) == 150
    assert index.remove(np.array([0, 9999])) == 0
    index.add("m", np.array([1, 3]), vectors[[10, 12]])  # replaces, does not duplicate
    assert len(index) == 150
    assert np.allclose(index.vector(1), vectors[10])
    every = index.search(vectors[12], 150, mode="exact").ids.tolist()
    assert sorted(every) == list(range(1, 300, 2)) and every[0] in (3, 11)
    assert index.search(vectors[12], 150, shortlist=150, mode="funnel").ids.tolist()[0] in (3, 11)
    with pytest.raises(ValueError):
        index.add("m", np.array([5, 5]), vectors[:2])


def test_a_persisted_index_reloads_identically(tmp_path: Path) -> None:
    vectors = data(500)
    index = PrefixIndex("m", 64, 16)
    index.add("m", np.arange(500) * 7, vectors)
    index.remove(np.array([7, 14]))
    (tmp_path / "idx").mkdir()
    index.write_files(tmp_path / "idx")
    loaded = PrefixIndex.load(tmp_path / "idx")
    assert (loaded.model_id, loaded.prefix_len, len(loaded)) == ("m", 16, 498)
    for seed in range(5):
        query = data(1, seed=100 + seed)[0]
        for mode in ("exact", "funnel", "prefix"):
            a, b = index.search(query, 10, mode=mode), loaded.search(query, 10, mode=mode)
            assert a.ids.tolist() == b.ids.tolist() and np.allclose(a.scores, b.scores)


def test_a_shared_prefix_costs_one_byte_per_value() -> None:
    assert PrefixIndex("m", 384, 64).prefix_bytes_per_item == 64
    assert PrefixIndex("m", 384, 64, quantizer="fp16").prefix_bytes_per_item == 128
    with pytest.raises(ValueError):
        PrefixIndex("m", 64, 65)
    with pytest.raises(ValueError):
        PrefixIndex("m", 64, 8).search(np.ones(64), 5, mode="fuzzy")


def test_results_are_per_group_and_restricted_inside_the_search() -> None:
    rng = np.random.default_rng(7)
    query = rng.normal(size=64).astype(np.float32)
    vectors = rng.normal(size=(3000, 64)).astype(np.float32)
    vectors[:400] = query + 0.3 * rng.normal(size=(400, 64))  # group 0: 400 segments, all close to the query
    groups = np.concatenate([np.zeros(400, np.int64), np.repeat(np.arange(1, 651), 4)])
    ids = groups * 1000 + np.concatenate([np.arange(400), np.tile(np.arange(4), 650)])
    index = PrefixIndex("m", 64, 16)
    index.add("m", ids, vectors)
    cosines = normalize(vectors) @ normalize(query[None])[0]

    def truth(allowed: set[int] | None, k: int) -> list[int]:
        best: dict[int, float] = {}
        for group, score in zip(groups.tolist(), cosines.tolist()):
            if allowed is None or group in allowed:
                best[group] = max(best.get(group, -2.0), score)
        return sorted(best, key=lambda g: -best[g])[:k]

    for mode in ("exact", "funnel"):  # (a shortlist of everything: random vectors have no ordered prefix)
        hits = index.search(query, 10, shortlist=3000, mode=mode, group_size=1000)
        assert (hits.ids // 1000).tolist() == truth(None, 10)  # group 0 once, not 400 times
    allowed = set(rng.choice(np.arange(1, 651), 20, replace=False).tolist())
    for mode in ("exact", "funnel"):  # 80 allowed rows: a shortlist of 100 is all of them, whatever the rest
        hits = index.search(query, 10, shortlist=100, mode=mode, group_size=1000, allowed=np.array(sorted(allowed)))
        assert (hits.ids // 1000).tolist() == truth(allowed, 10)
    assert len(index.search(query, 10, group_size=1000, allowed=np.array([999999])).ids) == 0


def test_writing_an_index_to_a_full_disk_raises_instead_of_leaving_a_torn_file(small_disk) -> None:
    from peerlight.node.files import replace_dir_atomic

    from .helpers import fill_disk

    disk = small_disk(1 << 20)
    index = PrefixIndex("m", 64, 16)
    index.add("m", np.arange(2000), data(2000))  # about half a megabyte
    fill_disk(disk)
    with pytest.raises(OSError):
        replace_dir_atomic(disk / "idx", index.write_files)
    assert not (disk / "idx").exists() and sorted(p.name for p in disk.iterdir()) == ["filler"]
