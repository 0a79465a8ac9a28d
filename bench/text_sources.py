"""Real English text of many kinds that exists offline, for building and judging ordering adapters.

The shipped text adapter is the network's universal ordering: it must hold on every user's
library, so it is trained on a mix of kinds of text and judged on kinds it never saw.
Each source yields distinct units of 4-60 words (sentences, glosses, quotations, verses):

=============  ===============================================  ==============================
source         what                                             where from
=============  ===============================================  ==============================
wordnet        dictionary glosses (modern definitions)          Debian ``wordnet-base``
gcide          dictionary definitions (Webster 1913)            Debian ``dict-gcide``
fortunes       quotations, jokes, aphorisms                     Debian ``fortunes``
manpages       manual pages' DESCRIPTION prose                  this machine's /usr/share/man
pydocs         documentation prose (tutorial, library, howto)   Debian ``python3.11-doc``
docstrings     docstrings of the stdlib and site-packages       this Python installation
kjv            book-length prose (the King James Bible)         Debian ``bible-kjv``(-text)
=============  ===============================================  ==============================

Kept aside, never trained or tuned on (``TRAINS`` is False): ``debian``, the long
descriptions of Debian's packages (``Translation-en`` of bookworm main), the kind of text a
software share is described by. Its one-line summaries against the long texts are the
task-level retrieval set (:func:`debian_summaries`).

Debian packages are fetched with ``apt-get download`` and unpacked (``dpkg-deb -x``) under
the benchmark cache, never installed; nothing here runs in the test suite.
"""

from __future__ import annotations

import ast
import html.parser
import lzma
import os
import random
import re
import subprocess
import sys
import sysconfig
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MIN_WORDS, MAX_WORDS = 4, 60
TRANSLATIONS = "http://deb.debian.org/debian/dists/bookworm/main/i18n/Translation-en.xz"


def cache_folder() -> Path:
    folder = Path(os.environ.get("PEERLIGHT_BENCH_CACHE", Path.home() / ".cache" / "peerlight-bench")) / "sources"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def unpacked(*packages: str) -> Path:
    """A folder holding the packages' files (downloaded and unpacked once, kept in the cache)."""
    root = cache_folder() / "debian"
    for package in packages:
        marker = root / f".{package}"
        if marker.exists():
            continue
        debs = cache_folder() / "debs"
        debs.mkdir(exist_ok=True)
        subprocess.run(["apt-get", "download", package], cwd=debs, check=True, capture_output=True)
        (deb,) = sorted(debs.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        marker.touch()
    return root


def sentences(text: str) -> Iterator[str]:
    """The text's sentences (whitespace normalised)."""
    for paragraph in re.split(r"\n\s*\n", text):
        yield from re.split(r"(?<=[.!?])\s+(?=[A-Z\"'(])", " ".join(paragraph.split()))


_WORD = re.compile(r"^[(\"']?[A-Za-z][a-z'-]*[.,;:!?)\"']*$")


def prose_like(text: str) -> bool:
    """Mostly words: code, tables, paths and lists of names are left out of every source alike."""
    tokens = text.split()
    return sum(bool(_WORD.match(t)) for t in tokens) >= max(MIN_WORDS, 0.7 * len(tokens))


def _units(candidates: Iterable[str], seed: int = 0) -> list[str]:
    """Distinct prose units of MIN_WORDS..MAX_WORDS words, shuffled reproducibly."""
    seen: set[str] = set()
    kept = []
    for text in candidates:
        text = " ".join(text.split())
        if MIN_WORDS <= len(text.split()) <= MAX_WORDS and text not in seen and prose_like(text):
            seen.add(text)
            kept.append(text)
    random.Random(seed).shuffle(kept)
    return kept


def wordnet() -> list[str]:
    root = unpacked("wordnet-base") / "usr/share/wordnet"

    def glosses() -> Iterator[str]:
        for part in ("noun", "verb", "adj", "adv"):
            for line in (root / f"data.{part}").read_text(encoding="latin-1").splitlines():
                if not line.startswith("  ") and " | " in line:
                    yield line.split(" | ", 1)[1].strip()

    return _units(glosses())


def gcide() -> list[str]:
    """Definitions from Webster 1913: the prose of each entry, markup and citations removed."""
    data = unpacked("dict-gcide") / "usr/share/dictd/gcide.dict.dz"
    text = zlib.decompress(data.read_bytes(), zlib.MAX_WBITS | 16).decode("utf-8", errors="replace")

    def definitions() -> Iterator[str]:
        for block in re.split(r"\n\s*\n", text):
            lines = [line.strip() for line in block.splitlines()]
            if not lines or "\\" in lines[0] or lines[0].startswith(("Syn:", "Note:")):
                continue  # a headword line (Word \Pro*nun"ci*a*tion\, n.) or a synonym list
            prose = " ".join(line for line in lines if not line.startswith("["))
            prose = re.sub(r"\{|\}|\[[^\]]*\]|--\s?[A-Z][\w.& ]*\.?$", "", prose)
            prose = re.sub(r"^\d+\.\s*(\([^)]*\)\s*)*", "", prose).strip()
            if prose and prose[0].isupper():
                yield from sentences(prose)

    return _units(definitions())


def fortunes() -> list[str]:
    root = unpacked("fortunes", "fortunes-min") / "usr/share/games/fortunes"
    quotes = []
    for path in sorted(root.iterdir()):
        if path.suffix or not path.is_file() or path.name in {"off"}:
            continue  # .dat indexes, .u8 links
        for quote in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            body = re.sub(r"\n\s*--.*$", "", quote.strip(), flags=re.S)  # the attribution line
            if not re.search(r"[|_/\\]{3}|\t", body):  # ASCII art and tables
                quotes.append(body)
    return _units(quotes)


def manpages() -> list[str]:
    from retrieval_sets import manpage_pairs

    return _units(s for _, _, text in manpage_pairs() for s in sentences(text))


class _Paragraphs(html.parser.HTMLParser):
    """The text of <p> elements (inline code kept: it is part of the sentence)."""

    def __init__(self) -> None:
        super().__init__()
        self.paragraphs: list[str] = []
        self._depth = 0
        self._parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "p":
            self._depth += 1
            self._parts = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "p" and self._depth:
            self._depth -= 1
            self.paragraphs.append("".join(self._parts))

    def handle_data(self, data: str) -> None:
        if self._depth:
            self._parts.append(data)


def pydocs() -> list[str]:
    root = unpacked("python3.11-doc") / "usr/share/doc/python3.11/html"
    texts = []
    for path in sorted(root.rglob("*.html")):
        if "whatsnew" in path.parts or "_static" in path.parts:
            continue
        parser = _Paragraphs()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        texts += [s for p in parser.paragraphs for s in sentences(p) if "`" not in s and ">>>" not in s]
    return _units(texts)


def docstring_sentences() -> list[str]:
    """Distinct 5-60 word sentences from installed docstrings (stdlib, then site-packages; no tests)."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    files = [f for root in roots for f in sorted(root.rglob("*.py"))]
    texts, seen = [], set()
    for file in files:
        if {"test", "tests", "idlelib"} & set(file.parts) or ("site-packages" in file.parts and file.is_relative_to(roots[0])):
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
                continue
            doc = ast.get_docstring(node)
            for paragraph in re.split(r"\n\s*\n", doc or ""):
                for sentence in re.split(r"(?<=[.!?])\s+", " ".join(paragraph.split())):
                    if 5 <= len(sentence.split()) <= 60 and sentence not in seen and not sentence.startswith(">>>"):
                        seen.add(sentence)
                        texts.append(sentence)
    random.Random(0).shuffle(texts)
    return texts


def docstrings() -> list[str]:
    return _units(docstring_sentences())


def kjv() -> list[str]:
    root = unpacked("bible-kjv", "bible-kjv-text")
    listing = subprocess.run(
        [str(root / "usr/bin/bible"), "-p", str(root / "usr/lib"), "Gen1:1-Rev22:21"], check=True, capture_output=True, text=True
    ).stdout
    verses = re.split(r"\n\s*\d+ ", listing)  # "  12 And God said ..."
    chapter = re.compile(r"[\w ]+ \d+")  # a heading between two verses: "Song of Solomon 2"
    return _units(s for verse in verses for s in sentences(verse) if not chapter.fullmatch(s.strip()))


def _debian_descriptions() -> list[tuple[str, str, str]]:
    """(package, one-line summary, long description) of Debian bookworm main."""
    path = cache_folder() / "Translation-en.xz"
    if not path.exists():
        with urllib.request.urlopen(TRANSLATIONS, timeout=60) as reply:
            path.write_bytes(reply.read())
    entries = []
    for record in lzma.decompress(path.read_bytes()).decode("utf-8", errors="replace").split("\n\n"):
        package = re.search(r"^Package: (.+)$", record, re.M)
        described = re.search(r"^Description-en: (.*)\n((?: .*\n?)*)", record, re.M)
        if not package or not described:
            continue
        body = "\n".join(line[1:] for line in described.group(2).splitlines())
        body = "\n\n".join(" ".join(p.split()) for p in body.split("\n.\n"))
        entries.append((package.group(1), described.group(1).strip(), body.replace("\n.", "")))
    return entries


def debian() -> list[str]:
    return _units(s for _, _, body in _debian_descriptions() for s in sentences(body))


def debian_summaries(count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """A retrieval task whose queries and targets differ in kind: each package's one-line summary
    (query) and its long description (target), for ``count`` packages whose summary is not
    just the first words of their description and which no other sampled package shares."""
    entries = [(s, b) for _, s, b in _debian_descriptions() if 8 <= len(b.split()) <= 160 and len(s.split()) >= 3]
    summaries = {}
    for summary, body in entries:
        summaries.setdefault(summary.lower(), []).append(body)
    unique = [(s, b) for s, b in entries if len(summaries[s.lower()]) == 1 and not b.lower().startswith(s.lower()[:30])]
    bodies: dict[str, int] = {}
    for _, b in unique:
        bodies[b] = bodies.get(b, 0) + 1
    unique = [(s, b) for s, b in unique if bodies[b] == 1]  # templated descriptions shared by several packages
    random.Random(seed).shuffle(unique)
    chosen = unique[:count]
    return [s for s, _ in chosen], [b for _, b in chosen]


@dataclass(frozen=True)
class Source:
    name: str
    kind: str
    texts: Callable[[], list[str]]
    trains: bool = True  # False: kept aside to judge the ordering, never trained or tuned on


SOURCES = (
    Source("wordnet", "dictionary glosses (WordNet 3.0)", wordnet),
    Source("gcide", "dictionary definitions (GCIDE, Webster 1913)", gcide),
    Source("fortunes", "quotations and aphorisms (fortunes)", fortunes),
    Source("manpages", "manual pages' DESCRIPTION prose", manpages),
    Source("pydocs", "documentation prose (the Python 3.11 documentation)", pydocs),
    Source("docstrings", "docstrings of the stdlib and site-packages", docstrings),
    Source("kjv", "book-length prose (the King James Bible)", kjv),
    Source("debian", "Debian package descriptions (bookworm main)", debian, trains=False),
)
BY_NAME = {source.name: source for source in SOURCES}


if __name__ == "__main__":  # how many units each source has, and a sample of each
    for source in SOURCES:
        texts = source.texts()
        print(f"{source.name:11} {len(texts):7,}  {texts[0][:100]!r}")
        for text in texts[1:4]:
            print(f"{'':20} {text[:100]!r}")
