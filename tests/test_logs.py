from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from peerlight.node.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("peerlight").setLevel(logging.NOTSET)


def test_file_gets_json_lines_with_extra_fields_and_rotates(tmp_path: Path, restore_logging: None) -> None:
    log_file = tmp_path / "logs" / "peerlight.log"
    configure_logging("info", log_file, max_bytes=4096, backups=2, to_stderr=False)
    log = logging.getLogger("peerlight.test")
    log.debug("hidden below the level")
    log.info("scan finished", extra={"files": 12, "library": "photos"})
    try:
        raise ValueError("bad frame")
    except ValueError:
        log.exception("request failed")
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [line["msg"] for line in lines] == ["scan finished", "request failed"]
    assert lines[0]["files"] == 12 and lines[0]["library"] == "photos" and lines[0]["level"] == "info"
    assert "ValueError: bad frame" in lines[1]["exc"]
    logging.getLogger("some.library").info("third-party chatter stays out")
    logging.getLogger("some.library").warning("third-party warnings get in")
    assert "third-party chatter" not in log_file.read_text()
    assert "third-party warnings get in" in log_file.read_text()
    for i in range(200):
        log.warning("filler %d", i)
    assert (tmp_path / "logs" / "peerlight.log.1").exists()
    assert not (tmp_path / "logs" / "peerlight.log.3").exists()


def test_console_lines_are_readable(tmp_path: Path, restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("debug", tmp_path / "x.log", max_bytes=1 << 20, backups=1, to_stderr=True)
    logging.getLogger("peerlight.test").debug("hello", extra={"peer": "abc"})
    assert "debug   peerlight.test: hello peer=abc" in capsys.readouterr().err
