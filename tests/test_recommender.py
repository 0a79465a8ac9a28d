"""The preference model, its labels and its ranking, and the rating files it reads (no daemon)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerlight.cli.feedback_commands import read_csv_rows
from peerlight.cli.errors import CliError
from peerlight.node import xmp
from peerlight.recommender import bayes
from peerlight.recommender.feedback import DISLIKE_RATING, LIKE_RATING, MAX_IMPLICIT_WEIGHT, labels
from peerlight.recommender.model import COLD_START_EXAMPLES, Example, PreferenceModel, design, train, unit_rows
from peerlight.recommender.ranking import Candidates, RankingSettings, rank, scores

DIMENSION = 64


def ordered(count: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors whose variance decays along the dimensions, as importance-ordered ones do."""
    return unit_rows(rng.normal(size=(count, DIMENSION)) * np.exp(-np.arange(DIMENSION) / 12.0))


def taste_ratings(vectors: np.ndarray, rng: np.random.Generator, noise: float = 0.7) -> np.ndarray:
    direction = np.exp(-np.arange(DIMENSION) / 12.0) * rng.normal(size=DIMENSION)
    values = vectors @ direction
    return np.clip(5 + 2 * (values - values.mean()) / values.std() + rng.normal(0, noise, len(values)), 0, 10)


def examples(vectors: np.ndarray, ratings: np.ndarray) -> list[Example]:
    return [Example(f"{i:064x}", vectors[i], float(ratings[i])) for i in range(len(vectors))]


def test_bayesian_fit_recovers_a_linear_taste_with_calibrated_uncertainty() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 8))
    weights = rng.normal(size=8)
    y = x @ weights + rng.normal(0, 0.5, 2000)
    fitted = bayes.fit(x[:1500], y[:1500])
    assert np.allclose(fitted.mean, weights, atol=0.1)
    mean, spread = fitted.predict(x[1500:])
    inside = np.abs(mean - y[1500:]) <= spread
    assert 0.6 < inside.mean() < 0.76  # one standard deviation holds about 68%
    assert fitted.beta**-0.5 == pytest.approx(0.5, rel=0.15)
    few = bayes.fit(x[:20], y[:20])
    assert few.predict(x[1500:])[1].mean() > spread.mean()  # less data, wider


def test_the_evidence_prefers_the_block_scale_that_explains_the_data() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 6))
    y = 3.0 * x[:, 5] + rng.normal(0, 0.3, 400)  # only the last column matters, strongly
    small = bayes.fit(x * np.array([1, 1, 1, 1, 1, 0.05]), y)
    chosen = bayes.fit(x * np.array([1, 1, 1, 1, 1, 0.05]), y, block=slice(5, 6), block_scales=(1.0, 20.0))
    assert chosen.log_evidence > small.log_evidence
    # Folded back: the fit applies to the unscaled (0.05) features.
    assert np.corrcoef(chosen.predict(x * np.array([1, 1, 1, 1, 1, 0.05]))[0], y)[0, 1] > 0.99


def test_the_model_learns_a_taste_and_scores_prefixes_it_was_trained_for() -> None:
    rng = np.random.default_rng(3)
    vectors = ordered(1400, rng)
    ratings = taste_ratings(vectors, rng)
    model = train({"s": examples(vectors[:400], ratings[:400])}, {"s": DIMENSION})
    full, spread = model.predict("s", vectors[400:])
    assert np.corrcoef(full, ratings[400:])[0, 1] > 0.7
    assert (spread > 0).all()
    # The fast path is the head alone: the whole prediction less the neighbourhood correction.
    correction = model.heads["s"].neighbourhood(DIMENSION).correction(vectors[400:420])
    assert np.allclose(model.mean("s", vectors[400:420]), np.clip(full[:20] - correction, 0, 10), atol=1e-3)

    # A taste that the leading values show only roughly and later ones sharply: a model trained on
    # whole vectors leans on the later values, which a peer's 8-value prefix does not carry.
    latent = rng.normal(size=1400)
    vectors = unit_rows(np.hstack([
        latent[:, None] + rng.normal(0, 1.0, (1400, 4)), rng.normal(0, 0.3, (1400, 4)),
        latent[:, None] + rng.normal(0, 0.1, (1400, 8)), rng.normal(0, 0.1, (1400, DIMENSION - 16)),
    ]))
    ratings = np.clip(5 + 2 * latent + rng.normal(0, 0.5, 1400), 0, 10)
    model = train({"s": examples(vectors[:400], ratings[:400])}, {"s": DIMENSION})
    prefix = model.predict("s", vectors[400:, :8])[0]  # a peer's item: an 8-value prefix only
    untruncated = bayes.fit(design(vectors[:400], DIMENSION, np.zeros((0, DIMENSION))), ratings[:400] - model.bias)
    plain = untruncated.predict(design(vectors[400:, :8], DIMENSION, np.zeros((0, DIMENSION))))[0]
    # Peers' items (prefixes) and local ones (whole vectors) are ranked together, so a prefix's
    # prediction must be on the same scale: trained on truncations it is; trained on whole
    # vectors only, the same kind of model is far off.
    truncated_error = np.abs(prefix - ratings[400:]).mean()
    plain_error = np.abs(plain + model.bias - ratings[400:]).mean()
    assert truncated_error < 0.8 * plain_error, (truncated_error, plain_error)


def test_the_neighbourhood_corrects_what_the_smooth_head_cannot_follow() -> None:
    """A broad linear taste with one exception: a tight group of items loved against the trend.
    The head's own error on that group is large; the rated members' residuals correct it."""
    rng = np.random.default_rng(8)
    vectors = ordered(1200, rng)
    ratings = taste_ratings(vectors, rng, noise=0.3)
    centre = vectors[400 + np.argmin(ratings[400:])]  # where the broad taste is lowest (not rated itself)
    group = unit_rows(centre + 0.25 * rng.normal(size=(120, DIMENSION)) * np.exp(-np.arange(DIMENSION) / 12.0))
    vectors = np.vstack([vectors, group])
    ratings = np.concatenate([ratings, np.clip(9 + rng.normal(0, 0.3, len(group)), 0, 10)])
    train_rows = np.r_[0:400, 1200:1260]
    test_group = np.arange(1260, 1320)
    model = train({"s": examples(vectors[train_rows], ratings[train_rows])}, {"s": DIMENSION})
    head_alone = np.abs(model.mean("s", vectors[test_group]) - ratings[test_group]).mean()
    whole = np.abs(model.predict("s", vectors[test_group])[0] - ratings[test_group]).mean()
    assert whole < 0.75 * head_alone, (whole, head_alone)
    # Elsewhere it does no harm.
    rest = np.arange(600, 1200)
    assert np.abs(model.predict("s", vectors[rest])[0] - ratings[rest]).mean() <= 1.05 * np.abs(model.mean("s", vectors[rest]) - ratings[rest]).mean()
    # The group's members explain a group item's score.
    keys = {f"{i:064x}" for i in range(400, 460)}  # the group's rated members, as examples() names them
    assert model.explain("s", vectors[1300])[0][0] in keys


def test_a_rated_item_known_only_by_a_prefix_is_a_neighbour_at_that_width_only() -> None:
    rng = np.random.default_rng(9)
    vectors = ordered(60, rng)
    ratings = taste_ratings(vectors, rng)
    rated = examples(vectors[:40], ratings[:40]) + [Example("f" * 64, vectors[40, :8], 9.0)]  # a peer's item, rated unfetched
    model = train({"s": rated}, {"s": DIMENSION})
    head = model.heads["s"]
    assert 40 not in head.neighbourhood(DIMENSION).rows and 40 in head.neighbourhood(8).rows
    again = PreferenceModel.from_bytes(model.to_bytes())
    assert 40 not in again.heads["s"].neighbourhood(DIMENSION).rows
    assert np.allclose(again.predict("s", vectors[41:])[0], model.predict("s", vectors[41:])[0], atol=0.05)


def test_ratings_of_peers_items_alone_train_a_local_block_at_their_prefix_width() -> None:
    """A node with no library rates only peers' items, known by their K-prefixes: the local block's
    centres are those prefixes, the head scores prefixes and whole vectors alike, and a fetched
    item (now a whole vector) joins without moving the centres' width while most are prefixes."""
    from peerlight.recommender.model import LOCAL_CENTRES, centre_width

    rng = np.random.default_rng(11)
    vectors = ordered(900, rng)
    ratings = taste_ratings(vectors, rng)
    k = 16
    peer_only = [Example(f"{i:064x}", vectors[i, :k], float(ratings[i])) for i in range(200)]
    head = train({"s": peer_only}, {"s": DIMENSION}).heads["s"]
    assert head.centres.shape == (min(200, LOCAL_CENTRES), k) and head.fitted is not None
    model = train({"s": peer_only}, {"s": DIMENSION})
    from_prefixes = model.predict("s", vectors[300:, :k])[0]
    from_whole = model.predict("s", vectors[300:])[0]  # the same items fetched: scored at the centres' width
    assert np.corrcoef(from_prefixes, ratings[300:])[0, 1] > 0.6
    assert np.corrcoef(from_whole, ratings[300:])[0, 1] > 0.6
    again = PreferenceModel.from_bytes(model.to_bytes())
    assert np.allclose(again.predict("s", vectors[300:340, :k])[0], from_prefixes[:40], atol=0.05)
    # One fetched among many prefixes: still the prefixes' width; mostly whole: the whole width.
    assert centre_width(np.array([k] * 9 + [DIMENSION])) == k
    assert centre_width(np.array([k] * 3 + [DIMENSION] * 7)) == DIMENSION
    assert model.describe()["spaces"]["s"]["widths"] == {str(k): 200}


def test_cold_start_works_from_peers_prefixes_alone() -> None:
    """Three ratings of peers' items (prefixes only): similarity to them ranks the rest, and the
    explanation names them."""
    rng = np.random.default_rng(12)
    vectors = ordered(300, rng)
    liked, disliked = vectors[0], -vectors[0]
    near = unit_rows(liked + 0.2 * rng.normal(size=(20, DIMENSION)))
    far = unit_rows(disliked + 0.2 * rng.normal(size=(20, DIMENSION)))
    rated = [Example("a" * 64, liked[:16], 9.0), Example("b" * 64, near[0, :16], 9.0), Example("c" * 64, far[0, :16], 1.0)]
    model = train({"s": rated}, {"s": DIMENSION})
    assert model.heads["s"].cold
    scores = model.predict("s", np.vstack([near[1:], far[1:]])[:, :16])[0]
    assert scores[:19].min() > scores[19:].max()
    assert model.explain("s", near[5, :16])[0][0] in ("a" * 64, "b" * 64)


def test_cold_start_ranks_by_similarity_to_the_rated_items_and_explains_it() -> None:
    rng = np.random.default_rng(4)
    liked, disliked = unit_rows(rng.normal(size=(2, DIMENSION)))
    rated = [Example("a" * 64, liked, 9.0), Example("b" * 64, disliked, 1.0)]
    model = train({"s": rated}, {"s": DIMENSION})
    assert model.describe()["spaces"]["s"]["mode"].startswith("similarity") and len(rated) < COLD_START_EXAMPLES
    near_liked = unit_rows((liked + 0.2 * rng.normal(size=DIMENSION))[None])[0]
    near_disliked = unit_rows((disliked + 0.2 * rng.normal(size=DIMENSION))[None])[0]
    up, down = model.predict("s", np.stack([near_liked, near_disliked]))[0]
    assert up > model.bias > down
    assert model.explain("s", near_liked)[0][0] == "a" * 64
    assert model.predict("other space", liked[None])[0][0] == model.bias  # a space never rated: the bias


def test_a_stored_model_predicts_as_the_trained_one_and_explains_with_its_ratings() -> None:
    rng = np.random.default_rng(5)
    vectors = ordered(300, rng)
    ratings = taste_ratings(vectors, rng)
    model = train({"s": examples(vectors[:200], ratings[:200])}, {"s": DIMENSION})
    again = PreferenceModel.from_bytes(model.to_bytes(), version=7)
    assert again.version == 7 and again.describe()["spaces"] == model.describe()["spaces"]
    assert np.allclose(again.predict("s", vectors[200:])[0], model.predict("s", vectors[200:])[0], atol=0.02)
    drivers = again.explain("s", vectors[250])
    assert drivers and all(len(key) == 64 for key, _ in drivers)
    with pytest.raises(ValueError):
        PreferenceModel.from_bytes(b"not a model")


def test_explicit_feedback_outranks_events_and_events_are_weaker_labels() -> None:
    found = labels(
        [("a", 9.0), ("b", DISLIKE_RATING)],
        [("a", "skipped", None), ("c", "finished", None), ("c", "finished", None), ("d", "skipped", None), ("e", "watched", 0.5),
         ("f", "opened", None), ("g", "unknown kind", None)] + [("h", "finished", None)] * 10,
    )
    assert found["a"].target == 9.0 and found["a"].explicit and found["a"].weight == 1.0
    assert found["c"].target > found["f"].target > found["d"].target and found["e"].target == pytest.approx(5.0)
    assert not found["c"].explicit and found["c"].weight < 1.0
    assert found["h"].weight == MAX_IMPLICIT_WEIGHT and "g" not in found
    assert LIKE_RATING > 5 > DISLIKE_RATING


def _candidates(predicted: list[float], vectors: list[list[float]], seen: list[float] | None = None) -> Candidates:
    count = len(predicted)
    return Candidates(
        np.array(predicted, dtype=float),
        np.ones(count),
        np.array(seen if seen is not None else [np.inf] * count),
        np.zeros(count, dtype=int),
        [np.array(v, dtype=np.float32) for v in vectors],
    )


def test_ranking_orders_diversifies_shuffles_and_prefers_the_unseen() -> None:
    same = [1.0, 0.0, 0.0]
    other = [0.0, 1.0, 0.0]
    candidates = _candidates([9.0, 8.9, 8.8, 8.0], [same, same, same, other])
    strict = RankingSettings(diversity=0.0)
    assert rank(candidates, 4, strict) == [0, 1, 2, 3]
    assert rank(candidates, 2, RankingSettings(diversity=0.5)) == [0, 3]  # the near-copies wait
    stale = _candidates([9.0, 8.5], [same, other], seen=[0.0, np.inf])  # the first was played just now
    assert rank(stale, 2, strict) == [1, 0]
    assert scores(stale, strict)[0] < 9.0
    many = _candidates([5.0 + 0.01 * i for i in range(30)], [[float(i), 1.0, 0.0] for i in range(30)])
    orders = {tuple(rank(many, 5, RankingSettings(diversity=0.0, temperature=2.0, seed=s))) for s in range(5)}
    assert len(orders) > 1
    assert rank(many, 5, RankingSettings(diversity=0.0, temperature=2.0, seed=3)) == rank(many, 5, RankingSettings(diversity=0.0, temperature=2.0, seed=3))
    assert rank(many, 0, strict) == [] and rank(_candidates([], []), 3, strict) == []


def test_xmp_sidecars_are_read_in_both_forms_and_hostile_ones_refused() -> None:
    ns = 'xmlns:x="adobe:ns:meta/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
    assert xmp.parse_rating(f'<x:xmpmeta {ns}><rdf:RDF><rdf:Description xmp:Rating="3"/></rdf:RDF></x:xmpmeta>'.encode()) == 6
    assert xmp.parse_rating(f"<x:xmpmeta {ns}><rdf:Description><xmp:Rating>-1</xmp:Rating></rdf:Description></x:xmpmeta>".encode()) == 0
    assert xmp.parse_rating(f"<x:xmpmeta {ns}><rdf:Description/></x:xmpmeta>".encode()) is None
    assert xmp.parse_rating(xmp.sidecar(7.0)) == 8 and xmp.written_by_us(xmp.sidecar(7.0))
    for hostile in (
        b'<!DOCTYPE x [<!ENTITY a "aa"><!ENTITY b "&a;&a;">]><x>&b;</x>',
        b"<unclosed",
        f'<x:xmpmeta {ns}><rdf:Description xmp:Rating="9"/></x:xmpmeta>'.encode(),
        f'<x:xmpmeta {ns}><rdf:Description xmp:Rating="lots"/></x:xmpmeta>'.encode(),
        b" " * (xmp.MAX_SIDECAR_BYTES + 1),
    ):
        with pytest.raises(xmp.SidecarError):
            xmp.parse_rating(hostile)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_no_sidecar_bytes_crash_the_reader(data: bytes) -> None:
    try:
        rating = xmp.parse_rating(data)
    except xmp.SidecarError:
        return
    assert rating is None or 0 <= rating <= 10


def test_a_ratings_csv_needs_an_item_and_a_rating_column() -> None:
    rows = read_csv_rows("path,stars\n/a.jpg,4\n/b.jpg,x\n")
    assert rows == [{"path": "/a.jpg", "rating": 8.0}, {"path": "/b.jpg", "rating": "x"}]
    assert read_csv_rows("content_hash,rating,name\nabc,7,n\n") == [{"content_hash": "abc", "rating": "7"}]
    with pytest.raises(CliError, match="header"):
        read_csv_rows("file,score\n/a.jpg,4\n")


def test_items_are_named_by_path_hash_or_prefix_and_model_versions_roll_back(tmp_path) -> None:
    import sqlite3

    from peerlight.node.catalog import feedback as store
    from peerlight.node.catalog.migrations import migrate

    conn = sqlite3.connect(tmp_path / "c.sqlite3", isolation_level=None)
    migrate(conn)
    conn.execute("INSERT INTO libraries (id, path, name, added_at) VALUES (1, '/lib', 'lib', 0)")
    first, second = "abcdef01" + "0" * 56, "abcdef01" + "1" + "0" * 55
    for item, content_hash in ((1, first), (2, second)):
        conn.execute("INSERT INTO items (id, content_hash, size, modality, first_seen, updated_at) VALUES (?, ?, 1, 'text', 0, 0)", (item, content_hash))
        conn.execute(
            "INSERT INTO locations (item_id, library_id, path, size, mtime_ns, inode, device, last_seen) VALUES (?, 1, ?, 1, 1, ?, 1, 0)",
            (item, f"/lib/{item}.txt", item),
        )
    assert store.resolve_item(conn, "/lib/1.txt") == store.ItemRef(first, "/lib/1.txt", True)
    assert store.resolve_item(conn, "ABCDEF011") == store.ItemRef(second, "/lib/2.txt", True)  # a unique prefix, any case
    with pytest.raises(store.AmbiguousItem):
        store.resolve_item(conn, "abcdef01")
    with pytest.raises(store.UnknownItem):
        store.resolve_item(conn, "abcd")  # shorter than a prefix may be
    with pytest.raises(store.UnknownItem):
        store.resolve_item(conn, "/lib/none.txt")
    unknown = "f" * 64  # a hash known nowhere (yet): rated ahead, e.g. from an imported list
    assert store.resolve_item(conn, unknown) == store.ItemRef(unknown, unknown[:12], False)

    with pytest.raises(LookupError):
        store.roll_back(conn)
    versions = [store.store_model(conn, b"model %d" % n, n, "{}") for n in range(5)]
    assert [v["version"] for v in store.model_versions(conn)] == versions[-3:][::-1]  # three kept
    assert store.roll_back(conn) == versions[3] and store.active_model(conn) == (versions[3], b"model 3")
    assert store.roll_back(conn) == versions[2]
    with pytest.raises(LookupError):
        store.roll_back(conn)


def test_the_mlp_option_learns_a_taste_scores_prefixes_and_is_stored() -> None:
    rng = np.random.default_rng(6)
    vectors = ordered(900, rng)
    ratings = taste_ratings(vectors, rng)
    model = train({"s": examples(vectors[:500], ratings[:500])}, {"s": DIMENSION}, kind="mlp")
    assert model.describe()["spaces"]["s"]["mode"] == "mlp ensemble + neighbours"
    mean, spread = model.predict("s", vectors[500:])
    assert np.corrcoef(mean, ratings[500:])[0, 1] > 0.6 and (spread > 0).all()
    correction = model.heads["s"].neighbourhood(16).correction(unit_rows(vectors[500:520, :16]))
    assert np.allclose(model.mean("s", vectors[500:520, :16]), np.clip(model.predict("s", vectors[500:520, :16])[0] - correction, 0, 10), atol=1e-3)
    again = PreferenceModel.from_bytes(model.to_bytes())
    assert np.allclose(again.predict("s", vectors[500:])[0], mean, atol=0.05)
    assert again.explain("s", vectors[600])
    with pytest.raises(ValueError, match="unknown model"):
        train({"s": examples(vectors[:10], ratings[:10])}, {"s": DIMENSION}, kind="forest")
