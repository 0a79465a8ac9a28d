"""The adapter files this node has, by the model id they produce: what the adapter protocol serves
(a peer verifies what it receives: :mod:`peerlight.node.peers.adapters`)."""

from __future__ import annotations

import logging
from pathlib import Path

from peerlight.embeddings import default_adapters
from peerlight.embeddings.adapters import Adapter, AdapterError

log = logging.getLogger("peerlight.serving")


class AdapterFiles:
    """The adapters this node has (shipped ones and its own), found by the model id they produce."""

    def __init__(self, folders: list[Path]) -> None:
        self._folders = folders
        self._by_model: dict[str, Path] = {}
        self._seen: dict[Path, float] = {}

    def find(self, model_id: str) -> bytes | None:
        """The adapter file producing ``model_id``, as bytes (blocking: run in a worker thread)."""
        if model_id not in self._by_model:
            self._scan()
        path = self._by_model.get(model_id)
        return path.read_bytes() if path is not None else None

    def _scan(self) -> None:
        for folder in self._folders:
            for path in sorted(folder.glob("*.npz")) if folder.is_dir() else ():
                try:
                    mtime = path.stat().st_mtime
                    if self._seen.get(path) == mtime:
                        continue
                    self._seen[path] = mtime
                    self._by_model[Adapter.load(path).model_id] = path
                except (OSError, AdapterError) as exc:
                    log.debug("not an adapter: %s (%s)", path, exc)


def adapter_folders(node_adapters: Path) -> list[Path]:
    return [default_adapters.FOLDER, node_adapters]
