"""Type detection, metadata, text extraction and scan planning on real generated files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from peerlight.embeddings.chunking import chunk_text, sentence_windows
from peerlight.node.catalog.items import IndexedFile, SkippedFile
from peerlight.node.index.detect import detect
from peerlight.node.index.inspect import inspect_file
from peerlight.node.index.metadata import extract_metadata
from peerlight.node.index.scanner import FileStat, plan_scan, walk_library

from . import media

RED = Image.new("RGB", (64, 48), (255, 0, 0))
BLUE = Image.new("RGB", (64, 48), (0, 0, 255))


def stat_of(path: Path) -> FileStat:
    return FileStat.of(str(path), os.stat(path))


def kind(path: Path) -> tuple[str, str | None]:
    detected = detect(path, path.read_bytes()[:8192])
    return detected.modality, detected.mime


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("a.jpg", media.image, ("image", "image/jpeg")),
        ("a.png", media.image, ("image", "image/png")),
        ("a.webp", media.image, ("image", "image/webp")),
        ("a.gif", media.image, ("image", "image/gif")),
        ("a.tiff", media.image, ("image", "image/tiff")),
        ("a.bmp", media.image, ("image", "image/bmp")),
        ("a.mp3", media.tone, ("audio", "audio/mpeg")),
        ("a.flac", media.tone, ("audio", "audio/x-flac")),
        ("a.ogg", media.tone, ("audio", "audio/ogg")),
        ("a.opus", media.tone, ("audio", "audio/ogg")),
        ("a.wav", media.tone, ("audio", "audio/x-wav")),
        ("a.m4a", media.tone, ("audio", "audio/mp4")),
        ("a.mp4", lambda p: media.video(p, [(1, RED)]), ("video", "video/mp4")),
        ("a.mkv", lambda p: media.video(p, [(1, RED)]), ("video", "video/x-matroska")),
        ("a.webm", lambda p: media.video(p, [(1, RED)]), ("video", "video/webm")),
        ("a.mov", lambda p: media.video(p, [(1, RED)]), ("video", "video/quicktime")),
        ("a.pdf", lambda p: media.pdf(p, ["hello"]), ("text", "application/pdf")),
        ("a.epub", lambda p: media.epub(p, "T", ["hello"]), ("text", "application/epub+zip")),
    ],
)
def test_every_supported_format_is_detected_from_its_content(tmp_path: Path, name: str, make, expected) -> None:
    path = make(tmp_path / name)
    assert kind(path) == expected
    # Renamed to a misleading extension, binary media are still recognised by their bytes.
    if expected[0] != "text" and name.split(".")[1] not in ("m4a", "opus"):
        disguised = path.rename(tmp_path / "disguised.txt")
        assert kind(disguised)[0] == expected[0]


def test_text_documents_are_recognised_by_extension_and_content(tmp_path: Path) -> None:
    for name, mime in (("n.txt", "text/plain"), ("n.md", "text/markdown"), ("n.html", "text/html")):
        (tmp_path / name).write_text("Grüße, a plain document\n")
        assert kind(tmp_path / name) == ("text", mime)
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02binary")
    assert kind(tmp_path / "binary.txt")[0] == "other"
    (tmp_path / "notes.jpg").write_text("not really a picture")
    assert kind(tmp_path / "notes.jpg")[0] == "other"


def test_exif_metadata_and_gps_only_when_allowed(tmp_path: Path) -> None:
    path = media.image(
        tmp_path / "p.jpg", camera=("Canon", "EOS 5D"), taken="2021:06:01 10:30:00", orientation=6, gps=(48.8566, -2.35)
    )
    meta, _ = extract_metadata(path, "image", "image/jpeg", store_gps=False)
    assert meta["camera"] == "Canon EOS 5D" and meta["date"] == "2021-06-01T10:30:00" and meta["orientation"] == 6
    assert "gps_lat" not in meta
    meta, _ = extract_metadata(path, "image", "image/jpeg", store_gps=True)
    assert meta["gps_lat"] == pytest.approx(48.8566, abs=1e-3) and meta["gps_lon"] == pytest.approx(-2.35, abs=1e-3)


@pytest.mark.parametrize("suffix", [".mp3", ".flac", ".ogg", ".m4a"])
def test_audio_tags(tmp_path: Path, suffix: str) -> None:
    tags = {"title": "Blue in Green", "artist": "Miles Davis", "album": "Kind of Blue", "genre": "Jazz", "date": "1959"}
    path = media.tone(tmp_path / f"song{suffix}", seconds=1.5, tags=tags)
    meta, _ = extract_metadata(path, "audio", None, store_gps=False)
    assert meta["title"] == "Blue in Green" and meta["artist"] == "Miles Davis" and meta["album"] == "Kind of Blue"
    assert meta["genre"] == "Jazz" and meta["year"] == 1959 and meta["duration"] == pytest.approx(1.5, abs=0.1)


def test_video_container_data(tmp_path: Path) -> None:
    path = media.video(tmp_path / "clip.mp4", [(1, RED), (1, BLUE)])
    meta, _ = extract_metadata(path, "video", "video/mp4", store_gps=False)
    assert meta["duration"] == pytest.approx(2.0, abs=0.2) and (meta["width"], meta["height"]) == (64, 48)
    assert meta["codec"] == "h264"


@pytest.mark.parametrize(
    ("name", "content", "mime", "title"),
    [
        ("notes.txt", "  \nFirst line here\nmore", "text/plain", "First line here"),
        ("doc.md", "intro\n# The Heading\nbody text", "text/markdown", "The Heading"),
        ("page.html", "<html><head><title>Page T</title><script>x=1</script></head><body><p>Body words</p></body></html>", "text/html", "Page T"),
    ],
)
def test_text_titles_and_length(tmp_path: Path, name: str, content: str, mime: str, title: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    meta, document = extract_metadata(path, "text", mime, store_gps=False)
    assert meta["title"] == title and document is not None and meta["characters"] == len(document.text)
    assert "x=1" not in document.text


def test_pdf_and_epub_text(tmp_path: Path) -> None:
    meta, document = extract_metadata(media.pdf(tmp_path / "a.pdf", ["Alpha beta", "Gamma"], title="Greek"), "text", "application/pdf", store_gps=False)
    assert meta["title"] == "Greek" and "Alpha beta" in document.text and meta["words"] == 3
    meta, document = extract_metadata(media.epub(tmp_path / "b.epub", "A Book", ["One.", "Two."]), "text", "application/epub+zip", store_gps=False)
    assert meta["title"] == "A Book" and "One." in document.text and "Two." in document.text


def test_corrupt_and_truncated_files_are_skipped_with_a_reason(tmp_path: Path) -> None:
    good = media.image(tmp_path / "good.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    video = media.video(tmp_path / "v.mp4", [(2, RED)])
    cut_video = tmp_path / "cut.mp4"
    cut_video.write_bytes(video.read_bytes()[:300])
    bad_pdf = tmp_path / "bad.pdf"
    bad_pdf.write_bytes(b"%PDF-1.4\n garbage without objects")
    bad_mp3 = tmp_path / "bad.mp3"
    bad_mp3.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + os.urandom(64))
    for path in (truncated, cut_video, bad_pdf, bad_mp3):
        result = inspect_file(stat_of(path), store_gps=False)
        assert isinstance(result, SkippedFile) and result.kind == "corrupt" and result.reason, path
    ok = inspect_file(stat_of(good), store_gps=False)
    assert isinstance(ok, IndexedFile) and len(ok.content_hash) == 64
    other = tmp_path / "archive.zip"
    other.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    skipped = inspect_file(stat_of(other), store_gps=False)
    assert isinstance(skipped, SkippedFile) and skipped.kind == "unsupported"


def test_identical_bytes_have_the_same_hash_wherever_they_are(tmp_path: Path) -> None:
    a = media.image(tmp_path / "a.png")
    b = tmp_path / "sub" / "renamed.png"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    ha = inspect_file(stat_of(a), store_gps=False)
    hb = inspect_file(stat_of(b), store_gps=False)
    assert ha.content_hash == hb.content_hash
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert isinstance(inspect_file(stat_of(empty), store_gps=False), IndexedFile)


def test_walk_skips_hidden_and_excluded_folders_and_plan_finds_changes(tmp_path: Path) -> None:
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.txt").write_text("x")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "y.txt").write_text("y")
    keep = tmp_path / "keep.txt"
    keep.write_text("k")
    (tmp_path / "loop").symlink_to(tmp_path)
    files = list(walk_library(tmp_path, skip_hidden=True, exclude=(tmp_path / "data",)))
    assert sorted((f.path, type(f).__name__) for f in files) == [(str(keep), "FileStat"), (str(tmp_path / "loop"), "SkippedFile")]
    assert [f.kind for f in files if f.path.endswith("loop")] == ["link"]  # a link to a folder is never followed
    known = {str(keep): stat_of(keep).signature(), str(tmp_path / "gone.txt"): (1, 2, 3, 4)}
    plan = plan_scan(files, known, {})
    assert plan.unchanged == 1 and plan.changed == [] and plan.deleted == [str(tmp_path / "gone.txt")]
    assert [skip.path for skip in plan.skips] == [str(tmp_path / "loop")]
    plan = plan_scan(files, known, {str(tmp_path / "loop"): (plan.skips[0].size, plan.skips[0].mtime_ns, "link")})
    assert plan.skips == [] and plan.known_bad == 1  # recorded once, not again at every rescan
    keep.write_text("changed")
    plan = plan_scan(list(walk_library(tmp_path, skip_hidden=True)), known, {})
    assert {f.path for f in plan.changed} == {str(keep), str(tmp_path / "data" / "y.txt")}


def test_chunks_overlap_and_cover_the_text() -> None:
    text = " ".join(f"w{i}" for i in range(250))
    spans = chunk_text(text, 100, 20)
    assert [text[s.start : s.end].split()[0] for s in spans] == ["w0", "w80", "w160"]
    assert text[spans[-1].start : spans[-1].end].split()[-1] == "w249"
    assert chunk_text("   ", 100, 20) == []
    with pytest.raises(ValueError):
        chunk_text(text, 10, 10)
    doc = "First sentence here. Second one! Third?\n\nNew paragraph"
    windows = [doc[w.start : w.end] for w in sentence_windows(doc, chunk_text(doc, 100, 0)[0])]
    assert "First sentence here." in windows and "Second one! Third?" in windows and "New paragraph" in windows


def test_a_file_that_vanishes_or_turns_into_a_fifo_is_never_an_error(tmp_path: Path) -> None:
    from peerlight.node.index.inspect import Vanished

    gone = media.image(tmp_path / "gone.jpg")
    seen = stat_of(gone)
    gone.unlink()  # deleted between the walk and the read: a deletion, not a problem
    assert inspect_file(seen, store_gps=False) == Vanished(str(gone))
    swapped = media.image(tmp_path / "swapped.jpg")
    seen = stat_of(swapped)
    swapped.unlink()
    os.mkfifo(swapped)  # replaced by a FIFO after the walk: refused without blocking
    result = inspect_file(seen, store_gps=False)
    assert isinstance(result, SkippedFile) and result.kind == "special" and "FIFO" in result.reason


def test_changed_paths_are_walked_like_a_full_walk_would(tmp_path: Path) -> None:
    from peerlight.node.index.scanner import walk_paths

    (tmp_path / ".cache").mkdir()
    hidden = media.image(tmp_path / ".cache" / "thumb.jpg")
    excluded = tmp_path / "data"
    excluded.mkdir()
    (excluded / "catalog.sqlite3-wal").write_bytes(b"x")
    shown = media.image(tmp_path / "photo.jpg")
    walked = list(walk_paths(tmp_path, [str(hidden), str(excluded / "catalog.sqlite3-wal"), str(shown), "/etc/hostname"],
                             skip_hidden=True, exclude=(excluded,)))
    assert [entry.path for entry in walked] == [str(shown)]


def test_files_under_a_folder_that_cannot_be_listed_are_not_deleted(tmp_path: Path) -> None:
    known = {str(tmp_path / "locked" / "a.jpg"): (1, 2, 3, 4), str(tmp_path / "gone.jpg"): (1, 2, 3, 4)}
    locked = SkippedFile(str(tmp_path / "locked"), 0, 0, "unreadable", "cannot read: Permission denied")
    plan = plan_scan([locked], known, {})
    assert plan.deleted == [str(tmp_path / "gone.jpg")]
    # Also when the folder's skip is already recorded (passed over as known-bad this time).
    plan = plan_scan([locked], known, {locked.path: (0, 0, "unreadable")})
    assert plan.deleted == [str(tmp_path / "gone.jpg")] and plan.known_bad == 1
