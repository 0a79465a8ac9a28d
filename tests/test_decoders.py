"""Native decoders run in worker processes: a file that crashes one costs a worker, not the daemon.

The test-only image "format" (``PEERLIGHT_TEST_DECODER_HOOKS=1``) makes whatever parses an
image marked ``PEERLIGHT-TEST-ABORT`` call ``abort()``, as a crashing native decoder would,
and one marked ``PEERLIGHT-TEST-HOG`` allocate without bound. Real PNGs otherwise; real
worker processes; a real daemon that indexes them and keeps serving.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from peerlight.node.decoders import DecoderFailed, DecoderLimits, DecoderPool

from . import media
from .helpers import cli_json, index_and_wait, new_node, started

HOOKS = "PEERLIGHT_TEST_DECODER_HOOKS"


def marked_png(path: Path, marker: str) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", marker)  # an early tEXt chunk: within the first bytes any parser reads
    Image.new("RGB", (32, 32), (10, 200, 30)).save(path, pnginfo=info)
    return path


def test_a_worker_that_crashes_or_runs_out_of_memory_is_replaced_and_names_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(HOOKS, "1")
    good = media.image(tmp_path / "good.png", size=(300, 200))
    aborts = marked_png(tmp_path / "aborts.png", "PEERLIGHT-TEST-ABORT")
    hogs = marked_png(tmp_path / "hogs.png", "PEERLIGHT-TEST-HOG")
    pool = DecoderPool(DecoderLimits(workers=1, memory_bytes=768 * 2**20))
    try:
        with open(good, "rb") as handle:
            assert pool.metadata(handle.fileno(), "image", store_gps=False)["width"] == 300
            assert pool.image(handle.fileno(), max_side=150).size == (150, 100)
        with open(aborts, "rb") as handle, pytest.raises(DecoderFailed, match="crashed.*SIGABRT") as crashed:
            pool.metadata(handle.fileno(), "image", store_gps=False)
        assert crashed.value.kind == "corrupt"
        with open(hogs, "rb") as handle, pytest.raises(DecoderFailed, match="768 MiB") as hogged:
            pool.metadata(handle.fileno(), "image", store_gps=False)
        assert hogged.value.kind == "too_large"
        with open(good, "rb") as handle:  # a new worker takes the dead one's place
            assert pool.image(handle.fileno()).size == (300, 200)
        assert pool.crashes == 2
    finally:
        pool.close()


@pytest.mark.slow
def test_the_daemon_indexes_past_a_file_that_crashes_its_decoder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(HOOKS, "1")
    library = tmp_path / "library"
    media.image(library / "fine.png")
    marked_png(library / "crash.png", "PEERLIGHT-TEST-ABORT")
    marked_png(library / "greedy.png", "PEERLIGHT-TEST-HOG")
    data_dir = new_node(tmp_path / "node", "[index]\ndecoder_memory_mb = 768\n")
    daemon = started(data_dir)
    try:
        cli_json(data_dir, "library", "add", str(library))
        index_and_wait(data_dir)
        problems = {Path(p["path"]).name: p for p in cli_json(data_dir, "index", "--problems")["skipped"]}
        assert problems["crash.png"]["kind"] == "corrupt" and "SIGABRT" in problems["crash.png"]["reason"], problems
        assert problems["greedy.png"]["kind"] == "too_large", problems
        assert "fine.png" not in problems
        assert daemon.proc.poll() is None and cli_json(data_dir, "status")["catalog"]["items"] == 1
    finally:
        daemon.stop()


def test_without_isolation_such_a_file_would_end_the_process(tmp_path) -> None:
    """What the pool guards against, shown in a child process (not the test's own)."""
    import subprocess
    import sys

    marked_png(tmp_path / "crash.png", "PEERLIGHT-TEST-ABORT")
    code = (
        "from pathlib import Path; from peerlight.node.index.metadata import image_metadata; "
        f"image_metadata(Path({str(tmp_path / 'crash.png')!r}), store_gps=False)"
    )
    done = subprocess.run([sys.executable, "-c", code], env=os.environ | {HOOKS: "1"}, capture_output=True)
    assert done.returncode < 0  # killed by its signal


def test_a_worker_that_cannot_start_is_not_blamed_on_the_file(tmp_path) -> None:
    """Too little memory for its own imports: the pool says it has no decoder (an OSError, so the
    file is tried again later), it does not list the file as corrupt."""
    from peerlight.node.decoders import DecoderUnavailable

    good = media.image(tmp_path / "good.png")
    pool = DecoderPool(DecoderLimits(workers=1, memory_bytes=32 * 2**20))
    try:
        with open(good, "rb") as handle, pytest.raises(DecoderUnavailable, match="did not start"):
            pool.metadata(handle.fileno(), "image", store_gps=False)
    finally:
        pool.close()


def test_the_pool_duplicates_the_file_so_a_caller_that_gives_up_cannot_swap_it(tmp_path) -> None:
    good = media.image(tmp_path / "good.png", size=(40, 30))
    pool = DecoderPool(DecoderLimits(workers=1))
    try:
        handle = open(good, "rb")
        fd = handle.fileno()
        own = os.dup(fd)
        handle.close()  # the caller's own descriptor is gone; the pool works on its duplicate
        try:
            assert pool.image(own).size == (40, 30)
        finally:
            os.close(own)
    finally:
        pool.close()


def test_a_worker_outlives_the_thread_that_started_it_and_a_dead_idle_one_is_replaced(tmp_path) -> None:
    """Workers start from short-lived worker threads; one killed while idle is replaced, not handed out."""
    import threading
    import time

    good = media.image(tmp_path / "good.png", size=(40, 30))
    pool = DecoderPool(DecoderLimits(workers=1))
    try:
        def first_use() -> None:
            with open(good, "rb") as handle:
                assert pool.image(handle.fileno()).size == (40, 30)

        starter = threading.Thread(target=first_use)
        starter.start()
        starter.join()  # the thread that started the worker is gone
        time.sleep(0.5)
        with open(good, "rb") as handle:
            assert pool.image(handle.fileno()).size == (40, 30)
        idle = pool._idle[0]
        idle.process.kill()
        idle.process.wait()
        with open(good, "rb") as handle:
            assert pool.image(handle.fileno()).size == (40, 30)
        assert pool.crashes == 0  # no file is blamed for it
    finally:
        pool.close()


def test_no_decoder_free_is_not_the_file_s_fault_and_it_is_tried_again(tmp_path) -> None:
    """Indexing with no worker to be had records the file with an impossible mtime, so the next
    scan looks at it again; it is never listed as corrupt for it."""
    from peerlight.node.index.inspect import inspect_file
    from peerlight.node.index.scanner import FileStat

    good = media.image(tmp_path / "good.png")
    pool = DecoderPool(DecoderLimits(workers=1, memory_bytes=32 * 2**20))  # too little to start
    try:
        skipped = inspect_file(FileStat.of(str(good), good.stat()), store_gps=False, decoders=pool)
    finally:
        pool.close()
    assert (skipped.kind, skipped.mtime_ns) == ("unreadable", -1), skipped
    assert "tried again" in skipped.reason
