"""Property tests on every decoder of peers' fields: requests a share receives, answers a client receives.

Whatever a peer sends, the result is a typed error or a checked value, never a crash, and
nothing unchecked reaches the catalog or the disk.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from peerlight.node.catalog import remote_items
from peerlight.node.catalog.migrations import migrate
from peerlight.node.peers.transfers import safe_name
from peerlight.node.serving.handlers import _filters, _vector
from peerlight.p2p import schema
from peerlight.p2p.errors import Forbidden, Malformed


def _checked_manifest(raw: dict) -> dict:
    return schema.MANIFEST.keep_reply(raw)


def checked_result(raw: dict) -> dict | None:
    return schema.RESULT.keep(raw)


def store_page(conn: sqlite3.Connection, items: list, k: int, **options) -> int:
    """A page from a peer as the client stores it: kept through the catalog protocol's schema first."""
    page = schema.CATALOG.keep_reply({"items": items, "cursor": 0})
    return remote_items.store_page(conn, "p", page["items"], k, **options)

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=30) | st.binary(max_size=64),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
maps = st.dictionaries(st.sampled_from(["modality", "date_from", "date_to", "size_min", "size_max", "rating_min", "folder", "x"]), values, max_size=5)


@given(maps)
@settings(max_examples=300, deadline=None)
def test_query_filters_are_checked_or_refused(raw) -> None:
    try:
        filters = _filters(schema.QUERY.check_request({"filters": raw})["filters"])
    except (Malformed, Forbidden):
        return
    assert all(m in ("image", "audio", "video", "text") for m in filters.modalities)
    assert filters.rating_min is None and filters.folder is None


@given(st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_query_vectors_are_finite_float32_or_refused(data: bytes) -> None:
    try:
        vector = _vector(data)
    except Malformed:
        return
    assert vector.dtype == np.float32 and len(vector) * 4 == len(data) and np.isfinite(vector).all()


@given(st.dictionaries(st.text(max_size=12), values, max_size=8))
@settings(max_examples=300, deadline=None)
def test_manifests_keep_only_checked_fields(raw) -> None:
    manifest = _checked_manifest(raw)
    assert manifest.get("name") is None or isinstance(manifest["name"], str)
    assert all(isinstance(n, int) for n in manifest["counts"].values())
    assert all(isinstance(m["id"], str) for m in manifest["models"])


@given(values, st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))
@settings(max_examples=300, deadline=None)
def test_file_names_from_peers_never_leave_the_folder(name, content_hash: str) -> None:
    safe = safe_name(name, content_hash)
    assert safe and "/" not in safe and "\x00" not in safe and not safe.startswith(".")
    assert len(safe.encode("utf-8", "surrogateescape")) <= 255


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", ".", "a\\..\\b", ".bashrc", "\x00", "x" * 300 + ".jpg", "ok.txt"])
def test_path_tricks_in_file_names(name: str) -> None:
    safe = safe_name(name, "f" * 64)
    assert "/" not in safe and safe not in (".", "..") and not safe.startswith(".") and len(safe.encode()) <= 255


@given(st.lists(st.dictionaries(st.sampled_from(["content_hash", "name", "size", "modality", "mime", "metadata", "vectors"]), values, max_size=7), max_size=5))
@settings(max_examples=200, deadline=None)
def test_hostile_catalog_pages_store_only_checked_rows(items) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    conn.execute("INSERT INTO remote_shares (peer_id, found_by, first_seen) VALUES ('p', 'manual', 0)")
    store_page(conn, items, k=4)
    for content_hash, name, size, modality in conn.execute("SELECT content_hash, name, size, modality FROM remote_items"):
        assert len(content_hash) == 64 and isinstance(name, str) and isinstance(size, int) and modality in ("image", "audio", "video", "text")
    for (prefix,) in conn.execute("SELECT prefix FROM remote_vectors"):
        assert len(prefix) == 8 and np.isfinite(np.frombuffer(prefix, "<f2")).all()


def test_a_valid_catalog_page_is_stored() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    conn.execute("INSERT INTO remote_shares (peer_id, found_by, first_seen) VALUES ('p', 'manual', 0)")
    prefix = np.array([0.5, 0.5, 0.5, 0.5], "<f2").tobytes()
    item = {"content_hash": "a" * 64, "name": "x.jpg", "size": 3, "modality": "image", "metadata": {"date": "2024"}, "vectors": {"m": prefix}}
    assert store_page(conn, [item], k=4) == 1
    keys, matrix = remote_items.cached_prefixes(conn, "m")
    assert keys == [("p", "a" * 64)] and matrix.shape == (1, 4)
    assert remote_items.finish_sync(conn, "p", cursor=9, total=1) and remote_items.sync_cursor(conn, "p") == 9
    assert not remote_items.finish_sync(conn, "p", cursor=10, total=2)


@given(st.binary(max_size=2000))
@settings(max_examples=200, deadline=None)
def test_no_byte_string_passes_for_an_adapter(data: bytes) -> None:
    from peerlight.embeddings.adapters import AdapterError
    from peerlight.node.peers.adapters import verified_adapter

    with pytest.raises(AdapterError):
        verified_adapter(data, "ordered:x:0123456789abcdef")


def test_an_adapter_verifies_only_against_the_model_id_it_produces() -> None:
    from peerlight.embeddings.adapters import AdapterError, pca_adapter
    from peerlight.node.peers.adapters import verified_adapter

    vectors = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    adapter = pca_adapter("st:base:0123", vectors)
    data = adapter.to_bytes()
    assert verified_adapter(data, adapter.model_id).model_id == adapter.model_id
    with pytest.raises(AdapterError):
        verified_adapter(data, adapter.model_id[:-1] + ("0" if adapter.model_id[-1] != "0" else "1"))
    tampered = pca_adapter("st:base:0123", vectors * 1.5 + 1).to_bytes()
    with pytest.raises(AdapterError):
        verified_adapter(tampered, adapter.model_id)


@given(st.dictionaries(st.sampled_from(["content_hash", "name", "modality", "path", "rating", "item_id", "score", "similarity", "metadata", "match", "source"]), values, max_size=9))
@settings(max_examples=300, deadline=None)
def test_peers_results_keep_only_checked_protocol_fields(raw) -> None:
    result = checked_result(raw)
    if result is None:
        return
    assert not {"path", "rating", "item_id", "source"} & set(result)
    assert len(result["content_hash"]) == 64 and isinstance(result["name"], str)


def test_a_peer_cannot_pass_a_result_off_as_local() -> None:
    hostile = {"content_hash": "a" * 64, "name": "x.txt", "modality": "text", "path": "/etc/passwd", "rating": 10, "score": 3.5, "source": "local"}
    assert checked_result(hostile) == {"content_hash": "a" * 64, "name": "x.txt", "modality": "text", "score": 3.5, "metadata": {}}


@pytest.mark.parametrize("number", [float("nan"), float("inf"), -float("inf"), 2**63, -(2**63) - 1, 1e308])
def test_no_number_from_a_peer_is_kept_unless_finite_and_in_range(number) -> None:
    """NaN and infinities are not JSON and break arithmetic; 2**63 overflows SQLite's integers."""
    import json

    raw = {"content_hash": "b" * 64, "name": "x", "modality": "video", "size": number, "score": number, "similarity": number,
           "metadata": {"year": number, "title": "ok"}, "match": {"start": number, "end": 2.5, "passage": "a\nb"}}
    result = checked_result(raw)
    assert result == {"content_hash": "b" * 64, "name": "x", "modality": "video", "metadata": {"title": "ok"}, "match": {"end": 2.5, "passage": "a b"}}
    json.dumps(result, allow_nan=False)
    conn = sqlite3.connect(":memory:")
    migrate(conn)
    conn.execute("INSERT INTO remote_shares (peer_id, addresses, found_by, first_seen) VALUES ('p', '[]', 'manual', 0)")
    stored = store_page(conn, [raw | {"size": 10}, raw | {"content_hash": "c" * 64}], 8)
    assert stored == 1  # the item whose size is out of range is left out, the other kept without the bad values
    assert remote_items.cached_items(conn, [("p", "b" * 64)])[("p", "b" * 64)]["metadata"] == {"title": "ok"}


def test_names_from_a_peer_reach_no_terminal_with_their_control_characters() -> None:
    from peerlight.p2p.fields import plain_text

    assert plain_text("\x1b[2Jevil\u202etxt.exe\x00", 255) == "[2Jeviltxt.exe"
    assert plain_text("Ünïcode ☃ fine", 255) == "Ünïcode ☃ fine"
    assert _checked_manifest({"name": "\x1b]0;pwned\x07share"})["name"] == "]0;pwnedshare"


def test_metadata_near_the_bound_is_never_cut_into_invalid_json() -> None:
    conn = sqlite3.connect(":memory:")
    migrate(conn)
    conn.execute("INSERT INTO remote_shares (peer_id, addresses, found_by, first_seen) VALUES ('p', '[]', 'manual', 0)")
    metadata = {f"k{i}": "}" * 999 for i in range(32)}  # 32 KB of values, each ending in a brace
    item = {"content_hash": "d" * 64, "name": "x", "modality": "text", "size": 1, "metadata": metadata}
    assert store_page(conn, [item], 8) == 1
    kept = remote_items.cached_items(conn, [("p", "d" * 64)])[("p", "d" * 64)]["metadata"]
    assert 2 <= len(kept) < 32 and all(metadata[key] == value for key, value in kept.items())


def test_an_adapter_zip_bomb_is_refused_before_it_is_inflated() -> None:
    """2 MiB on the wire, 2 GiB inflated: refused from the members' declared sizes (peak memory stays small)."""
    import tracemalloc

    from peerlight.embeddings.adapters import AdapterError
    from peerlight.node.peers.adapters import verified_adapter

    from .hostile import _deflate_zeros, _zip

    size = 2 << 30
    body = _deflate_zeros(size)
    npy = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (536870912,), }" + b" " * 39 + b"\n"
    bomb = _zip([("header.npy", npy)], raw=[("rotation.npy", 8, 0, body, size)])
    assert len(bomb) < 4 << 20
    tracemalloc.start()
    try:
        with pytest.raises(AdapterError, match="inflates to 2,147,48"):
            verified_adapter(bomb, "x")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, peak


def test_a_query_s_spread_reads_a_sample_of_a_space_s_cached_prefixes_not_all() -> None:
    """A space the node holds no items of was once estimated from every cached prefix of it:
    seconds and gigabytes after a hostile share had filled the cache."""
    from peerlight.node.peers.search import SPREAD_SAMPLE

    conn = sqlite3.connect(":memory:")
    migrate(conn)
    conn.execute("INSERT INTO remote_shares (peer_id, addresses, found_by, first_seen) VALUES ('p', '[]', 'manual', 0)")
    rng = np.random.default_rng(1)
    items = [
        {"content_hash": f"{n:064x}", "name": f"n{n}", "modality": "text", "size": 1,
         "vectors": {"m": rng.normal(size=8).astype("<f2").tobytes()}}
        for n in range(SPREAD_SAMPLE + 500)
    ]
    assert sum(store_page(conn, items[i : i + 500], 8) for i in range(0, len(items), 500)) == len(items)
    keys, matrix = remote_items.cached_prefixes(conn, "m", limit=SPREAD_SAMPLE)
    assert len(keys) == SPREAD_SAMPLE and matrix.shape == (SPREAD_SAMPLE, 8)
    assert len(remote_items.cached_prefixes(conn, "m")[0]) == len(items)  # ranking one peer's cache still sees all


def test_a_catalog_sync_cut_short_resumes_after_the_last_page_stored() -> None:
    conn = sqlite3.connect(":memory:")
    migrate(conn)
    conn.execute("INSERT INTO remote_shares (peer_id, addresses, found_by, first_seen) VALUES ('p', '[]', 'manual', 0)")
    item = {"content_hash": "e" * 64, "name": "x", "modality": "text", "size": 1}
    store_page(conn, [item], 8, cursor=500)
    assert remote_items.sync_cursor(conn, "p") == 500
