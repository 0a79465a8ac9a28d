"""Walking a library and deciding which files need work.

A rescan must be cheap when nothing changed (tens of thousands of files in seconds): it only
``stat``s files and compares (size, mtime, inode, device) with what the catalog remembers;
only new or changed files are read and hashed.

A library holds whatever its owner, an archive or a download put there, so the walk
classifies every entry from its ``lstat`` before anything is opened. Regular files become
:class:`FileStat` (to inspect); everything that must not be read becomes a :class:`Skip`
with a kind and a reason: FIFOs, sockets and devices (``special``; opening a FIFO would wait
forever), dangling links, link loops, links to folders and links that lead outside the
library (``link``: a shared library must not expose what lies elsewhere), huge sparse files
such as unfinished downloads (``sparse``), folders that cannot be listed (``unreadable``) and
paths too long for the system to open (``path``). Symlinked folders are never followed, so
loops cannot happen; the walk is iterative, so deep nesting cannot exhaust the stack.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ..catalog.items import SkippedFile as Skip
from ..files import kind_of
from ..pathnames import display, is_within

# A file this large whose allocated blocks cover less than an eighth of it is sparse: an
# unfinished download or a disk image, whose hash would read gigabytes of holes. (Compressing
# file systems allocate less than the size too, but media barely compress.)
UNLISTED_KINDS = ("unreadable", "path")  # skips of an entry the walk could not look into
SPARSE_MIN_BYTES = 64 << 20
SPARSE_ALLOCATED_SHARE = 1 / 8


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
    skips: list[Skip] = field(default_factory=list)  # refused by the walk, not recorded like this yet
    deleted: list[str] = field(default_factory=list)  # in the catalog, gone from disk
    vanished_skips: list[str] = field(default_factory=list)  # skipped once, gone from disk
    unchanged: int = 0
    known_bad: int = 0  # skipped before and unchanged since: not retried


Entry = FileStat | Skip


def walk_library(root: Path, *, skip_hidden: bool, exclude: tuple[Path, ...] = ()) -> Iterator[Entry]:
    """Every entry under ``root`` that is not a folder: files to inspect, and skips."""
    return walk_paths(root, [str(root)], skip_hidden=skip_hidden, exclude=exclude)


def walk_paths(root: Path, paths: Iterable[str], *, skip_hidden: bool, exclude: tuple[Path, ...] = ()) -> Iterator[Entry]:
    """The entries at ``paths`` (inside ``root``), each folder among them walked whole; gone paths yield nothing."""
    real_root = os.path.realpath(root)
    inside = partial(is_within, folder=real_root)
    excluded = {str(p) for p in exclude}
    stack: list[str] = []
    for path in paths:
        # What a full walk would not visit is not visited for a changed path either.
        if not is_within(path, str(root)) or any(is_within(path, folder) for folder in excluded):
            continue
        if skip_hidden and any(part.startswith(".") for part in Path(os.path.relpath(path, root)).parts):
            continue
        try:
            lst = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            yield _unreachable(path, exc)
            continue
        if stat.S_ISDIR(lst.st_mode):
            if path not in excluded:
                stack.append(path)
        else:
            yield classify(path, lst, inside)
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except FileNotFoundError:
            continue  # vanished during the walk
        except OSError as exc:
            yield _unreachable(folder, exc)
            continue
        for entry in entries:
            if skip_hidden and entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.path not in excluded:
                        stack.append(entry.path)
                    continue
                lst = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                yield _unreachable(entry.path, exc)
                continue
            yield classify(entry.path, lst, inside)


def classify(path: str, lst: os.stat_result, inside: Callable[[str], bool]) -> Entry:
    """What to do with one non-folder entry, from its ``lstat`` (and its target's, for a link)."""
    if stat.S_ISLNK(lst.st_mode):
        return _follow_link(path, lst, inside)
    if stat.S_ISREG(lst.st_mode):
        return _regular(path, lst)
    return Skip(path, lst.st_size, lst.st_mtime_ns, "special", f"not a regular file ({kind_of(lst.st_mode)}); never opened")


def _regular(path: str, st: os.stat_result) -> Entry:
    allocated = st.st_blocks * 512
    if st.st_size >= SPARSE_MIN_BYTES and allocated < st.st_size * SPARSE_ALLOCATED_SHARE:
        return Skip(
            path,
            st.st_size,
            st.st_mtime_ns,
            "sparse",
            f"sparse file: {st.st_size:,} bytes long but only {allocated:,} on disk (an unfinished download?)",
        )
    return FileStat.of(path, st)


def _follow_link(path: str, lst: os.stat_result, inside: Callable[[str], bool]) -> Entry:
    def skip(reason: str) -> Skip:
        return Skip(path, lst.st_size, lst.st_mtime_ns, "link", reason)

    try:
        target = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return skip("symbolic link loop")
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return skip(f"dangling symbolic link (to {display(os.readlink(path))})")
        return skip(f"symbolic link that cannot be followed: {exc.strerror}")
    if stat.S_ISDIR(target.st_mode):
        return skip("symbolic link to a folder (not followed)")
    real = os.path.realpath(path)
    if not inside(real):
        return skip(f"symbolic link that leads outside the library (to {display(real)})")
    if stat.S_ISREG(target.st_mode):
        return _regular(path, target)
    return Skip(path, target.st_size, target.st_mtime_ns, "special", f"link to a {kind_of(target.st_mode)}; never opened")


def _unreachable(path: str, exc: OSError) -> Skip:
    if exc.errno == errno.ENAMETOOLONG:
        return Skip(path, 0, 0, "path", "path too long for the system to open")
    return Skip(path, 0, 0, "unreadable", f"cannot read: {exc.strerror or exc}")


def plan_scan(
    on_disk: Iterable[Entry],
    known: dict[str, tuple[int, int, int, int]],
    skipped: dict[str, tuple[int, int, str]],
) -> ScanPlan:
    """Compare the walk with the catalog: locations ``known`` by signature, ``skipped`` by (size, mtime, kind)."""
    plan = ScanPlan()
    seen = set()
    for entry in on_disk:
        seen.add(entry.path)
        if isinstance(entry, Skip):
            if skipped.get(entry.path) == (entry.size, entry.mtime_ns, entry.kind):
                plan.known_bad += 1
            else:
                plan.skips.append(entry)
        elif known.get(entry.path) == entry.signature():
            plan.unchanged += 1
        elif (previous := skipped.get(entry.path)) is not None and previous[:2] == (entry.size, entry.mtime_ns):
            plan.known_bad += 1
        else:
            plan.changed.append(entry)
    # Files under a folder that could not be listed this time are not known to be gone.
    unlisted = [skip.path for skip in plan.skips if skip.kind in UNLISTED_KINDS] + [
        path for path, (_, _, kind) in skipped.items() if path in seen and kind in UNLISTED_KINDS
    ]

    def gone(path: str) -> bool:
        return path not in seen and not any(is_within(path, folder) for folder in unlisted)

    plan.deleted = [path for path in known if gone(path)]
    plan.vanished_skips = [path for path in skipped if gone(path)]
    return plan
