"""Plain text and a title from text documents: txt, Markdown, HTML, PDF (text layer), EPUB."""

from __future__ import annotations

import posixpath
import re
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

MAX_TEXT_CHARS = 2_000_000  # a document larger than this is indexed by its first 2 M characters
MAX_TEXT_BYTES = MAX_TEXT_CHARS * 4  # what is read of a plain-text file (UTF-8: at most 4 bytes a character)
MAX_EPUB_BYTES = 64 << 20  # inflated bytes read from an EPUB: a zip "bomb" inflates to gigabytes


class TextExtractionError(Exception):
    """The document cannot be read as text (corrupt, encrypted, no text layer, or a bomb: ``kind`` too_large)."""

    def __init__(self, message: str, kind: str = "corrupt") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Document:
    title: str
    text: str


def extract_document(path: Path, mime: str) -> Document:
    try:
        if mime == "application/pdf":
            return _pdf(path)
        if mime == "application/epub+zip":
            return _epub(path)
        with open(path, "rb") as handle:
            raw = handle.read(MAX_TEXT_BYTES).decode("utf-8", errors="replace")
        if mime == "text/html":
            title, text = html_to_text(raw)
            return Document(title or _first_line(text, path), text[:MAX_TEXT_CHARS])
        if mime == "text/markdown":
            heading = re.search(r"^\s{0,3}#\s+(.+?)\s*#*\s*$", raw, re.MULTILINE)
            return Document(heading.group(1) if heading else _first_line(raw, path), raw[:MAX_TEXT_CHARS])
        return Document(_first_line(raw, path), raw[:MAX_TEXT_CHARS])
    except TextExtractionError:
        raise
    except Exception as exc:  # parsers raise all kinds of errors on corrupt input
        raise TextExtractionError(f"{type(exc).__name__}: {exc}") from None


def _first_line(text: str, path: Path) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:120]
    return path.stem


def _pdf(path: Path) -> Document:
    from pypdf import PdfReader

    reader = PdfReader(path)
    if reader.is_encrypted:
        raise TextExtractionError("the PDF is encrypted")
    pages, total = [], 0
    for page in reader.pages:
        text = page.extract_text() or ""
        pages.append(text)
        total += len(text)
        if total > MAX_TEXT_CHARS:
            break
    text = "\n\n".join(pages)
    if not text.strip():
        raise TextExtractionError("the PDF has no text layer")
    meta_title = reader.metadata.title if reader.metadata else None
    return Document(meta_title or _first_line(text, path), text[:MAX_TEXT_CHARS])


def _epub(path: Path) -> Document:
    with zipfile.ZipFile(path) as book:
        budget = [MAX_EPUB_BYTES]

        def read(name: str) -> bytes:
            # The sizes in the zip's directory can lie; the read itself is bounded too.
            info = book.getinfo(name)
            if info.file_size > budget[0]:
                raise TextExtractionError(f"{name} inflates to {info.file_size:,} bytes (a zip bomb?)", "too_large")
            with book.open(info) as member:
                data = member.read(budget[0] + 1)
            if len(data) > budget[0]:
                raise TextExtractionError(f"{name} inflates past {MAX_EPUB_BYTES:,} bytes (a zip bomb?)", "too_large")
            budget[0] -= len(data)
            return data

        container = ElementTree.fromstring(read("META-INF/container.xml"))
        rootfile = next(el for el in container.iter() if el.tag.endswith("rootfile")).attrib["full-path"]
        opf = ElementTree.fromstring(read(rootfile))
        base = posixpath.dirname(rootfile)
        manifest = {
            el.attrib["id"]: posixpath.normpath(posixpath.join(base, el.attrib["href"]))
            for el in opf.iter()
            if el.tag.endswith("item") and "id" in el.attrib and "href" in el.attrib
        }
        spine = [manifest[el.attrib["idref"]] for el in opf.iter() if el.tag.endswith("itemref")]
        title_el = next((el for el in opf.iter() if el.tag.endswith("title")), None)
        parts, total = [], 0
        for name in spine:
            _, text = html_to_text(read(name).decode("utf-8", errors="replace"))
            parts.append(text)
            total += len(text)
            if total > MAX_TEXT_CHARS:
                break
    text = "\n\n".join(parts)
    title = title_el.text.strip() if title_el is not None and title_el.text else _first_line(text, path)
    return Document(title, text[:MAX_TEXT_CHARS])


class _HtmlText(HTMLParser):
    _SKIP = {"script", "style", "head", "noscript", "template"}
    _BLOCK = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skipping = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag == "title":
            self._in_title = True
        if tag in self._SKIP:
            self._skipping += 1
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """(title, visible text) of an HTML document."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    text = re.sub(r"[ \t]+", " ", "".join(parser.parts))
    text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
    return parser.title.strip(), text
