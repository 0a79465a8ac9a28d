"""What the indexer is doing, for ``peerlight status`` and the CLI's progress bars."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LibraryProgress:
    library_id: int
    name: str
    phase: str = "idle"  # idle | scanning | indexing
    files_total: int = 0  # files needing work in the current scan
    files_done: int = 0
    files_skipped: int = 0  # inspected and found unusable
    refused: int = 0  # skipped by the walk without reading (FIFOs, links out, sparse files, ...)
    bytes_done: int = 0
    unchanged: int = 0
    deleted: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    scans: int = 0  # completed scans since the daemon started

    def begin(self) -> None:
        self.phase = "scanning"
        self.files_total = self.files_done = self.files_skipped = self.refused = self.bytes_done = 0
        self.unchanged = self.deleted = 0
        self.started_at, self.finished_at = time.time(), None

    def finish(self) -> None:
        self.phase = "idle"
        self.finished_at = time.time()
        self.scans += 1


@dataclass
class IndexProgress:
    libraries: dict[int, LibraryProgress] = field(default_factory=dict)

    def library(self, library_id: int, name: str) -> LibraryProgress:
        progress = self.libraries.get(library_id)
        if progress is None:
            progress = self.libraries[library_id] = LibraryProgress(library_id, name)
        return progress

    @property
    def busy(self) -> bool:
        return any(p.phase != "idle" for p in self.libraries.values())

    def to_wire(self) -> list[dict[str, Any]]:
        return [asdict(p) for p in self.libraries.values()]
