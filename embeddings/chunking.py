"""Splitting documents into overlapping chunks, and finding the passage that matches a query.

Chunks are character spans of the original text, so a search result can point at (and
highlight) the exact place in the document. Overlap keeps a sentence that straddles a
boundary whole in at least one chunk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n\s*\n")


@dataclass(frozen=True)
class Span:
    start: int
    end: int


def chunk_text(text: str, words_per_chunk: int, overlap_words: int) -> list[Span]:
    """Spans of about ``words_per_chunk`` words, each overlapping the previous by ``overlap_words``."""
    if overlap_words >= words_per_chunk:
        raise ValueError("overlap must be smaller than the chunk")
    words = [m.span() for m in _WORD.finditer(text)]
    if not words:
        return []
    spans, step = [], words_per_chunk - overlap_words
    for first in range(0, len(words), step):
        last = min(first + words_per_chunk, len(words)) - 1
        spans.append(Span(words[first][0], words[last][1]))
        if last == len(words) - 1:
            break
    return spans


def sentence_windows(text: str, span: Span, max_sentences: int = 2) -> list[Span]:
    """Candidate passages inside ``span``: single sentences and runs of up to ``max_sentences``."""
    body = text[span.start : span.end]
    bounds, start = [], 0
    for match in _SENTENCE_END.finditer(body):
        if body[start : match.start()].strip():
            bounds.append((start, match.start()))
        start = match.end()
    if body[start:].strip():
        bounds.append((start, len(body)))
    windows = []
    for i in range(len(bounds)):
        for n in range(1, max_sentences + 1):
            if i + n <= len(bounds):
                windows.append(Span(span.start + bounds[i][0], span.start + bounds[i + n - 1][1]))
    return windows or [span]
