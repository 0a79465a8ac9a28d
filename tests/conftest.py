from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from peerlight.node.paths import NodePaths
from peerlight.node.setup import init_node

from .helpers import DaemonProcess

# Model weights must come from this machine only: never from a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A not-yet-existing data directory with a short path (Unix socket paths are limited)."""
    base = Path(tempfile.mkdtemp(prefix="pl-", dir="/tmp"))
    try:
        yield base / "node"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def node(data_dir: Path) -> NodePaths:
    """An initialised node (config and identity), no daemon."""
    paths = NodePaths(data_dir)
    init_node(paths)
    return paths


@pytest.fixture
def daemon(node: NodePaths) -> Iterator[DaemonProcess]:
    """A real daemon process on ``node``; stopped with SIGTERM afterwards."""
    process = DaemonProcess(node.root)
    assert process.wait_ready() == "ready", process.stop() or process.stderr()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def namespace() -> Iterator[str]:
    """A network namespace of this test's own with only ``lo`` (up): anything listening beyond
    loopback, announcing or dialling out runs in it (``ip netns exec NAME``), never in the main one."""
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    name = f"pl{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def small_disk() -> Iterator[Callable[[int], Path]]:
    """Mount small tmpfs file systems (a disk that fills up for real); needs root, else the test is skipped."""
    mounts: list[Path] = []

    def mount(size_bytes: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small file system needs root")
        point = Path(tempfile.mkdtemp(prefix="pl-disk-", dir="/tmp"))
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount tmpfs here: {done.stderr.decode().strip()}")
        mounts.append(point)
        return point

    try:
        yield mount
    finally:
        for point in mounts:
            subprocess.run(["umount", "-l", str(point)], check=False)
            shutil.rmtree(point, ignore_errors=True)

