"""Vectors as the node stores them: float32, L2-normalised, little-endian blobs."""

from __future__ import annotations

import numpy as np


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows (a zero row stays zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def mean_vector(vectors: np.ndarray) -> np.ndarray:
    """The normalised mean of normalised rows: one vector standing for a set (video, document)."""
    return normalize(normalize(vectors).mean(axis=0, keepdims=True))[0]


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")
