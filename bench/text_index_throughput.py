"""Indexing throughput of text documents: the whole pipeline against the bare sentence encoder.

A library of N text documents (default 300; Python docstring prose, several hundred words
each) is indexed by the real indexer and embedder (scan, hash, read, chunk, encode with the
real all-MiniLM-L6-v2 and the shipped ordering adapter, store). The baseline, in the same
process on the same machine: the same documents chunked the same way, then one bare
``SentenceTransformer.encode`` call over all the chunks (what any indexer must at least do).
Reported: chunks per second for both, and their ratio (target >= 0.85).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, time_pipeline  # noqa: E402
from retrieval_sets import docstring_set  # noqa: E402

from peerlight.embeddings.chunking import chunk_text  # noqa: E402
from peerlight.node.config import Config  # noqa: E402


def make_documents(root: Path, count: int) -> list[str]:
    """``count`` documents of joined docstring bodies (~500 words each); returns their texts."""
    bodies = [doc.text for doc in docstring_set(documents=count * 4, queries=1).documents]
    root.mkdir(parents=True)
    texts = []
    for i in range(count):
        text = "\n\n".join(bodies[4 * i : 4 * i + 4])
        (root / f"doc{i:04d}.txt").write_text(text)
        texts.append(text)
    return texts


def bare_encoder(model, texts: list[str], config: Config) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    opts = config.text_model
    chunks = [text[s.start : s.end] for text in texts for s in chunk_text(text, opts.chunk_words, opts.chunk_overlap_words)]
    model.encode(chunks[:64])  # warm-up
    started = time.perf_counter()
    model.encode(chunks)
    return len(chunks), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=300)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pl-bench-"))
    try:
        texts = make_documents(base / "library", args.documents)
        defaults = Config()
        config = replace(defaults, index=replace(defaults.index, watch=False))
        from sentence_transformers import SentenceTransformer

        from peerlight.embeddings.sentence import resolve_sentence_weights
        from peerlight.embeddings.weights import HubModelSpec

        weights = resolve_sentence_weights(HubModelSpec(config.text_model.name))
        chunks, bare_seconds = bare_encoder(SentenceTransformer(weights.path, device="cpu"), texts, config)
        seconds = trio.run(
            time_pipeline, config, base, base / "library", args.documents, "text", lambda model: model.encode(["warm-up"] * 64)
        )
        emit(
            "text_index_throughput",
            documents=args.documents,
            chunks=chunks,
            bare_encoder_chunks_per_s=round(chunks / bare_seconds, 1),
            pipeline_chunks_per_s=round(chunks / seconds, 1),
            pipeline_vs_bare=round(bare_seconds / seconds, 3),
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
