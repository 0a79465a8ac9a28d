"""Training the node's importance-ordering adapters (``peerlight models train-adapter``).

The corpus is either a path given by the user (text files: one text per non-empty line, or
every ``.txt``/``.md`` file in a folder, one text per paragraph), embedded with the role's
query tower, or — by default — the vectors the node already stored for that model. Adapters
are saved as ``adapters/<adapter id>.npz`` in the data directory.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import trio

from peerlight.embeddings.adapter_training import TrainingOptions, train_adapter

from .catalog import embeddings as store
from .catalog.database import Catalog
from .models import ModelManager

MIN_CORPUS = 256
MAX_CORPUS = 50_000


class TrainingError(Exception):
    """The adapter cannot be trained as asked (unknown encoder, corpus too small, ...)."""


@dataclass
class TrainingProgress:
    phase: str = "preparing"
    step: int = 0
    steps: int = 0
    loss: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return dict(vars(self))


def corpus_texts(path: Path, limit: int = MAX_CORPUS) -> list[str]:
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".txt", ".md")) if path.is_dir() else [path]
    texts: list[str] = []
    for file in files:
        body = file.read_text(encoding="utf-8", errors="replace")
        pieces = re.split(r"\n\s*\n", body) if path.is_dir() else body.splitlines()
        texts += [" ".join(piece.split()) for piece in pieces if piece.strip()]
        if len(texts) >= limit:
            break
    return texts[:limit]


async def train_node_adapter(
    catalog: Catalog,
    models: ModelManager,
    adapters_dir: Path,
    role: str,
    corpus: Path | None,
    options: TrainingOptions,
    progress: TrainingProgress,
) -> dict[str, Any]:
    # Adapters map the *base* encoder's vectors: train on those, not on already ordered ones.
    model = getattr(await models.get(role), "base", None) or await models.get(role)
    if corpus is not None:
        texts = await trio.to_thread.run_sync(corpus_texts, corpus)
        if len(texts) < MIN_CORPUS:
            raise TrainingError(f"{corpus} holds {len(texts)} texts; at least {MIN_CORPUS} are needed")
        progress.phase = "embedding corpus"
        vectors = await trio.to_thread.run_sync(model.encode_queries, texts, abandon_on_cancel=True)
        source = f"{len(texts)} texts from {corpus}"
    else:
        vectors = await catalog.read(partial(store.model_vectors, model_id=model.model_id, limit=MAX_CORPUS))
        if len(vectors) < MIN_CORPUS:
            raise TrainingError(
                f"the node has {len(vectors)} stored {role} vectors of the base model {model.model_id}; at least "
                f"{MIN_CORPUS} are needed (index more media with adapter = \"none\", or give --corpus)"
            )
        source = f"{len(vectors)} stored vectors"
    progress.phase, progress.steps = "training", options.steps
    stop = threading.Event()

    def report(step: int, steps: int, loss: float) -> None:
        if stop.is_set():
            raise TrainingError("training cancelled")
        progress.step, progress.loss = step, loss

    try:
        adapter = await trio.to_thread.run_sync(
            partial(train_adapter, model.model_id, np.asarray(vectors), options, report), abandon_on_cancel=True
        )
    finally:
        stop.set()  # if we were cancelled, the training thread stops at its next step
    adapter.info["corpus"] = source
    path = adapters_dir / f"{adapter.adapter_id}.npz"
    await trio.to_thread.run_sync(adapter.save, path)
    progress.phase = "done"
    return {
        "role": role,
        "base_model_id": model.model_id,
        "adapter_id": adapter.adapter_id,
        "model_id": adapter.model_id,
        "dimension": adapter.dimension,
        "path": str(path),
        "corpus": source,
        "steps": options.steps,
        "seed": options.seed,
    }
