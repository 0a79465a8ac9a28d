"""The one interface every encoder offers the node.

An encoder turns a batch of inputs of its modality into L2-normalised float32 vectors, and
text queries into vectors of the same space. ``prepare`` is the per-item decoding step
(file -> model input), which the node runs in worker threads in parallel, overlapped with
``encode`` running the model on the previous batch.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .weights import Weights


class Encoder(Protocol):
    model_id: str  # which vectors may be compared: see model_ids
    dimension: int
    space: str  # clip (images, video frames, CLIP text) | text (documents) | audio (CLAP)
    weights: Weights

    def prepare(self, source: Any) -> Any:
        """One item -> model input (a file path, or for text a string). Thread-safe."""

    def encode(self, batch: list[Any]) -> np.ndarray:
        """Prepared inputs -> one normalised vector each, shape (len(batch), dimension)."""

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Text queries -> vectors in this encoder's space."""
