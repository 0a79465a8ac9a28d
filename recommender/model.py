"""The user's preference model: a shared user bias, and one Bayesian head per vector space.

Items live in different spaces (CLIP's for images and video, MiniLM's for text, CLAP's for
audio), whose vectors cannot be compared. Each space gets its own head, predicting how far an
item's rating lies from the user's overall bias; the bias is shared, so a user who rates
everything high starts new spaces high too. Predictions are in rating units (0-10), so the
heads' outputs rank together.

A head is Bayesian linear regression (:mod:`.bayes`) over two blocks of features: the vector
itself (a global direction of taste: "more like this, less like that") and its similarity to
up to ``LOCAL_CENTRES`` of the rated items (a soft, normalised radial-basis block: "close to
these"), so that a tight group of liked items lifts its neighbours more than a global
direction would. Together they are a Gaussian process with a linear plus a local kernel, in
its Nystrom form; the block's width and weight were chosen on the docstring corpus of
``bench/recommender.py`` and are reported on the held-out man pages.

Peers' items are known only by a K-prefix of their importance-ordered vectors, so every head
is trained on random prefix truncations of its examples (each renormalised, as prefixes are
compared, the local block computed on the same prefix of the centres): the same head scores
a full vector and a 48-value prefix. A head with too few examples falls back to similarity to
the rated items (cold start).

What a head predicts is then corrected by its errors on the nearest rated items
(:mod:`.neighbours`): the smooth head carries the broad taste, the neighbourhood the exceptions.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from . import bayes, mlp
from .neighbours import Neighbourhood

COLD_START_EXAMPLES = 5  # a head with fewer distinct rated items ranks by similarity to them
NEUTRAL_RATING = 5.0
BIAS_PRIOR_WEIGHT = 2.0  # the shared bias starts at NEUTRAL_RATING as if from this many ratings
PRIOR_SPREAD = 2.5  # a rating's standard deviation before anything is known
TRUNCATED_COPIES = 3  # prefix-truncated copies of each example, besides its full vector
TRUNCATION_FRACTIONS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2)
LOCAL_CENTRES = 128  # rated items whose neighbourhoods get their own feature
LOCAL_WIDTH = 0.2  # the radial basis exp((cos - 1) / width): about 0.2 of cosine is "near"
LOCAL_WEIGHT = 2.0  # the local block's norm (the linear block's is 1): its prior share ...
LOCAL_SCALES = (0.25, 0.5, 1.0, 2.0)  # ... times the one of these the evidence prefers
MODELS = ("bayesian", "mlp")


@dataclass(frozen=True)
class Example:
    """One labelled item in one space: its vector (full, or the K-prefix a peer sent) and label."""

    key: str  # content hash
    vector: np.ndarray
    target: float  # 0..10
    weight: float = 1.0  # explicit ratings 1; implicit events less


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def local_block(prefixes: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The normalised radial-basis similarities of unit ``prefixes`` (n x w) to the centres' same
    prefixes: each row sums its mass over the rated items it lies near. Centres known to fewer
    values than w (peers' items, known by a K-prefix) are met at their width: the prefixes are
    cut to it and renormalised."""
    width = min(prefixes.shape[1], centres.shape[1])
    if width < prefixes.shape[1]:
        prefixes = unit_rows(prefixes[:, :width])
    near = prefixes @ unit_rows(centres[:, :width]).T
    # In place: this runs over every candidate of a ranking (100,000 x 256 values).
    near -= 1.0
    near *= 1.0 / LOCAL_WIDTH
    np.exp(near, out=near)
    norms = np.sqrt(np.einsum("ij,ij->i", near, near))
    near *= (LOCAL_WEIGHT / np.maximum(norms, 1e-30))[:, None]
    return near


def design(vectors: np.ndarray, dimension: int, centres: np.ndarray) -> np.ndarray:
    """The head's input rows for vectors or prefixes (all of one width): the renormalised prefix
    zero-padded to the dimension, a constant 1 (the head's intercept), the local block."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    width = min(vectors.shape[1], dimension)
    prefixes = unit_rows(vectors[:, :width])
    out = np.zeros((len(vectors), dimension + 1 + len(centres)), dtype=np.float32)
    out[:, :width] = prefixes
    out[:, dimension] = 1.0
    if len(centres):
        out[:, dimension + 1 :] = local_block(prefixes, centres)
    return out


def centre_width(available: np.ndarray) -> int:
    """The widest width at which at least half of the rated items are known."""
    for width in sorted(set(available.tolist()), reverse=True):
        if 2 * int((available >= width).sum()) >= len(available):
            return int(width)
    return int(available.min())


def truncation_lengths(dimension: int, available: int) -> list[int]:
    return sorted({max(1, round(dimension * f)) for f in TRUNCATION_FRACTIONS if round(dimension * f) < available} or {available})


def _padded(examples: list[Example], dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """The examples' vectors zero-padded to the dimension, and how much of each is known."""
    padded = np.zeros((len(examples), dimension), dtype=np.float32)
    available = np.zeros(len(examples), dtype=np.int64)
    for i, example in enumerate(examples):
        width = min(len(example.vector), dimension)
        padded[i, :width] = example.vector[:width]
        available[i] = width
    return padded, available


def augmented(
    examples: list[Example], dimension: int, centres: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each example as its vector and ``TRUNCATED_COPIES`` random prefix truncations of it, sharing
    its weight (half to the vector as given, half to the copies): design rows, targets, weights."""
    padded, available = _padded(examples, dimension)
    copies = 1 + TRUNCATED_COPIES
    lengths = np.empty((len(examples), copies), dtype=np.int64)
    lengths[:, 0] = available
    for width in np.unique(available):
        rows = np.flatnonzero(available == width)
        lengths[rows, 1:] = rng.choice(truncation_lengths(dimension, int(width)), size=(len(rows), TRUNCATED_COPIES))
    source = np.repeat(np.arange(len(examples)), copies)
    cut = lengths.reshape(-1)
    matrix = np.empty((len(cut), dimension + 1 + len(centres)), dtype=np.float32)
    for width in np.unique(cut):
        rows = np.flatnonzero(cut == width)
        matrix[rows] = design(padded[source[rows], :width], dimension, centres)
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
    vectors: np.ndarray  # their vectors, zero-padded to the dimension (float32)
    residuals: np.ndarray  # their targets minus the bias
    weights: np.ndarray
    centres: np.ndarray  # the rated vectors that the local block measures nearness to
    fitted: bayes.Fitted | None  # None: cold start (too few examples), or the MLP option
    network: mlp.Ensemble | None = None  # the MLP option's head
    known: np.ndarray | None = None  # how much of each rated vector is known (None: all of it)
    _neighbourhoods: dict[int, Neighbourhood] = field(default_factory=dict, repr=False, compare=False)

    @property
    def cold(self) -> bool:
        return self.fitted is None and self.network is None

    def predict(self, vectors: np.ndarray, bias: float) -> tuple[np.ndarray, np.ndarray]:
        """Predicted rating and its standard deviation for vectors or prefixes (one width)."""
        if self.cold:
            return self.mean(vectors, bias), np.full(len(np.atleast_2d(vectors)), PRIOR_SPREAD)
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        rows = design(vectors, self.dimension, self.centres)
        mean, spread = self.network.predict(rows) if self.network is not None else self.fitted.predict(rows)  # type: ignore[union-attr]
        width = min(vectors.shape[1], self.dimension)
        return bias + mean + self.neighbourhood(width).correction(unit_rows(vectors[:, :width])), spread

    def neighbourhood(self, width: int) -> Neighbourhood:
        """The rated items known at ``width``, with the head's errors on their prefixes (built once
        per width: a ranking scores peers' prefixes and local vectors at a handful of widths)."""
        found = self._neighbourhoods.get(width)
        if found is None:
            known = self.known if self.known is not None else np.full(len(self.keys), self.dimension)
            rows = np.flatnonzero(known >= width)
            prefixes = unit_rows(self.vectors[rows, :width])
            errors = self.residuals[rows] - self.mean(prefixes, 0.0)
            found = self._neighbourhoods[width] = Neighbourhood.build(rows, prefixes, errors, self.weights[rows])
        return found

    def mean(self, vectors: np.ndarray, bias: float) -> np.ndarray:
        """The head's predicted rating alone, for many candidates at once: no padding, no
        variance, no neighbourhood correction (the first stage of a ranking, over every
        candidate's prefix; the shortlist gets the whole prediction)."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        width = min(vectors.shape[1], self.dimension)
        prefixes = unit_rows(vectors[:, :width])
        if self.cold:
            cosines = prefixes @ unit_rows(self.vectors[:, :width]).T if len(self.vectors) else np.zeros((len(prefixes), 0))
            near = np.clip(cosines, 0.0, None) ** 2
            return bias + (near @ self.residuals) / (1.0 + near.sum(axis=1))
        if self.network is not None:
            return bias + self._network_mean(prefixes, width)
        weights = self.fitted.mean.astype(np.float32)  # type: ignore[union-attr]
        mean = prefixes @ weights[:width] + weights[self.dimension]
        if len(self.centres):
            mean += local_block(prefixes, self.centres) @ weights[self.dimension + 1 :]
        return bias + mean

    def _network_mean(self, prefixes: np.ndarray, width: int) -> np.ndarray:
        """The ensemble's mean without building padded rows: the first layer from its pieces."""
        total = np.zeros(len(prefixes), dtype=np.float32)
        local = local_block(prefixes, self.centres) if len(self.centres) else None
        for member in self.network.members:  # type: ignore[union-attr]
            hidden = prefixes @ member.first[:width] + member.first[self.dimension] + member.first_bias
            if local is not None:
                hidden += local @ member.first[self.dimension + 1 :]
            total += np.tanh(hidden) @ member.second + member.second_bias
        return total / len(self.network.members)  # type: ignore[union-attr]

    def contributions(self, vector: np.ndarray) -> np.ndarray:
        """How much each rated item moved this prediction (rating units), signed: for the
        Bayesian head its equivalent kernel, for the others the rated items' residuals weighted
        by their nearness; plus, past cold start, each neighbour's share of the correction."""
        width = min(len(np.ravel(vector)), self.dimension)
        query = unit_rows(np.atleast_2d(vector)[:, :width])[0]
        if self.fitted is not None:
            x = design(vector, self.dimension, self.centres)
            # Each rated item's row as training built it: at the width it is known to.
            known = self.known if self.known is not None else np.full(len(self.keys), self.dimension)
            rated = np.empty((len(self.keys), x.shape[1]), dtype=np.float32)
            for known_width in np.unique(known):
                rows = np.flatnonzero(known == known_width)
                rated[rows] = design(self.vectors[rows, :known_width], self.dimension, self.centres)
            moved = (self.fitted.influence(x, rated, self.weights) * self.residuals[None, :])[0]
        else:
            near = np.clip(unit_rows(self.vectors[:, :width]) @ query, 0.0, None) ** 2
            moved = near * self.residuals / (1.0 + near.sum())
        if self.cold:
            return moved
        return moved + self.neighbourhood(width).contributions(query, len(self.keys))


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

    def mean(self, space: str, vectors: np.ndarray) -> np.ndarray:
        """Predicted ratings only (cheap: for scoring every candidate's prefix)."""
        head = self.heads.get(space)
        if head is None:
            return np.full(len(np.atleast_2d(vectors)), self.bias)
        return np.clip(head.mean(vectors, self.bias), 0.0, 10.0)

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
                    "dimension": head.dimension,
                    # How much of each example's vector is known: the whole, or a peer's K-prefix.
                    "widths": {str(w): int(n) for w, n in zip(*np.unique(head.known if head.known is not None else [head.dimension], return_counts=True))}
                    if head.known is not None else {str(head.dimension): len(head.keys)},
                    "mode": "bayesian (linear + local) + neighbours" if head.fitted else "mlp ensemble + neighbours" if head.network else "similarity (cold start)",
                    **({"alpha": round(head.fitted.alpha, 4), "noise_sd": round(head.fitted.beta**-0.5, 3)} if head.fitted else {}),
                }
                for space, head in sorted(self.heads.items())
            },
        }

    # --- storage: one bytes blob (numpy's npz, no pickle) and nothing else ---

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {}
        heads = []
        for n, head in enumerate(self.heads.values()):
            prefix = f"h{n}_"
            arrays |= {
                f"{prefix}vectors": head.vectors.astype(np.float16),
                f"{prefix}centres": head.centres.astype(np.float16),
                f"{prefix}residuals": head.residuals,
                f"{prefix}weights": head.weights,
            }
            if head.known is not None:
                arrays[f"{prefix}known"] = head.known
            if head.fitted is not None:
                arrays |= head.fitted.to_arrays(prefix)
            if head.network is not None:
                arrays |= head.network.to_arrays(prefix)
            heads.append({
                "space": head.space, "dimension": head.dimension, "keys": head.keys,
                "fitted": head.fitted is not None, "network": head.network is not None,
            })
        meta = {"bias": self.bias, "trained_at": self.trained_at, "examples": self.examples, "heads": heads}
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
                arrays[f"{prefix}centres"].astype(np.float32),
                bayes.Fitted.from_arrays(arrays, prefix) if info["fitted"] else None,
                mlp.Ensemble.from_arrays(arrays, prefix) if info.get("network") else None,
                arrays.get(f"{prefix}known"),
            )
        return cls(float(meta["bias"]), heads, float(meta["trained_at"]), int(meta["examples"]), version)


def train(
    by_space: Mapping[str, Iterable[Example]], dimensions: Mapping[str, int], seed: int = 0, kind: str = "bayesian"
) -> PreferenceModel:
    """Fit the bias and every space's head on the user's labelled items (runs in a worker thread).

    ``kind``: ``bayesian`` (the default) or ``mlp``, a small ensemble of networks on the same
    inputs (see :mod:`.mlp`)."""
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; one of {', '.join(MODELS)}")
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
        vectors, available = _padded(examples, dimension)
        # As stored (float16), so that a stored model finds the same neighbours as the trained one.
        vectors = vectors.astype(np.float16).astype(np.float32)
        residuals = np.array([e.target - bias for e in examples])
        weights = np.array([e.weight for e in examples])
        fitted, network, centres = None, None, np.zeros((0, dimension), np.float32)
        if len({e.key for e in examples}) >= COLD_START_EXAMPLES:
            # Centres: rated items known at the centres' width, a random choice of them when there
            # are many. The width is the widest that most rated items are known at: the whole
            # vector on a library of one's own, a peer's K-prefix when most ratings are of peers'
            # items (a node with no library: its taste is all in peers' prefixes).
            width = centre_width(available)
            known = np.flatnonzero(available >= width)
            chosen = known if len(known) <= LOCAL_CENTRES else np.sort(rng.choice(known, LOCAL_CENTRES, replace=False))
            centres = unit_rows(vectors[chosen, :width]) if len(chosen) else centres
            rows, targets, row_weights = augmented(examples, dimension, centres, rng)
            if kind == "mlp":
                network = mlp.fit(rows, targets - bias, row_weights, seed)
            else:
                local = slice(dimension + 1, dimension + 1 + len(centres))
                fitted = bayes.fit(rows, targets - bias, row_weights, block=local, block_scales=LOCAL_SCALES)
        known = None if (available == dimension).all() else available
        head = heads[space] = Head(space, dimension, [e.key for e in examples], vectors, residuals, weights, centres, fitted, network, known)
        if not head.cold:
            head.neighbourhood(dimension)  # built here, in the training thread, not by the first ranking
    return PreferenceModel(bias, heads, time.time(), len(everything))
