"""Where a node keeps its files.

Every file of a node lives in one data directory, so that a node can be moved, backed up or
run several times side by side (tests do) by pointing at another directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "PEERLIGHT_HOME"

# A Unix socket's path must fit sockaddr_un.sun_path (108 bytes on Linux, with the NUL).
MAX_SOCKET_PATH_BYTES = 107


def default_data_dir() -> Path:
    """The data directory used when none is given: ``$PEERLIGHT_HOME`` or the platform's."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs  # imported here: only needed when no directory was given

    return Path(platformdirs.user_data_dir("peerlight", appauthor=False))


@dataclass(frozen=True)
class NodePaths:
    """The layout of one data directory."""

    root: Path

    @classmethod
    def resolve(cls, data_dir: str | os.PathLike[str] | None) -> NodePaths:
        root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        return cls(root.absolute())

    @property
    def config(self) -> Path:
        return self.root / "node.toml"

    @property
    def identity(self) -> Path:
        return self.root / "identity.key"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.sqlite3"

    @property
    def control_socket(self) -> Path:
        return self.root / "control.sock"

    @property
    def pid_file(self) -> Path:
        return self.root / "daemon.pid"

    @property
    def lock_file(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def vector_indexes(self) -> Path:
        return self.root / "indexes"

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    @property
    def share_keys(self) -> Path:
        return self.root / "shares"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "peerlight.log"

    def is_initialised(self) -> bool:
        return self.config.is_file() and self.identity.is_file()
