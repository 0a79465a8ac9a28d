"""A small neural head: an ensemble of one-hidden-layer networks, the option beside Bayesian regression.

Why offer it: with thousands of ratings a taste may bend in ways no linear-plus-local model
follows. Why it is not the default: with tens to hundreds of ratings it overfits where the
Bayesian head chooses its own regularisation (``bench/recommender.py`` compares them). Its
uncertainty is the ensemble's disagreement plus the noise it leaves on the training ratings,
a cruder estimate than the Bayesian posterior, but one the exploration bonus can use.

Plain numpy, full control of the time it takes: a fixed number of Adam steps on mini-batches,
whatever the number of ratings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIDDEN = 32
MEMBERS = 4
STEPS = 600
BATCH = 256
LEARNING_RATE = 1e-2
WEIGHT_DECAY = 3e-2
MIN_NOISE = 0.5


@dataclass(frozen=True)
class Network:
    first: np.ndarray  # (d, HIDDEN)
    first_bias: np.ndarray  # (HIDDEN,)
    second: np.ndarray  # (HIDDEN,)
    second_bias: float

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return np.tanh(rows @ self.first + self.first_bias) @ self.second + self.second_bias


@dataclass(frozen=True)
class Ensemble:
    members: list[Network]
    noise: float  # the weighted RMS residual on the training ratings

    def predict(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = np.stack([member(np.asarray(rows, dtype=np.float32)) for member in self.members])
        return outputs.mean(axis=0), np.sqrt(outputs.var(axis=0) + self.noise**2)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        arrays = {f"{prefix}mlp_noise": np.array([self.noise])}
        for n, m in enumerate(self.members):
            arrays |= {
                f"{prefix}mlp{n}_first": m.first, f"{prefix}mlp{n}_first_bias": m.first_bias,
                f"{prefix}mlp{n}_second": m.second, f"{prefix}mlp{n}_second_bias": np.array([m.second_bias]),
            }
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> Ensemble:
        members = []
        n = 0
        while f"{prefix}mlp{n}_first" in arrays:
            members.append(Network(
                arrays[f"{prefix}mlp{n}_first"], arrays[f"{prefix}mlp{n}_first_bias"],
                arrays[f"{prefix}mlp{n}_second"], float(arrays[f"{prefix}mlp{n}_second_bias"][0]),
            ))
            n += 1
        return cls(members, float(arrays[f"{prefix}mlp_noise"][0]))


def fit(rows: np.ndarray, targets: np.ndarray, weights: np.ndarray, seed: int = 0) -> Ensemble:
    """Train ``MEMBERS`` networks from different starts and batch orders on weighted squared error."""
    rows = np.asarray(rows, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32)
    weights = weights / weights.mean()
    members = [_train_one(rows, targets, weights, np.random.default_rng(seed + n)) for n in range(MEMBERS)]
    ensemble = Ensemble(members, 0.0)
    mean, _ = ensemble.predict(rows)
    noise = float(np.sqrt(np.average((mean - targets) ** 2, weights=weights)))
    return Ensemble(members, max(noise, MIN_NOISE))


def _train_one(rows: np.ndarray, targets: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> Network:
    count, width = rows.shape
    params = [
        (rng.normal(size=(width, HIDDEN)) / np.sqrt(width)).astype(np.float32),
        np.zeros(HIDDEN, np.float32),
        (rng.normal(size=HIDDEN) / np.sqrt(HIDDEN)).astype(np.float32),
        np.zeros(1, np.float32),
    ]
    moments = [np.zeros_like(p) for p in params]
    squares = [np.zeros_like(p) for p in params]
    for step in range(1, STEPS + 1):
        batch = rng.integers(0, count, size=min(BATCH, count))
        x, y, w = rows[batch], targets[batch], weights[batch]
        hidden = np.tanh(x @ params[0] + params[1])
        error = (hidden @ params[2] + params[3][0] - y) * w / len(batch)
        back = np.outer(error, params[2]) * (1 - hidden**2)
        grads = [x.T @ back + WEIGHT_DECAY * params[0], back.sum(axis=0), hidden.T @ error + WEIGHT_DECAY * params[2], np.array([error.sum()], np.float32)]
        for p, g, m, v in zip(params, grads, moments, squares):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= LEARNING_RATE * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return Network(params[0], params[1], params[2], float(params[3][0]))
