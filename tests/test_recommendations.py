"""Ratings, the preference model and recommendations through real daemons (real MiniLM vectors).

One node's library holds short texts on two topics (cooking, astronomy). The user rates a few
of each; recommendations then put the unrated texts of the liked topic first, say which
ratings drove them, survive renames, honour dislikes, roll back, and move through CSV and XMP.
Two nodes: a peer's items are ranked from their cached prefixes before anything is fetched,
and a recording of everything the rating node sends holds none of its ratings or its model.
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

import blake3
import numpy as np
import pytest

from .helpers import cli_json, index_and_wait, new_node, started
from .media import image

pytestmark = pytest.mark.slow

COOKING = {
    "soup.txt": "Simmer onions, carrots and celery in olive oil, add stock and lentils, and season the soup with thyme.",
    "bread.txt": "Knead flour, water, yeast and salt for ten minutes, let the dough rise, then bake the loaf in a hot oven.",
    "pasta.txt": "Boil the pasta in salted water and toss it with garlic fried in butter, parmesan and black pepper.",
    "curry.txt": "Fry cumin, ginger and garlic, stir in tomatoes and chickpeas, and let the curry cook slowly with coconut milk.",
    "cake.txt": "Cream butter and sugar, beat in eggs, fold in flour and bake the sponge cake until golden.",
    "salad.txt": "Whisk lemon juice, mustard and olive oil into a dressing and pour it over crisp lettuce and cucumber.",
    "risotto.txt": "Toast the rice in butter, add hot broth a ladle at a time, and stir the risotto until creamy.",
    "pancakes.txt": "Whisk milk, eggs and flour into a batter and fry thin pancakes in a buttered pan.",
}
ASTRONOMY = {
    "jupiter.txt": "Jupiter is a gas giant whose great red spot is a storm larger than the Earth.",
    "nebula.txt": "A nebula is a cloud of gas and dust in space where new stars are born.",
    "telescope.txt": "A reflecting telescope gathers starlight with a curved mirror to show faint galaxies.",
    "eclipse.txt": "During a solar eclipse the Moon passes between the Sun and the Earth and hides the Sun.",
    "comet.txt": "A comet is an icy body whose tail of gas and dust points away from the Sun.",
    "pulsar.txt": "A pulsar is a spinning neutron star that sweeps beams of radio waves across space.",
    "mars.txt": "Mars is a cold desert planet with the tallest volcano in the solar system.",
    "galaxy.txt": "The Milky Way is a spiral galaxy of hundreds of billions of stars orbiting a black hole.",
}
LIKED = ("soup.txt", "bread.txt", "pasta.txt")
DISLIKED = ("jupiter.txt", "nebula.txt", "telescope.txt")


def _write_library(folder: Path, texts: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / name).write_text(text)
    return folder


def _settled_version(data_dir: Path, quiet_seconds: float = 2.0) -> int:
    """The active model version after ``quiet_seconds`` without a retrain."""
    time.sleep(quiet_seconds)
    return cli_json(data_dir, "recommender", "status")["version"]


def _wait_for_version(data_dir: Path, above: int, examples: int | None = None, widths: dict[str, int] | None = None) -> dict:
    """The model's status once a version above ``above`` (trained on ``examples`` labelled items,
    its one space's examples at ``widths``) is active: the background retrain after feedback.
    (A retrain still pending from earlier feedback may come first: it is waited past.)"""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = cli_json(data_dir, "recommender", "status")
        widths_now = [head.get("widths") for head in status.get("spaces", {}).values()]
        if status["version"] > above and examples in (None, status["examples"]) and widths in (None, *widths_now):
            return status
        time.sleep(0.2)
    raise AssertionError(f"no model newer than version {above} was trained: {status}")


def _names(reply: dict) -> list[str]:
    return [Path(r.get("path") or r["name"]).name for r in reply["results"]]


@pytest.fixture
def rated_node(tmp_path_factory):
    base = tmp_path_factory.mktemp("rec")
    data_dir = new_node(base / "node")
    library = base / "library"
    _write_library(library / "cooking", COOKING)
    _write_library(library / "space", ASTRONOMY)
    daemon = started(data_dir)
    try:
        cli_json(data_dir, "library", "add", str(library))
        index_and_wait(data_dir)
        yield data_dir, library, daemon
    finally:
        daemon.stop()


def test_recommendations_follow_the_user_s_ratings(rated_node) -> None:
    data_dir, library, _ = rated_node
    assert cli_json(data_dir, "recommender", "status")["version"] == 0  # nothing rated: no model yet
    for name in LIKED:
        cli_json(data_dir, "rate", str(library / "cooking" / name), "9")
    for name in DISLIKED:
        cli_json(data_dir, "rate", str(library / "space" / name), "2")
    curry_hash = blake3.blake3((library / "cooking" / "curry.txt").read_bytes()).hexdigest()
    liked = cli_json(data_dir, "like", curry_hash[:10])  # a search result's short hash names it
    assert liked["rating"] == 8 and liked["name"].endswith("curry.txt")
    status = _wait_for_version(data_dir, 0, examples=7)  # trained in the background after the feedback
    assert list(status["spaces"].values())[0]["mode"] == "bayesian (linear + local) + neighbours"

    reply = cli_json(data_dir, "recommend", "--local", "--limit", "4", "--diversity", "0", "--explain")
    names = _names(reply)
    assert set(names) <= set(COOKING) - set(LIKED) - {"curry.txt"}, names  # unrated, and of the liked topic
    first = reply["results"][0]
    assert first["predicted"] > status["bias"] and first["uncertainty"] > 0
    drivers = first["because"]
    assert drivers and Path(drivers[0]["name"]).name in set(LIKED) | {"curry.txt"} and drivers[0]["moved"] > 0
    # The lowest of a long list is the other topic's.
    everything = cli_json(data_dir, "recommend", "--local", "--limit", "50", "--diversity", "0", "--exploration", "0")
    assert _names(everything)[-1] in ASTRONOMY and len(everything["results"]) == 16 - 7

    # A rating follows the content: renamed, the file keeps it.
    (library / "cooking" / "soup.txt").rename(library / "cooking" / "lentil-soup.txt")
    index_and_wait(data_dir)
    listed = {Path(r["name"]).name: r["rating"] for r in cli_json(data_dir, "ratings")["ratings"]}
    assert listed["lentil-soup.txt"] == 9 and "soup.txt" not in listed

    # A disliked item is never recommended, even with rated items included.
    cli_json(data_dir, "dislike", str(library / "cooking" / "cake.txt"))
    version = _wait_for_version(data_dir, status["version"])["version"]
    with_rated = cli_json(data_dir, "recommend", "--local", "--limit", "50", "--include-rated")
    assert "cake.txt" not in _names(with_rated) and "bread.txt" in _names(with_rated)

    # Played just now: pushed down by novelty (the same list otherwise).
    top = _names(cli_json(data_dir, "recommend", "--local", "--limit", "1", "--diversity", "0", "--exploration", "0"))[0]
    cli_json(data_dir, "event", str(library / "cooking" / top), "finished")
    version = _wait_for_version(data_dir, version)["version"]
    after = cli_json(data_dir, "recommend", "--local", "--limit", "3", "--diversity", "0", "--exploration", "0", "--novelty", "10")
    assert _names(after)[0] != top and all(r["last_seen"] is None for r in after["results"][:1])

    # A smart shuffle varies with its seed; temperature 0 is the strict order.
    strict = [_names(cli_json(data_dir, "recommend", "--local", "--limit", "5")) for _ in range(2)]
    assert strict[0] == strict[1]
    shuffled = {tuple(_names(cli_json(data_dir, "recommend", "--local", "--limit", "5", "--temperature", "5", "--seed", str(s)))) for s in range(4)}
    assert len(shuffled) > 1

    # Roll back to the previous version, then training goes on from the newest feedback.
    # (Compared with the version active when it rolls back: a retrain still pending from the
    # feedback above may have made a newer one since ``version`` was read.)
    active = cli_json(data_dir, "recommender", "status")["version"]
    while (settled := _settled_version(data_dir)) != active:  # until no retrain follows for a while
        active = settled
    assert active >= version
    rolled = cli_json(data_dir, "recommender", "rollback")
    assert rolled["version"] < active
    versions = cli_json(data_dir, "recommender", "status")["versions"]
    assert [v["version"] for v in versions if v["active"]] == [rolled["version"]] and len(versions) == 3


def test_ratings_move_through_csv_and_xmp_sidecars(rated_node, tmp_path) -> None:
    data_dir, library, _ = rated_node
    for name, rating in (("soup.txt", "9"), ("bread.txt", "7")):
        cli_json(data_dir, "rate", str(library / "cooking" / name), rating)
    exported = tmp_path / "ratings.csv"
    cli_json(data_dir, "ratings", "export", str(exported))
    rows = list(csv.DictReader(io.StringIO(exported.read_text())))
    assert {Path(r["name"]).name: float(r["rating"]) for r in rows} == {"soup.txt": 9, "bread.txt": 7}
    for name in ("soup.txt", "bread.txt"):
        cli_json(data_dir, "unrate", str(library / "cooking" / name))
    assert cli_json(data_dir, "ratings")["total"] == 0
    # Back in, with one row by path and stars, and rows that are wrong (reported, not fatal).
    extra = tmp_path / "more.csv"
    extra.write_text(
        "content_hash,path,stars\n"
        f",{library / 'space' / 'mars.txt'},4\n"
        f"{'0' * 64},,2\n"  # a hash of nothing here yet: kept for when it arrives
        "zz,,3\n"
        f",{library / 'space' / 'comet.txt'},eleven\n"
    )
    assert cli_json(data_dir, "ratings", "import", str(exported))["imported"] == 2
    reply = cli_json(data_dir, "ratings", "import", str(extra))
    assert reply["imported"] == 2 and [p["row"] for p in reply["problems"]] == [3, 4]
    listed = {Path(r["name"]).name: r["rating"] for r in cli_json(data_dir, "ratings")["ratings"]}
    assert listed["soup.txt"] == 9 and listed["bread.txt"] == 7 and listed["mars.txt"] == 8

    photos = library / "photos"
    photos.mkdir()
    for name, colour in (("red.png", (200, 30, 30)), ("blue.png", (30, 30, 200)), ("green.png", (30, 200, 30)), ("grey.png", (120, 120, 120))):
        image(photos / name, colour=colour)
    (photos / "red.png.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4"/></rdf:RDF></x:xmpmeta>'
    )
    (photos / "blue.xmp").write_text(  # Lightroom's name, the rating as an element, a rejected photo
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/"><xmp:Rating>-1</xmp:Rating></rdf:Description></rdf:RDF></x:xmpmeta>'
    )
    (photos / "green.png.xmp").write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')  # hostile
    index_and_wait(data_dir)
    reply = cli_json(data_dir, "ratings", "import", "--xmp")
    assert reply["imported"] == 2 and [Path(p["path"]).name for p in reply["problems"]] == ["green.png.xmp"]
    listed = {Path(r["name"]).name: r["rating"] for r in cli_json(data_dir, "ratings")["ratings"]}
    assert listed["red.png"] == 8 and listed["blue.png"] == 0
    assert cli_json(data_dir, "ratings", "import", "--xmp")["imported"] == 0  # nothing newer than what is here

    cli_json(data_dir, "rate", str(photos / "grey.png"), "6")
    cli_json(data_dir, "rate", str(photos / "red.png"), "10")
    written = cli_json(data_dir, "ratings", "export", "--xmp", str(photos))
    # red.png and blue.png have their own sidecars (another program's): kept as they are.
    assert written["written"] == 1 and sorted(Path(p).name for p in written["kept"]) == ["blue.xmp", "red.png.xmp"]
    assert 'xmp:Rating="3"' in (photos / "grey.png.xmp").read_text()
    assert 'xmp:Rating="4"' in (photos / "red.png.xmp").read_text()

    # Bad input: clear errors.
    assert cli_json(data_dir, "rate", "/no/such/file.jpg", "5", expect_rc=1)["error"]["code"] == "not_found"
    assert cli_json(data_dir, "rate", str(photos / "grey.png"), "11", expect_rc=2)["error"]["code"] == "invalid_params"
    assert cli_json(data_dir, "event", str(photos / "grey.png"), "watched", expect_rc=2)["error"]["code"] == "invalid_params"


def test_peers_items_are_recommended_from_prefixes_and_nothing_private_leaves(tmp_path) -> None:
    a_dir, b_dir = new_node(tmp_path / "a"), new_node(tmp_path / "b")
    record = tmp_path / "outbound.bin"
    b_library = _write_library(tmp_path / "b-library", COOKING | ASTRONOMY)
    a_library = _write_library(tmp_path / "a-library", {"stew.txt": "Brown the beef, add wine, carrots and herbs, and stew it for hours."})
    os.environ["PEERLIGHT_TEST_RECORD"] = str(record)
    try:
        a = started(a_dir, program=(str(Path(__file__).parent / "recording_node.py"),))
    finally:
        del os.environ["PEERLIGHT_TEST_RECORD"]
    b = started(b_dir)
    try:
        cli_json(b_dir, "library", "add", str(b_library))
        index_and_wait(b_dir)
        share = cli_json(b_dir, "share", "create", "kitchen", "--permission", "public", "--collection", str(b_library))
        cli_json(a_dir, "library", "add", str(a_library))
        index_and_wait(a_dir)
        remote = cli_json(a_dir, "peers", "add", share["addresses"][0], "--wait")
        assert remote["items"] == 16

        # Rated here: the local stew; and, before fetching anything, two of the peer's items.
        cli_json(a_dir, "rate", str(a_library / "stew.txt"), "10")
        rated_remote = {}
        for name, rating in (("soup.txt", "9"), ("pulsar.txt", "1"), ("comet.txt", "2"), ("risotto.txt", "9"), ("mars.txt", "1")):
            content_hash = blake3.blake3((b_library / name).read_bytes()).hexdigest()
            reply = cli_json(a_dir, "rate", content_hash, rating)
            assert reply["name"] == name and reply["local"] is False
            rated_remote[name] = content_hash
        version = _wait_for_version(a_dir, 0, examples=6)["version"]
        reply = cli_json(a_dir, "recommend", "--from-peers", "--limit", "5", "--diversity", "0", "--explain")
        assert all(r["source"] == "peer" and r["share"] == "kitchen" for r in reply["results"])
        names = _names(reply)
        assert set(names) <= set(COOKING) - {"soup.txt", "risotto.txt"}, names
        assert cli_json(b_dir, "share", "show", "kitchen")["protocols"].get("fetch", {}).get("requests", 0) == 0

        # A search through the peer is sent, as a control that the recording sees the traffic.
        cli_json(a_dir, "search", "a warm winter dinner", "--peers", "--mode", "text")
        cli_json(a_dir, "event", str(a_library / "stew.txt"), "finished")
        _wait_for_version(a_dir, version)
    finally:
        a.stop()
        b.stop()
    sent = record.read_bytes()
    assert b"a warm winter dinner" in sent  # the recording holds the node's messages
    import sqlite3

    with sqlite3.connect(a_dir / "catalog.sqlite3") as conn:
        (model,) = conn.execute("SELECT data FROM preference_models WHERE active = 1").fetchone()
    with np.load(io.BytesIO(model)) as arrays:
        weights = arrays["h0_mean"]
    secrets = [h.encode() for h in rated_remote.values()] + [bytes.fromhex(h) for h in rated_remote.values()]
    secrets += [b"stew.txt", weights.tobytes()[:32], weights.astype(np.float32).tobytes()[:32], b"finished"]
    leaked = [s[:16] for s in secrets if s in sent]
    assert not leaked, f"sent to a peer: {leaked}"


def test_a_node_with_no_library_learns_its_taste_from_ratings_of_a_peer_s_items(tmp_path) -> None:
    """A phone or a new laptop: nothing of its own, a friend's share to browse. Its ratings of the
    friend's items (by hash, before fetching anything) train the model on the K-prefixes it
    holds, rank the rest of the share, survive the share going away, and become whole-vector
    examples once an item is fetched and embedded here. None of it leaves the node."""
    a_dir, b_dir = new_node(tmp_path / "a"), new_node(tmp_path / "b")
    a_library = _write_library(tmp_path / "a-library", COOKING | ASTRONOMY)
    record = tmp_path / "outbound.bin"
    a = started(a_dir)
    os.environ["PEERLIGHT_TEST_RECORD"] = str(record)
    try:
        b = started(b_dir, program=(str(Path(__file__).parent / "recording_node.py"),))
    finally:
        del os.environ["PEERLIGHT_TEST_RECORD"]
    try:
        cli_json(a_dir, "library", "add", str(a_library))
        index_and_wait(a_dir)
        share = cli_json(a_dir, "share", "create", "kitchen", "--permission", "public", "--collection", str(a_library))
        assert cli_json(b_dir, "peers", "add", share["addresses"][0], "--wait")["items"] == 16

        hashes = {name: blake3.blake3((a_library / name).read_bytes()).hexdigest() for name in COOKING | ASTRONOMY}
        liked, disliked = list(COOKING)[:5], list(ASTRONOMY)[:5]
        for name in liked[:4]:
            cli_json(b_dir, "rate", hashes[name], "9")
        cli_json(b_dir, "like", hashes[liked[4]])
        for name in disliked[:4]:
            cli_json(b_dir, "rate", hashes[name], "1")
        cli_json(b_dir, "dislike", hashes[disliked[4]])
        cli_json(b_dir, "event", hashes[liked[0]], "finished")  # a player's event on a peer's item is feedback too
        status = _wait_for_version(b_dir, 0, examples=10)
        ((space, head),) = status["spaces"].items()
        assert space.startswith("ordered:") and head["rated"] == 10 and head["widths"] == {"48": 10}, status

        for source in (("--from-peers",), ()):  # from peers, and both mixed (this node has nothing of its own)
            reply = cli_json(b_dir, "recommend", *source, "--limit", "3", "--diversity", "0", "--explain")
            names = _names(reply)
            assert names and set(names) <= set(COOKING) - set(liked), (source, names)
            assert all(r["source"] == "peer" for r in reply["results"])
            because = {b["name"] for r in reply["results"] for b in r["because"]}
            assert because and because <= set(liked) | set(disliked), because  # the rated peer items are named

        # Fetched into a library of B's own and embedded here: that example is now the whole vector.
        own = tmp_path / "b-library"
        own.mkdir()
        cli_json(b_dir, "library", "add", str(own))
        cli_json(b_dir, "fetch", share["peer_id"], hashes[liked[1]], "--to", str(own))
        index_and_wait(b_dir)
        upgraded = _wait_for_version(b_dir, status["version"], widths={"48": 9, "384": 1})
        ((_, head),) = upgraded["spaces"].items()
        assert head["rated"] == 10 and head["widths"] == {"48": 9, "384": 1}, upgraded

        # The share goes away: what was rated of it keeps teaching.
        cli_json(b_dir, "peers", "remove", share["peer_id"])
        retrained = cli_json(b_dir, "recommender", "retrain")
        assert retrained["examples"] == 10 and list(retrained["spaces"].values())[0]["rated"] == 10, retrained
    finally:
        a.stop()
        b.stop()
    sent = record.read_bytes()
    assert b"/peerlight/catalog/1.0.0" in sent  # the recording holds the node's traffic
    fetched = hashes[liked[1]]
    secrets = [h.encode() for n, h in hashes.items() if n in liked + disliked and h != fetched] + [b"finished"]
    assert not [s[:16] for s in secrets if s in sent], "a rating or an event reached a peer"
