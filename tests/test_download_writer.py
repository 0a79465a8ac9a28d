"""The download writer: direct and page-cache writes of one file give exactly the bytes sent."""

from __future__ import annotations

import os
from pathlib import Path

import blake3
import pytest

from peerlight.node.peers.download import DIRECT_ALIGNMENT, STAGING_BYTES, PartialDownload

MIB = 1024 * 1024


def chunks(count: int, size: int = MIB, seed: int = 0) -> list[bytes]:
    return [bytes([(seed + i) % 251]) * 7 + os.urandom(size - 7) for i in range(count)]


def write_all(download: PartialDownload, data: list[bytes], batch: int = 8) -> None:
    for start in range(0, len(data), batch):
        part = data[start : start + batch]
        download.hasher.update(b"".join(part))
        download.write(part)


def test_direct_batches_and_a_short_tail_make_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / ".x.partial"
    data = chunks(19) + [os.urandom(12345)]
    download = PartialDownload(path)
    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no direct I/O on this platform")
    assert download.direct, "tmp_path's filesystem offers O_DIRECT on Linux"
    write_all(download, data)
    download.sync()
    download.close()
    whole = b"".join(data)
    assert path.read_bytes() == whole
    assert download.size == len(whole)
    assert download.hasher.hexdigest() == blake3.blake3(whole).hexdigest()


def test_a_resumed_download_continues_the_file_and_its_hash(tmp_path: Path) -> None:
    path = tmp_path / ".x.partial"
    data = chunks(11, seed=3)
    first = PartialDownload(path)
    write_all(first, data[:5])
    first.close()
    second = PartialDownload(path)
    assert second.size == 5 * MIB
    write_all(second, data[5:])
    second.sync()
    second.close()
    whole = b"".join(data)
    assert path.read_bytes() == whole
    assert second.hasher.hexdigest() == blake3.blake3(whole).hexdigest()


def test_an_unaligned_partial_goes_on_through_the_page_cache(tmp_path: Path) -> None:
    path = tmp_path / ".x.partial"
    head = os.urandom(DIRECT_ALIGNMENT + 5)
    path.write_bytes(head)
    download = PartialDownload(path)
    data = chunks(3, seed=9)
    write_all(download, data)
    download.close()
    assert path.read_bytes() == head + b"".join(data)
    assert download.hasher.hexdigest() == blake3.blake3(head + b"".join(data)).hexdigest()


def test_batches_beyond_the_staging_buffer_and_odd_chunk_sizes(tmp_path: Path) -> None:
    path = tmp_path / ".x.partial"
    data = chunks(9, seed=5) + chunks(3, size=MIB + 1000, seed=7) + chunks(4, seed=1)
    assert sum(map(len, data[:9])) > STAGING_BYTES
    download = PartialDownload(path)
    write_all(download, data, batch=9)
    download.close()
    assert path.read_bytes() == b"".join(data)


def test_without_direct_io_every_write_is_buffered(tmp_path: Path) -> None:
    """What a filesystem without O_DIRECT gets (the writer falls back to this on EINVAL)."""
    path = tmp_path / ".x.partial"
    download = PartialDownload(path)
    download._close_direct()
    data = chunks(10, seed=2)
    write_all(download, data)
    download.close()
    assert path.read_bytes() == b"".join(data)


def test_a_link_planted_in_the_target_folder_is_never_followed(tmp_path: Path) -> None:
    """Someone who can write into the download folder plants links where the download will go."""
    import errno as errnos

    import pytest

    from peerlight.node.peers.transfers import _place

    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"precious")
    folder = tmp_path / "downloads"
    folder.mkdir()
    planted = folder / ".abc.peerlight-partial"
    planted.symlink_to(elsewhere)
    with pytest.raises(OSError) as refused:
        PartialDownload(planted)  # would append the peer's bytes to `elsewhere`
    assert refused.value.errno == errnos.ELOOP and elsewhere.read_bytes() == b"precious"

    partial = folder / ".def.peerlight-partial"
    partial.write_bytes(b"verified download")
    (folder / "song.mp3").symlink_to(elsewhere)  # the final name, taken by a link
    placed = _place(partial, folder / "song.mp3")
    assert placed.name == "song (1).mp3" and placed.read_bytes() == b"verified download"
    assert elsewhere.read_bytes() == b"precious" and not partial.exists()


def test_placing_falls_back_to_an_exclusive_rename_where_hard_links_are_refused(tmp_path: Path, monkeypatch) -> None:
    """FAT and exFAT have no hard links: the verified file still gets its name, never over another."""
    import errno as errnos
    import os

    from peerlight.node.peers import transfers as peers

    def no_links(source, target):  # type: ignore[no-untyped-def]
        raise OSError(errnos.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "a.jpg").write_bytes(b"older")
    partial = tmp_path / ".x.peerlight-partial"
    partial.write_bytes(b"newer")
    placed = peers._place(partial, tmp_path / "a.jpg")
    assert placed.name == "a (1).jpg" and placed.read_bytes() == b"newer" and (tmp_path / "a.jpg").read_bytes() == b"older"
    assert not partial.exists()
