"""Training the node's importance-ordering adapters (``peerlight models train-adapter``).

The corpus is either a path given by the user (text files: one text per non-empty line, or
every ``.txt``/``.md`` file in a folder, one text per paragraph), embedded with the role's
query tower, or — by default — the base vectors the node already stored for that model.
With ``align_to``, the corpus is embedded by both roles' text towers and an alignment into
the other role's space is trained instead. Adapters are saved as ``adapters/<adapter
id>.npz`` in the data directory; the node trains its own defaults in :mod:`.auto_adapters`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import trio

from peerlight.embeddings.adapter_training import TrainingOptions, train_adapter, train_alignment
from peerlight.embeddings.adapters import Adapter

from .catalog import embeddings as store
from .catalog.database import Catalog
from .files import write_atomic
from .models import ModelManager

MIN_CORPUS = 256
Report = Callable[[int, int, float], None]
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


async def encode_in_batches(model: Any, texts: list[str], batch: int = 256) -> np.ndarray:
    """Embed a corpus a batch per worker call (a cancelled call is abandoned to its thread, like every torch call)."""
    parts = [
        await trio.to_thread.run_sync(model.encode_queries, texts[i : i + batch], abandon_on_cancel=True)
        for i in range(0, len(texts), batch)
    ]
    return np.concatenate(parts)


async def train_in_worker(train: Callable[[Report], Adapter], steps: int, progress: TrainingProgress) -> Adapter:
    """Run ``train(report)`` in a worker thread, reporting into ``progress``.

    Cancelling returns at once and tells the thread to stop at its next step (the process
    exits without interpreter teardown, so a thread still inside torch cannot abort it).
    """
    progress.phase, progress.steps = "training", steps
    stop = threading.Event()

    def report(step: int, steps: int, loss: float) -> None:
        if stop.is_set():
            raise TrainingError("training cancelled")
        progress.step, progress.loss = step, loss

    try:
        return await trio.to_thread.run_sync(partial(train, report), abandon_on_cancel=True)
    except trio.Cancelled:
        stop.set()
        raise


async def train_node_adapter(
    catalog: Catalog,
    models: ModelManager,
    adapters_dir: Path,
    role: str,
    corpus: Path | None,
    options: TrainingOptions,
    progress: TrainingProgress,
    align_to: str | None = None,
) -> dict[str, Any]:
    """Train an ordering adapter for ``role``'s encoder, or — with ``align_to`` — an alignment
    that brings it into the space of another role's model, and save it in ``adapters_dir``."""
    # Adapters map the *base* encoder's vectors: train on those, not on already ordered ones.
    loaded = await models.get(role)
    model = getattr(loaded, "base", None) or loaded
    texts: list[str] = []
    if corpus is not None:
        texts = await trio.to_thread.run_sync(corpus_texts, corpus)
        if len(texts) < MIN_CORPUS:
            raise TrainingError(f"{corpus} holds {len(texts)} texts; at least {MIN_CORPUS} are needed")
        source = f"{len(texts)} texts from {corpus}"
    if align_to is not None:
        if not texts:
            raise TrainingError("an alignment is trained on a text corpus: give --corpus")
        if align_to == role:
            raise TrainingError("an encoder cannot be aligned to its own space")
        target = await models.get(align_to)
        progress.phase = "embedding corpus"
        source_vectors, target_vectors = await encode_in_batches(model, texts), await encode_in_batches(target, texts)
        adapter = await train_in_worker(
            partial(train_alignment, model.model_id, source_vectors, target.model_id, target_vectors, options),
            options.steps,
            progress,
        )
        extra = {"space": target.model_id, "matched": matched_fraction(adapter.apply(source_vectors), target_vectors)}
    else:
        if texts:
            progress.phase = "embedding corpus"
            vectors = await encode_in_batches(model, texts)
        else:
            vectors = await catalog.read(partial(store.model_vectors, model_id=model.model_id, limit=MAX_CORPUS))
            if len(vectors) < MIN_CORPUS:
                raise TrainingError(
                    f"the node has {len(vectors)} stored {role} vectors of the base model {model.model_id}; at least "
                    f"{MIN_CORPUS} are needed (index more media with adapter = \"none\", or give --corpus)"
                )
            source = f"{len(vectors)} stored vectors"
        adapter = await train_in_worker(partial(train_adapter, model.model_id, np.asarray(vectors), options), options.steps, progress)
        extra = {"space": adapter.model_id}
    adapter.info["corpus"] = source
    path = adapters_dir / f"{adapter.adapter_id}.npz"
    await trio.to_thread.run_sync(partial(write_atomic, path, adapter.to_bytes(), mode=0o644))
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
        **extra,
    }


def matched_fraction(mapped: np.ndarray, targets: np.ndarray) -> float:
    """How many texts' mapped vectors are nearest their own target among all targets (alignment quality)."""
    nearest = np.argmax(mapped @ targets.T, axis=1)
    return round(float(np.mean(nearest == np.arange(len(mapped)))), 4)
