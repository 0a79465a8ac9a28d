"""The user's preference model: a shared user bias, and one Bayesian linear head per vector space.

Items live in different spaces (CLIP's for images and video, MiniLM's for text, CLAP's for
audio), whose vectors cannot be compared. Each space gets its own head, predicting how far an
item's rating lies from the user's overall bias; the bias is shared, so a user who rates
everything high starts new spaces high too. Predictions are in rating units (0-10), so the
heads' outputs rank together.

Peers' items are known only by a K-prefix of their importance-ordered vectors, so every head
is trained on random prefix truncations of its examples (each renormalised, as prefixes are
compared): the same head scores a full vector and a 48-value prefix. A head with too few
examples falls back to similarity to the rated items (cold start).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from . import bayes

COLD_START_EXAMPLES = 5  # a head with fewer distinct rated items ranks by similarity to them
NEUTRAL_RATING = 5.0
BIAS_PRIOR_WEIGHT = 2.0  # the shared bias starts at NEUTRAL_RATING as if from this many ratings
PRIOR_SPREAD = 2.5  # a rating's standard deviation before anything is known
TRUNCATED_COPIES = 3  # prefix-truncated copies of each example, besides its full vector
TRUNCATION_FRACTIONS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2)


@dataclass(frozen=True)
class Example:
    """One labelled item in one space: its vector (full, or the K-prefix a peer sent) and label."""

    key: str  # content hash
    vector: np.ndarray
    target: float  # 0..10
    weight: float = 1.0  # explicit ratings 1; implicit events less


def features(vectors: np.ndarray, dimension: int) -> np.ndarray:
    """The head's input for full vectors or prefixes: the (renormalised) prefix, zero-padded to
    the space's dimension, and a constant 1 for the head's own intercept."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    width = min(vectors.shape[1], dimension)
    out = np.zeros((len(vectors), dimension + 1), dtype=np.float32)
    prefix = vectors[:, :width]
    norms = np.linalg.norm(prefix, axis=1, keepdims=True)
    out[:, :width] = prefix / np.maximum(norms, 1e-12)
    out[:, dimension] = 1.0
    return out


def _example_features(examples: list[Example], dimension: int) -> np.ndarray:
    padded = np.zeros((len(examples), dimension), dtype=np.float32)
    for i, example in enumerate(examples):
        width = min(len(example.vector), dimension)
        padded[i, :width] = example.vector[:width]
    return features(padded, dimension)


def truncation_lengths(dimension: int, available: int) -> list[int]:
    return sorted({max(1, round(dimension * f)) for f in TRUNCATION_FRACTIONS if round(dimension * f) < available} or {available})


def augmented(examples: list[Example], dimension: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each example as its vector and ``TRUNCATED_COPIES`` random prefix truncations of it, sharing
    its weight (half to the vector as given, half to the copies): rows, targets, weights."""
    count = len(examples)
    copies = 1 + TRUNCATED_COPIES
    padded = np.zeros((count, dimension), dtype=np.float32)
    available = np.zeros(count, dtype=np.int64)
    for i, example in enumerate(examples):
        width = min(len(example.vector), dimension)
        padded[i, :width] = example.vector[:width]
        available[i] = width
    lengths = np.empty((count, copies), dtype=np.int64)
    lengths[:, 0] = available
    for width in np.unique(available):
        rows = np.flatnonzero(available == width)
        choices = np.array(truncation_lengths(dimension, int(width)))
        lengths[rows, 1:] = rng.choice(choices, size=(len(rows), TRUNCATED_COPIES))
    repeated = np.repeat(padded, copies, axis=0)
    cut = lengths.reshape(-1)
    repeated[np.arange(dimension)[None, :] >= cut[:, None]] = 0.0
    norms = np.linalg.norm(repeated, axis=1, keepdims=True)
    matrix = np.empty((len(repeated), dimension + 1), dtype=np.float32)
    matrix[:, :dimension] = repeated / np.maximum(norms, 1e-12)
    matrix[:, dimension] = 1.0
    targets = np.repeat([e.target for e in examples], copies)
    share = np.array([0.5] + [0.5 / TRUNCATED_COPIES] * TRUNCATED_COPIES)
    weights = (np.array([e.weight for e in examples])[:, None] * share[None, :]).reshape(-1)
    return matrix, targets, weights


@dataclass
class Head:
    """What the model knows of one space."""

    space: str
    dimension: int
    keys: list[str]  # the rated items, for explanations
    vectors: np.ndarray  # their features (rows), float32
    residuals: np.ndarray  # their targets minus the bias
    weights: np.ndarray
    fitted: bayes.Fitted | None  # None: cold start (too few examples)

    def predict(self, vectors: np.ndarray, bias: float) -> tuple[np.ndarray, np.ndarray]:
        x = features(vectors, self.dimension)
        mean = self.mean_of(x[:, : self.dimension] @ self.projection(), bias)
        if self.fitted is not None:
            return mean, self.fitted.spread(x)
        return mean, np.full(len(x), PRIOR_SPREAD)

    def projection(self) -> np.ndarray:
        """(dimension, m): the linear maps of a unit vector that its predicted mean depends on, so
        that a large matrix of candidates is scored by one product (:meth:`mean_of` finishes)."""
        if self.fitted is not None:
            return self.fitted.mean[: self.dimension, None].astype(np.float32)
        return np.ascontiguousarray(self.vectors[:, : self.dimension].T)

    def mean_of(self, projected: np.ndarray, bias: float) -> np.ndarray:
        """The predicted rating from :meth:`projection`'s outputs."""
        if self.fitted is not None:
            return bias + projected[:, 0] + float(self.fitted.mean[self.dimension])
        weights = np.clip(projected, 0.0, None) ** 2
        return bias + (weights @ self.residuals) / (1.0 + weights.sum(axis=1))

    def contributions(self, vector: np.ndarray) -> np.ndarray:
        """How much each rated item moved this prediction (rating units), signed."""
        x = features(vector, self.dimension)
        if self.fitted is not None:
            return (self.fitted.influence(x, self.vectors, self.weights) * self.residuals[None, :])[0]
        weights = self._similarities(x)[0]
        return weights * self.residuals / (1.0 + weights.sum())

    def _similarities(self, x: np.ndarray) -> np.ndarray:
        cosines = x[:, : self.dimension] @ self.vectors[:, : self.dimension].T if len(self.vectors) else np.zeros((len(x), 0))
        return np.clip(cosines, 0.0, None) ** 2


@dataclass
class PreferenceModel:
    bias: float = NEUTRAL_RATING
    heads: dict[str, Head] = field(default_factory=dict)
    trained_at: float = 0.0
    examples: int = 0
    version: int = 0  # set by whoever stores it

    def predict(self, space: str, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted rating and its standard deviation for each vector (or prefix) of ``space``."""
        head = self.heads.get(space)
        count = len(np.atleast_2d(vectors))
        if head is None:
            return np.full(count, self.bias), np.full(count, PRIOR_SPREAD)
        mean, spread = head.predict(vectors, self.bias)
        return np.clip(mean, 0.0, 10.0), spread

    def explain(self, space: str, vector: np.ndarray, top: int = 3) -> list[tuple[str, float]]:
        """The rated items that moved this item's prediction most, with how much (signed)."""
        head = self.heads.get(space)
        if head is None or not head.keys:
            return []
        moved = head.contributions(vector)
        order = np.argsort(-np.abs(moved))[:top]
        return [(head.keys[i], float(moved[i])) for i in order if abs(moved[i]) > 1e-3]

    def describe(self) -> dict[str, object]:
        return {
            "version": self.version,
            "trained_at": self.trained_at,
            "examples": self.examples,
            "bias": round(self.bias, 3),
            "spaces": {
                space: {
                    "rated": len(head.keys),
                    "mode": "bayesian-linear" if head.fitted else "similarity (cold start)",
                    **({"alpha": round(head.fitted.alpha, 4), "noise_sd": round(head.fitted.beta**-0.5, 3)} if head.fitted else {}),
                }
                for space, head in sorted(self.heads.items())
            },
        }

    # --- storage: one bytes blob (numpy's npz, no pickle) and nothing else ---

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, object] = {"bias": self.bias, "trained_at": self.trained_at, "examples": self.examples, "heads": []}
        for n, head in enumerate(self.heads.values()):
            prefix = f"h{n}_"
            arrays |= {f"{prefix}vectors": head.vectors.astype(np.float16), f"{prefix}residuals": head.residuals, f"{prefix}weights": head.weights}
            if head.fitted is not None:
                arrays |= head.fitted.to_arrays(prefix)
            meta["heads"].append({"space": head.space, "dimension": head.dimension, "keys": head.keys, "fitted": head.fitted is not None})  # type: ignore[union-attr]
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, version: int = 0) -> PreferenceModel:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        meta = json.loads(arrays["meta"].tobytes())
        heads = {}
        for n, info in enumerate(meta["heads"]):
            prefix = f"h{n}_"
            heads[info["space"]] = Head(
                info["space"],
                int(info["dimension"]),
                list(info["keys"]),
                arrays[f"{prefix}vectors"].astype(np.float32),
                arrays[f"{prefix}residuals"],
                arrays[f"{prefix}weights"],
                bayes.Fitted.from_arrays(arrays, prefix) if info["fitted"] else None,
            )
        return cls(float(meta["bias"]), heads, float(meta["trained_at"]), int(meta["examples"]), version)


def train(by_space: Mapping[str, Iterable[Example]], dimensions: Mapping[str, int], seed: int = 0) -> PreferenceModel:
    """Fit the bias and every space's head on the user's labelled items (runs in a worker thread)."""
    rng = np.random.default_rng(seed)
    grouped = {space: list(examples) for space, examples in by_space.items()}
    everything = [e for examples in grouped.values() for e in examples]
    total = sum(e.weight for e in everything)
    bias = (sum(e.weight * e.target for e in everything) + BIAS_PRIOR_WEIGHT * NEUTRAL_RATING) / (total + BIAS_PRIOR_WEIGHT)
    heads = {}
    for space, examples in grouped.items():
        if not examples:
            continue
        dimension = dimensions[space]
        full = _example_features(examples, dimension)
        residuals = np.array([e.target - bias for e in examples])
        weights = np.array([e.weight for e in examples])
        fitted = None
        if len({e.key for e in examples}) >= COLD_START_EXAMPLES:
            rows, targets, row_weights = augmented(examples, dimension, rng)
            fitted = bayes.fit(rows, targets - bias, row_weights)
        heads[space] = Head(space, dimension, [e.key for e in examples], full, residuals, weights, fitted)
    return PreferenceModel(bias, heads, time.time(), len(everything))
