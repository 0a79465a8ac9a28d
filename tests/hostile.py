"""A hostile media library, generated for tests, and what the node must do with each file.

:func:`make_hostile_library` writes, under ``root``, files chosen to break an indexer: real
media with names no sane person would pick (not UTF-8, newlines, 255 bytes, 60 folders deep),
decompression and zip bombs, FIFOs, sockets and devices, symlink loops and links leaving the
library, unreadable files, a 64 GiB sparse "download", paths beyond ``PATH_MAX`` and truncated
or garbage files of every supported format. Next to them it returns, for every path that
matters, an :class:`Expectation`: the outcome a correct node reports for it.

Keys of :attr:`HostileLibrary.files` are exact ``bytes`` paths relative to ``root`` (as
``os.fsencode`` gives them), so names that are not UTF-8 round-trip. Paths not in ``files``
carry no expectation: folders, the entries below a symlinked folder (never followed), the
photo inside the unreadable folder and everything below the first folder beyond ``PATH_MAX``
(the node cannot list those, so it reports nothing for them).

The "unreadable" entries only make sense for a node that does not run as root: root reads
mode-000 files and lists mode-000 folders (pass ``unreadable=False`` there, or ignore them).
The special files need mkfifo/bind (always) and mknod (root only: the devices are left out,
and not recorded, when it is refused).

Everything is deterministic (seeded random bytes), takes well under 10 s and allocates a few
megabytes: bombs are written as repeated, byte-aligned deflate blocks, never by compressing
gigabytes, and the sparse file is a hole. Nothing is written outside ``root`` except the
target of the outside symlinks, in ``root.parent / (root.name + "-outside")``.

Files made unreadable (mode 000) stay so: call :func:`unlock` before deleting the library
when the tests do not run as root. Its deepest folders are beyond ``PATH_MAX``; use
``shutil.rmtree`` (which works with directory file descriptors) to remove it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import random
import shutil
import socket
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from . import media

# How the node must treat a file. "indexed": an item of that modality; otherwise a skip kind:
#   unsupported  not a media file (e.g. random bytes named .bin, a zip)
#   unreadable   permission denied or an I/O error (only meaningful when the daemon is not root)
#   corrupt      claims a media type (magic bytes / extension) but cannot be parsed
#   special      not a regular file: FIFO, Unix socket, character/block device (must never be opened)
#   link         dangling symlink, symlink loop, or a symlink whose target lies outside the library
#   too_large    decompression bomb / absurd dimensions / zip bomb
#   sparse       a huge sparse file (apparent size far above its allocated blocks), e.g. an unfinished download
#   path         path too long to open (beyond PATH_MAX)
OUTCOMES = ("indexed", "unsupported", "unreadable", "corrupt", "special", "link", "too_large", "sparse", "path")
MODALITIES = ("image", "audio", "video", "text")


@dataclass(frozen=True)
class Expectation:
    outcome: str                 # "indexed" or one skip kind above
    modality: str | None = None  # for "indexed": image | audio | video | text
    either: tuple[str, ...] = () # acceptable alternatives, e.g. a truncated MP3 may be "indexed" (tags readable) or "corrupt"

    def accepts(self, outcome: str, modality: str | None = None) -> bool:
        """Whether a node that reported ``outcome`` (and ``modality`` when indexed) behaved correctly."""
        if outcome not in (self.outcome, *self.either):
            return False
        return outcome != "indexed" or self.modality is None or modality == self.modality


@dataclass
class HostileLibrary:
    root: Path
    files: dict[bytes, Expectation] = field(default_factory=dict)  # os.fsencode(path relative to root) -> expectation


def indexed(modality: str, *either: str) -> Expectation:
    return Expectation("indexed", modality, either)


def skipped(outcome: str, *either: str, modality: str | None = None) -> Expectation:
    """A skip kind; ``modality`` is the one to check when an alternative is "indexed"."""
    return Expectation(outcome, modality, either)


# Relative paths with fixed roles (see the cases below).
LOCKED_FILE = b"unreadable/locked.jpg"
LOCKED_FOLDER = b"unreadable/locked-folder"
SELF_LINK_FOLDER = b"links/parent"       # -> ".." : the library inside itself
TOO_LONG_TOP = b"too-long"               # the PATH_MAX chain starts here
SPARSE_FILE = b"sparse/movie.mp4"

_SEED = 20240229
_ZERO_MIB = bytes(1 << 20)


def make_hostile_library(root: Path, *, unreadable: bool = True, sparse_size: int = 64 << 30) -> HostileLibrary:
    """Write the hostile library under ``root`` (created if needed; it must be empty) and return its expectations."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lib = HostileLibrary(root)
    maker = _Maker(lib)
    try:
        maker.good_names()
        maker.ordinary()
        maker.bombs()
        maker.special()
        maker.links()
        if unreadable:
            maker.unreadable()
        maker.sparse(sparse_size)
        maker.too_long()
        maker.broken()
        maker.not_media()
        maker.empty()
    finally:
        shutil.rmtree(maker.staging, ignore_errors=True)
    return lib


def unlock(library: HostileLibrary) -> None:
    """Give the mode-000 file and folder their permissions back (so a non-root user can delete them)."""
    base = os.fsencode(library.root)
    for rel, mode in ((LOCKED_FOLDER, 0o755), (LOCKED_FILE, 0o644)):
        try:
            os.chmod(base + b"/" + rel, mode, follow_symlinks=False)
        except FileNotFoundError:
            pass


class _Maker:
    def __init__(self, lib: HostileLibrary) -> None:
        self.lib = lib
        self.base = os.fsencode(lib.root)
        self.rng = random.Random(_SEED)
        # Real media are generated here (tests/media.py takes str paths), read back as bytes and
        # written under their hostile names; the folder is removed at the end.
        self.staging = lib.root / ".hostile-staging"
        self.staging.mkdir(exist_ok=True)
        self._cache: dict[tuple, bytes] = {}
        self._colour = 0

    # ----------------------------------------------------------------- helpers

    def path(self, rel: bytes) -> bytes:
        return self.base + b"/" + rel

    def write(self, rel: bytes, data: bytes, expectation: Expectation | None = None) -> bytes:
        full = self.path(rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        if expectation is not None:
            self.lib.files[rel] = expectation
        return full

    def expect(self, rel: bytes, expectation: Expectation) -> None:
        self.lib.files[rel] = expectation

    def _generate(self, key: tuple, make) -> bytes:
        if key not in self._cache:
            target = self.staging / f"{len(self._cache)}{key[0]}"
            with _bitexact():
                make(target)
            self._cache[key] = target.read_bytes()
        return self._cache[key]

    def image(self, ext: str, *, big: bool = False) -> bytes:
        """A real image; each call a new colour, so every good image is a distinct item."""
        fmt = {".jpg": "JPEG", ".heic": "HEIF", ".avif": "AVIF"}.get(ext)
        if big:  # 160x160 with a grid: pixel data dominates, so cutting at 40% lands in it
            return self._generate((ext, "big"), lambda p: media.image(p, (40, 120, 200), (160, 160), pattern=True, fmt=fmt))
        self._colour += 1
        colour = ((self._colour * 37) % 256, (self._colour * 91) % 256, (self._colour * 53) % 256)
        return self._generate((ext, colour), lambda p: media.image(p, colour, fmt=fmt, camera=("Hostile", "Cam")))

    def audio(self, ext: str, *, big: bool = False) -> bytes:
        """A tagged tone; ``big``: 3 s, so that tags and padding are a small part of the file."""
        codec = {".aiff": "pcm_s16be"}.get(ext)
        tags = {"title": "Hostile tone"} if ext in (".mp3", ".flac", ".ogg", ".opus", ".m4a") else None
        seconds = 3.0 if big else 1.0
        return self._generate((ext, seconds), lambda p: media.tone(p, seconds=seconds, codec=codec, tags=tags))

    def video(self, ext: str, *, big: bool = False) -> bytes:
        """Two still scenes; ``big``: six scenes of noise, so that frames are most of the file."""
        codec = {".avi": "mpeg4"}.get(ext)
        if big:
            noise = random.Random(_SEED + 1)
            scenes = [(0.5, Image.frombytes("RGB", (64, 48), noise.randbytes(64 * 48 * 3))) for _ in range(6)]
        else:
            scenes = [(0.5, Image.new("RGB", (64, 48), (255, 0, 0))), (0.5, Image.new("RGB", (64, 48), (0, 0, 255)))]
        return self._generate((ext, big), lambda p: media.video(p, scenes, codec=codec))

    def pdf(self) -> bytes:
        return self._generate((".pdf",), lambda p: media.pdf(p, ["Hostile library", "A real text layer."] * 20, title="Hostile"))

    def epub(self) -> bytes:
        chapters = ["First chapter. " * 40, "Second chapter. " * 40]
        return _restamp(self._generate((".epub",), lambda p: media.epub(p, "Hostile book", chapters)))

    def real(self, ext: str, *, big: bool = False) -> tuple[bytes, str]:
        """(bytes, modality) of a real file of that extension."""
        if ext in _IMAGE_EXTS:
            return self.image(ext, big=big), "image"
        if ext in _AUDIO_EXTS:
            return self.audio(ext, big=big), "audio"
        if ext in _VIDEO_EXTS:
            return self.video(ext, big=big), "video"
        if ext == ".pdf":
            return self.pdf(), "text"
        if ext == ".epub":
            return self.epub(), "text"
        return _TEXTS[ext], "text"

    # ------------------------------------------------------------------- cases

    def good_names(self) -> None:
        """Case 1: real media under names that break naive string handling, quoting or globbing."""
        names = [
            (b"names/caf\xe9.jpg", ".jpg"),            # Latin-1 byte: not UTF-8, str paths need surrogateescape
            (b"names/caf\xe9.mp3", ".mp3"),            # the same for each decoder (PyAV takes str paths)
            (b"names/caf\xe9.mp4", ".mp4"),
            (b"names/caf\xe9.pdf", ".pdf"),
            (b"names/caf\xe9.txt", ".txt"),
            (b"names/\xff\xfe invalid.png", ".png"),   # bytes that are never valid UTF-8
            ("names/café-nfc.jpg".encode(), ".jpg"),   # two names that differ only in Unicode
            ("names/cafe\u0301-nfd.jpg".encode(), ".jpg"),  # normalisation (NFC vs NFD)
            (b"names/line\nbreak.jpg", ".jpg"),        # newline: breaks line-based logs and protocols
            (b"names/carriage\rreturn.png", ".png"),
            (b"names/tab\there.png", ".png"),
            (b"names/-rf.jpg", ".jpg"),                # leading dash: read as an option by command lines
            (b"names/--help.mp3", ".mp3"),
            (b"names/  spaced  out  .jpg", ".jpg"),    # leading, doubled and trailing spaces
            (b"names/it's \"quoted\".pdf", ".pdf"),    # both quote kinds
            ("names/🎉 party 📷.jpg".encode(), ".jpg"),  # emoji: 4-byte UTF-8, surrogate pairs in UTF-16
            ("names/🎵 song.mp3".encode(), ".mp3"),
            (b"names/back\\slash.jpg", ".jpg"),        # backslash: an escape, or a separator on Windows
            (b"names/*?[abc].jpg", ".jpg"),            # glob characters: a glob on the name matches others
            (b"names/[a-z]*.mp4", ".mp4"),
            (b"names/$(reboot);`id`|&.jpg", ".jpg"),  # shell metacharacters
            (b"names/%s%n%x.jpg", ".jpg"),             # format-string directives
            ("names/photo\u202egnp.jpg".encode(), ".jpg"),  # right-to-left override
            (b"names/UPPER.JPG", ".jpg"),              # upper-case extension
            (b"names/no-extension", ".jpg"),           # no extension at all: known by its content only
            (b"names/" + b"x" * 251 + b".jpg", ".jpg"),  # exactly 255 bytes, the NAME_MAX limit
            (b"names/" + "é".encode() * 125 + b"x.jpg", ".jpg"),  # 255 bytes but 130 characters
            (b"names/caf\xe9-dossier-\xe9t\xe9/photo.jpg", ".jpg"),  # a folder whose name is not UTF-8
            (b"names/caf\xe9-dossier-\xe9t\xe9/clip.mp4", ".mp4"),
            # 60 nested folders (240 bytes of path): recursion depth, not length
            (b"/".join(b"n%02d" % i for i in range(60)) + b"/deep.jpg", ".jpg"),
        ]
        for rel, ext in names:
            data, modality = self.real(ext)
            self.write(rel, data, indexed(modality))

    def ordinary(self) -> None:
        """Case 1, control group: one plain file of each modality, so failures are not blamed on names."""
        for name in ("photo.jpg", "photo.png", "song.mp3", "song.flac", "song.wav", "clip.mp4",
                     "paper.pdf", "book.epub", "notes.txt", "readme.md", "page.html"):
            data, modality = self.real(os.path.splitext(name)[1])
            self.write(b"ordinary/" + name.encode(), data, indexed(modality))

    def bombs(self) -> None:
        """Case 2: a few KB that declare gigapixels or inflate to gigabytes: memory and time exhaustion."""
        bomb = skipped("too_large", "corrupt")
        # PNG, 40000x40000 1-bit pixels: 200 MB of zero rows, complete and valid, in ~200 KB of deflate.
        width = height = 40000
        raw = height * (1 + width // 8)
        ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
        idat = b"\x78\xda" + _deflate_zeros(raw) + struct.pack(">I", (raw % 65521) << 16 | 1)  # adler32 of zeros
        self.write(b"bombs/pixels-40000x40000.png",
                   b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""), bomb)
        # GIF, 65535x65535 screen and frame; the LZW data is just "clear, end".
        gif = (b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
               + b"\x2c" + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x01\x2c\x00" + b"\x3b")
        self.write(b"bombs/screen-65535x65535.gif", gif, bomb)
        # BMP, 65535x65535 at 1 bit per pixel: a 512 MB bitmap declared, 16 bytes present.
        dib = struct.pack("<IiiHHIIiiII", 40, 65535, 65535, 1, 1, 0, 0, 2835, 2835, 2, 0)
        bmp = dib + b"\x00\x00\x00\x00\xff\xff\xff\x00" + b"\x55" * 16
        self.write(b"bombs/bitmap-65535x65535.bmp", b"BM" + struct.pack("<IHHI", 14 + len(bmp), 0, 0, 14 + 48) + bmp, bomb)
        # JPEG, a real one whose SOF0 claims 65500x65500.
        jpeg = bytearray(self.image(".jpg"))
        sof = jpeg.find(b"\xff\xc0")
        struct.pack_into(">HH", jpeg, sof + 5, 65500, 65500)
        self.write(b"bombs/frame-65500x65500.jpg", bytes(jpeg), bomb)
        # EPUB whose only chapter inflates to 1 GiB of spaces (a valid zip, CRC included): ~1 MB on disk.
        self.write(b"bombs/zip-bomb.epub", _epub_bomb(1024), bomb)
        # PDF whose page content stream inflates to 256 MiB (extra: the same attack on the PDF parser).
        self.write(b"bombs/stream-bomb.pdf", _pdf_bomb(256), bomb)
        # AVI whose uncompressed video stream declares 16000x16000 (256 Mpx, ~384 MB a frame);
        # the frames themselves are 16x16. FFmpeg refuses larger sizes outright.
        tiny = [(0.2, Image.new("RGB", (16, 16)))]
        avi = bytearray(self._generate((".avi", "raw"), lambda p: media.video(p, tiny, codec="rawvideo")))
        avih, strf = avi.find(b"avih"), avi.find(b"strf")
        struct.pack_into("<II", avi, avih + 8 + 32, 16000, 16000)
        struct.pack_into("<ii", avi, strf + 8 + 4, 16000, 16000)
        struct.pack_into("<I", avi, strf + 8 + 20, 16000 * 16000 * 3 // 2)
        self.write(b"bombs/frame-16000x16000.avi", bytes(avi), bomb)

    def special(self) -> None:
        """Case 3: not regular files. Opening a FIFO blocks forever, a device streams forever or
        touches hardware; a socket cannot be opened. None may be opened, only ``lstat``-ed."""
        made = []
        self._make(b"special/stream.mp4", lambda p: os.mkfifo(p, 0o644), made)  # blocks readers until a writer comes
        self._make(b"special/socket.flac", self._socket, made)
        # Devices need CAP_MKNOD (root); without it they are left out. /dev/null's numbers, and /dev/zero's:
        # an endless stream of zeros that a hash or a decoder would read until memory runs out.
        self._make(b"special/device.jpg", lambda p: os.mknod(p, stat.S_IFCHR | 0o644, os.makedev(1, 3)), made)
        self._make(b"special/zero.mp4", lambda p: os.mknod(p, stat.S_IFCHR | 0o644, os.makedev(1, 5)), made)
        for rel in made:
            self.expect(rel, skipped("special"))

    def _make(self, rel: bytes, make, made: list[bytes]) -> None:
        full = self.path(rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        try:
            make(full)
        except (PermissionError, OSError):
            return
        made.append(rel)

    @staticmethod
    def _socket(full: bytes) -> None:
        # sun_path holds at most 107 bytes: bind through /proc/self/fd/<folder fd> when the path is longer.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if len(full) < 100:
                sock.bind(full)
            else:
                folder = os.open(os.path.dirname(full), os.O_RDONLY | os.O_DIRECTORY)
                try:
                    sock.bind(b"/proc/self/fd/%d/" % folder + os.path.basename(full))
                finally:
                    os.close(folder)
        finally:
            sock.close()  # the socket file stays, with nobody listening

    def links(self) -> None:
        """Case 4: symlinks. Following them blindly loops, fails, escapes the library (reads what the
        user never shared, e.g. /etc/passwd) or indexes the whole library again under itself."""
        link = skipped("link")
        outside = self.lib.root.parent / (self.lib.root.name + "-outside")
        outside.mkdir(exist_ok=True)
        secret = outside / "secret.jpg"
        secret.write_bytes(self.image(".jpg"))
        os.makedirs(self.path(b"links"), exist_ok=True)

        def symlink(rel: bytes, target: bytes | str, expectation: Expectation) -> None:
            os.symlink(os.fsencode(target), self.path(rel))
            self.expect(rel, expectation)

        symlink(b"links/a.jpg", b"b.jpg", link)  # a loop: ELOOP on open and stat
        symlink(b"links/b.jpg", b"a.jpg", link)
        symlink(b"links/self.jpg", b"self.jpg", link)  # a loop of one
        symlink(b"links/dangling.jpg", b"does-not-exist.jpg", link)
        symlink(b"links/outside-absolute.jpg", str(secret), link)  # a real image, outside the library
        symlink(b"links/outside-relative.jpg", b"../../" + os.fsencode(outside.name) + b"/secret.jpg", link)
        symlink(b"links/outside-folder", str(outside), link)  # a folder outside: not entered
        symlink(b"links/passwd.txt", b"/etc/passwd", link)  # readable text outside: must not leak into search
        # Folder link to its own parent (the library root): not followed, nothing listed under it.
        symlink(SELF_LINK_FOLDER, b"..", link)
        # Links to a good image inside the library: the image is indexed (through the link, or at
        # its own path, which the library also holds).
        symlink(b"links/inside.jpg", b"../ordinary/photo.jpg", indexed("image"))
        symlink(b"links/chain.jpg", b"inside.jpg", indexed("image"))
        # Links to special files inside the library: following them reaches a FIFO or a device.
        if b"special/stream.mp4" in self.lib.files:
            symlink(b"links/to-fifo.mp4", b"../special/stream.mp4", skipped("special", "link"))
        if b"special/zero.mp4" in self.lib.files:
            symlink(b"links/to-zero.mp4", b"../special/zero.mp4", skipped("special", "link"))

    def unreadable(self) -> None:
        """Case 5: permission denied (as root everything stays readable: only meaningful for a non-root daemon)."""
        full = self.write(LOCKED_FILE, self.image(".jpg"), skipped("unreadable"))
        os.chmod(full, 0)
        # A folder that cannot be listed: its photo has no expectation, the folder itself is reported.
        self.write(LOCKED_FOLDER + b"/photo.jpg", self.image(".jpg"))
        os.chmod(self.path(LOCKED_FOLDER), 0)
        self.expect(LOCKED_FOLDER, skipped("unreadable"))

    def sparse(self, size: int) -> None:
        """Case 6: a download in progress, as torrent clients preallocate it: a real, complete MP4
        at the start (ftyp, mdat, moov: it opens and demuxes fine) and then a hole up to ``size``
        (64 GiB) with nothing allocated. Hashing or copying it reads 64 GiB of zeros."""
        full = self.write(SPARSE_FILE, self.video(".mp4"), skipped("sparse"))
        os.truncate(full, max(size, os.path.getsize(full)))

    def too_long(self) -> None:
        """Case 7: a chain of 20 folders with 240-byte names (4.8 KB of path) below ``too-long/``,
        beyond PATH_MAX (4096), made with directory file descriptors since no path reaches its
        bottom, where a real image lies.

        The recorded key is the first folder of the chain whose absolute path the system refuses
        (ENAMETOOLONG, found by trying ``lstat`` on each): the entry a walk reaches (it is listed
        in its parent) but cannot open or list. Which folder that is depends on the length of
        ``root``. Nothing below it (deeper folders, the image) carries an expectation.
        """
        names = [b"%02d-" % i + b"L" * 237 for i in range(20)]
        os.makedirs(self.path(TOO_LONG_TOP), exist_ok=True)
        fd = os.open(self.path(TOO_LONG_TOP), os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in names:
                os.mkdir(name, dir_fd=fd)
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = child
            out = os.open(b"photo.jpg", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=fd)
            try:
                os.write(out, self.image(".jpg"))
            finally:
                os.close(out)
        finally:
            os.close(fd)
        absolute = os.fsencode(os.path.abspath(self.lib.root))
        chain = [TOO_LONG_TOP]
        for name in [*names, b"photo.jpg"]:
            chain.append(chain[-1] + b"/" + name)
        for rel in chain:
            try:
                os.lstat(absolute + b"/" + rel)
            except OSError as exc:
                if exc.errno == errno.ENAMETOOLONG:
                    self.expect(rel, skipped("path"))
                    return
                raise
        raise AssertionError("the PATH_MAX chain is reachable by path")  # PATH_MAX above 4.8 KB?

    def broken(self) -> None:
        """Case 8: every supported format (a) cut at 40% of its bytes, as a failed copy leaves it, and
        (b) its magic bytes followed by random bytes, as a disk error or a disguised file looks.
        The expectations were checked against Pillow, pillow-heif, mutagen, PyAV and pypdf."""
        for ext, (cut, garbage) in _BROKEN.items():
            data, modality = self.real(ext, big=True)
            stem = ext[1:]
            self.write(b"truncated/%s.%s" % (stem.encode(), stem.encode()), data[: len(data) * 2 // 5],
                       _expectation(cut, modality))
            head = data[: _header_length(ext, data)]
            self.write(b"garbage/%s.%s" % (stem.encode(), stem.encode()), head + self.rng.randbytes(4096),
                       _expectation(garbage, modality))
        # Text: a cut in the middle of a multi-byte character, an unclosed fence, unclosed tags: still text.
        for ext in (".txt", ".md", ".html"):
            data = _TEXTS[ext]
            cut = data[: data.rindex("é".encode()) + 1]  # ends with half of "é"
            self.write(b"truncated/text%s" % ext.encode(), cut, indexed("text"))
            # Binary garbage (NUL bytes) under a text extension: not text at all.
            self.write(b"garbage/text%s" % ext.encode(), b"\x00\x01\x02" + self.rng.randbytes(4096), skipped("unsupported"))
        # Latin-1 text (not UTF-8): text to a lenient reader, binary to a strict one.
        self.write(b"garbage/latin1.txt", "Crème brûlée à la café, déjà vu.\n".encode("latin-1") * 20,
                   indexed("text", "unsupported"))

    def not_media(self) -> None:
        """Unsupported files, and files whose name and content disagree (the content decides)."""
        self.write(b"other/random.bin", self.rng.randbytes(4096), skipped("unsupported"))
        self.write(b"other/archive.zip", _zip([("readme.txt", b"not a book " * 50)]), skipped("unsupported"))
        self.write(b"other/program.mp4", b"\x7fELF\x02\x01\x01\x00" + bytes(8) + self.rng.randbytes(4080),
                   skipped("unsupported", "corrupt"))  # an executable wearing a video's name
        # Random bytes named .jpg: the extension claims an image, no magic agrees.
        self.write(b"other/random.jpg", b"\x13\x37" + self.rng.randbytes(4094), skipped("corrupt", "unsupported"))
        self.write(b"other/photo.txt", self.image(".jpg"), indexed("image"))  # a JPEG named .txt
        self.write(b"other/image.mp3", self.image(".png"), indexed("image"))  # a PNG named .mp3

    def empty(self) -> None:
        """Case 9: zero bytes. mmap of an empty file fails; 'no content' must not mean 'text'."""
        self.write(b"empty/empty.jpg", b"", skipped("corrupt"))
        self.write(b"empty/empty.txt", b"", indexed("text", "corrupt"))
        # Blank text under a Latin-1 name: its title falls back to the file name, which is not UTF-8.
        self.write(b"empty/blank-caf\xe9.txt", b"  \n\n", indexed("text", "corrupt"))


# ---------------------------------------------------------------- formats and tables

_IMAGE_EXTS = (".jpg", ".png", ".webp", ".gif", ".tiff", ".bmp", ".heic", ".avif")
_AUDIO_EXTS = (".mp3", ".flac", ".ogg", ".wav", ".m4a", ".opus", ".aiff")
_VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".mov", ".avi")

_TEXTS = {
    ".txt": "Notes from the hostile library.\nCafé, naïve, déjà vu: UTF-8 throughout.\n".encode() * 8,
    ".md": "# Hostile notes\n\nSome *Markdown* with a fence:\n\n```python\nprint('café')\n```\n\nÉpilogue é\n".encode() * 4,
    ".html": ("<!doctype html><html><head><title>Hostile page</title></head><body>"
              + "<p>Paragraph with café and <b>bold</b> text.</p>" * 20 + "<p>Fin é</p></body></html>").encode(),
}

# Expected outcome per format, for (truncated at 40%, magic + random bytes). "corrupt": neither
# metadata nor content can be read. "either": the header and part of the content survive and
# the format's own decoder still reads them, so indexing what is there is as correct as
# refusing the file. Random bytes after the magic are corrupt for every format.
#   JPEG, GIF, TIFF, BMP  header and EXIF intact, pixels cut: Pillow opens them; decoding
#           raises "image file is truncated" unless told to keep the top part, as viewers do.
#   PNG, WebP, AVIF  Pillow refuses them at open or verify (chunk CRCs, container).
#   HEIC    the header survives but the one coded picture is cut: nothing can be decoded.
#   MP3     frames are self-synchronising: a cut MP3 plays up to the cut.
#   FLAC    STREAMINFO and whole frames up to the cut (only the last packet is broken).
#   Ogg/Opus  pages are independent: a cut Ogg plays up to the cut.
#   WAV, AIFF  the header is whole, the sample chunk shorter than declared: plays up to the cut.
#   M4A, MP4, MOV  PyAV writes the moov index at the end: a cut file has no index, no stream.
#   MKV, WebM  clusters follow the header: a cut file plays up to the cut.
#   AVI     the stream headers are at the start, the idx1 index at the end: plays up to the cut.
#   PDF     the page content and the xref table are gone: no text layer.
#   EPUB    a zip is read from its central directory, at the end.
_EITHER = "either"
_BROKEN: dict[str, tuple[str, str]] = {
    ".jpg": (_EITHER, "corrupt"),
    ".png": ("corrupt", "corrupt"),
    ".webp": ("corrupt", "corrupt"),
    ".gif": (_EITHER, "corrupt"),
    ".tiff": (_EITHER, "corrupt"),
    ".bmp": (_EITHER, "corrupt"),
    ".heic": ("corrupt", "corrupt"),
    ".avif": ("corrupt", "corrupt"),
    ".mp3": (_EITHER, "corrupt"),
    ".flac": (_EITHER, "corrupt"),
    ".ogg": (_EITHER, "corrupt"),
    ".opus": (_EITHER, "corrupt"),
    ".wav": (_EITHER, "corrupt"),
    ".aiff": (_EITHER, "corrupt"),
    ".m4a": ("corrupt", "corrupt"),
    ".mp4": ("corrupt", "corrupt"),
    ".mov": ("corrupt", "corrupt"),
    ".mkv": (_EITHER, "corrupt"),
    ".webm": (_EITHER, "corrupt"),
    ".avi": (_EITHER, "corrupt"),
    ".pdf": ("corrupt", "corrupt"),
    ".epub": ("corrupt", "corrupt"),
}


def _expectation(kind: str, modality: str) -> Expectation:
    if kind == _EITHER:
        return skipped("corrupt", "indexed", modality=modality)
    return skipped(kind)


def _header_length(ext: str, data: bytes) -> int:
    """How many leading bytes of a real file to keep: the magic bytes, and only so much of the
    header that what follows cannot be valid (e.g. a whole WAV header would make noise valid audio)."""
    if ext in (".heic", ".avif", ".m4a", ".mp4", ".mov"):
        return struct.unpack(">I", data[:4])[0]  # the whole ftyp box
    if ext in (".mkv", ".webm"):
        size_byte = data[4]  # the EBML header element: 4-byte id, a variable-length size, the body
        length = 8 - size_byte.bit_length() + 1
        size = int.from_bytes(data[4 : 4 + length], "big") & ((1 << (7 * length)) - 1)
        return 4 + length + size
    if ext == ".ogg" or ext == ".opus":
        return 27 + 1 + 19  # first page header, one segment, and the OpusHead packet (so it stays Ogg)
    return {".jpg": 4, ".png": 8, ".webp": 16, ".gif": 6, ".tiff": 8, ".bmp": 14, ".mp3": 10, ".flac": 4,
            ".wav": 12, ".aiff": 12, ".avi": 12, ".pdf": 9, ".epub": 58}[ext]


@contextlib.contextmanager
def _bitexact():
    """Make FFmpeg's muxers deterministic while tests/media.py writes with PyAV: without the
    bitexact flag, Ogg serial numbers and Matroska segment and track UIDs are random."""
    import av

    original = av.open

    def bitexact_open(file, mode="r", *args, **kwargs):
        if mode == "w":
            kwargs["options"] = {**(kwargs.get("options") or {}), "fflags": "+bitexact"}
        return original(file, mode, *args, **kwargs)

    av.open = bitexact_open
    try:
        yield
    finally:
        av.open = original


def _restamp(archive: bytes) -> bytes:
    """The same zip with a fixed date on every member (zipfile stamps them with the current time)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=(2024, 1, 1, 0, 0, 0))
            fixed.compress_type = info.compress_type
            target.writestr(fixed, source.read(info))
    return out.getvalue()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _deflate_blocks(parts: list[tuple[bytes, int]]) -> bytes:
    """Raw deflate of the concatenation of ``chunk * count`` for each (chunk, count), compressing
    each distinct chunk once: a full flush resets the compressor, so the block it emits for a
    chunk is the same every time and can be repeated as is."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = []
    for chunk, count in parts:
        if count:
            out.append((compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)) * count)
    out.append(compressor.flush(zlib.Z_FINISH))
    return b"".join(out)


def _deflate_zeros(size: int) -> bytes:
    whole, rest = divmod(size, len(_ZERO_MIB))
    return _deflate_blocks([(_ZERO_MIB, whole), (bytes(rest), 1 if rest else 0)])


def _zip(entries: list[tuple[str, bytes]] | None = None, *, raw: list[tuple[str, int, int, bytes, int]] = ()) -> bytes:
    """A zip archive. ``entries`` are (name, data), stored for "mimetype" and deflated otherwise;
    ``raw`` entries are (name, method, crc32, compressed bytes, uncompressed size), written as given."""
    members = []
    for name, data in entries or []:
        if name == "mimetype":
            members.append((name, 0, zlib.crc32(data), data, len(data)))
        else:
            members.append((name, 8, zlib.crc32(data), _deflate_blocks([(data, 1)]), len(data)))
    members.extend(raw)
    out, central = bytearray(), bytearray()
    dos_time, dos_date = 0, (2024 - 1980) << 9 | 1 << 5 | 1
    for name, method, crc, body, size in members:
        encoded = name.encode()
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, dos_time, dos_date, crc, len(body), size, len(encoded), 0)
        out += encoded + body
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, dos_time, dos_date, crc, len(body),
                               size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    return bytes(out + central + end)


def _epub_bomb(mebibytes: int) -> bytes:
    head = b"<html><head><title>Bomb</title></head><body><p>"
    tail = b"</p></body></html>"
    fill = b" " * len(_ZERO_MIB)
    crc = zlib.crc32(head)
    for _ in range(mebibytes):
        crc = zlib.crc32(fill, crc)
    crc = zlib.crc32(tail, crc)
    chapter = ("OEBPS/c0.xhtml", 8, crc, _deflate_blocks([(head, 1), (fill, mebibytes), (tail, 1)]),
               len(head) + mebibytes * len(fill) + len(tail))
    container = ('<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
                 '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
                 "</rootfiles></container>")
    opf = ('<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
           '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Zip bomb</dc:title></metadata>'
           '<manifest><item id="c0" href="c0.xhtml" media-type="application/xhtml+xml"/></manifest>'
           '<spine><itemref idref="c0"/></spine></package>')
    return _zip([("mimetype", b"application/epub+zip"), ("META-INF/container.xml", container.encode()),
                 ("OEBPS/content.opf", opf.encode())], raw=[chapter])


def _pdf_bomb(mebibytes: int) -> bytes:
    head = b"BT /F1 11 Tf 50 780 Td (Stream bomb) Tj ET\n"
    fill = b" " * len(_ZERO_MIB)
    adler = zlib.adler32(head)
    for _ in range(mebibytes):
        adler = zlib.adler32(fill, adler)
    stream = b"\x78\xda" + _deflate_blocks([(head, 1), (fill, mebibytes)]) + struct.pack(">I", adler)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
