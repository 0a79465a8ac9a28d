"""Walking a library and deciding which files need work.

A rescan must be cheap when nothing changed (tens of thousands of files in seconds): it only
``stat``s files and compares (size, mtime, inode, device) with what the catalog remembers;
only new or changed files are read and hashed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FileStat:
    path: str
    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: str, st: os.stat_result) -> FileStat:
        return cls(path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)

    def signature(self) -> tuple[int, int, int, int]:
        return (self.size, self.mtime_ns, self.inode, self.device)


@dataclass
class ScanPlan:
    changed: list[FileStat] = field(default_factory=list)  # new, or different from the catalog
    deleted: list[str] = field(default_factory=list)  # in the catalog, gone from disk
    vanished_skips: list[str] = field(default_factory=list)  # skipped once, gone from disk
    unchanged: int = 0
    known_bad: int = 0  # failed before and unchanged since: not retried


def walk_library(root: Path, *, skip_hidden: bool, exclude: tuple[Path, ...] = ()) -> Iterator[FileStat]:
    """Every regular file under ``root``; symlinked folders are not followed (no loops)."""
    excluded = {str(p) for p in exclude}
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # unreadable or vanished folder: skipped, the rest is scanned
        for entry in entries:
            if skip_hidden and entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.path not in excluded:
                        stack.append(entry.path)
                    continue
                st = entry.stat(follow_symlinks=True)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield FileStat.of(entry.path, st)


def plan_scan(
    on_disk: Iterator[FileStat] | list[FileStat],
    known: dict[str, tuple[int, int, int, int]],
    failed: dict[str, tuple[int, int]],
) -> ScanPlan:
    plan = ScanPlan()
    seen = set()
    for file in on_disk:
        seen.add(file.path)
        if known.get(file.path) == file.signature():
            plan.unchanged += 1
        elif failed.get(file.path) == (file.size, file.mtime_ns):
            plan.known_bad += 1
        else:
            plan.changed.append(file)
    plan.deleted = [path for path in known if path not in seen]
    plan.vanished_skips = [path for path in failed if path not in seen]
    return plan
