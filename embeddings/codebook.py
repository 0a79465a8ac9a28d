"""A coarse codebook of an ordered space: the topics that global search routes by.

Every node on defaults holds its text vectors in the same ordered space (the shipped
adapter), so one set of centroids of the K = 16 prefix names the same topics on every node.
A share says which topics it holds (their numbers become DHT keys), and a query finds the
shares holding its nearest topics: no node has to see another's vectors to route.

The codebook is spherical k-means of normalised K-prefixes, trained on the same offline mix
as the ordering (``default_adapters/build.py --codebook``). Its id is the BLAKE3 hash of its
model id and centroids in a layout any language can write (:meth:`Codebook.id_bytes`), so
two nodes agree on topic numbers exactly when their ids agree.

Topics are grouped into ``REGIONS`` *regions*, wide enough that a large library holds items
in few of them where it holds items in hundreds of topics: topic ``t`` lies in the region
``argmax_j<REGIONS cos(c_t, c_j)`` (the first centroids are the regions' seeds; float64,
the lowest ``j`` on a tie), so any implementation derives the same regions from the same
codebook, with nothing more shipped.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .vectors import normalize

ID_TAG = b"peerlight-codebook-id/1\0"
FORMAT = "peerlight-codebook/1"
PREFIX = 16  # values of an ordered vector the topics are drawn in
CENTROIDS = 1024
REGIONS = 32  # topic groups, seeded by the first centroids


class CodebookError(Exception):
    """A codebook file that cannot be used (corrupt, or of another shape)."""


@dataclass
class Codebook:
    model_id: str  # the ordered space whose K-prefixes it divides
    centroids: np.ndarray  # (C, K) float32, unit length
    info: dict = field(default_factory=dict)  # how it was made: mix, seed, iterations

    @property
    def prefix(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def size(self) -> int:
        return int(self.centroids.shape[0])

    def id_bytes(self) -> bytes:
        """tag, the model id (UTF-8, u32 LE length first), u32 LE count and prefix, float32 LE centroids."""
        model = self.model_id.encode()
        head = ID_TAG + struct.pack("<I", len(model)) + model + struct.pack("<II", self.size, self.prefix)
        return head + np.ascontiguousarray(self.centroids, dtype="<f4").tobytes()

    @property
    def id(self) -> str:
        from blake3 import blake3

        return blake3(self.id_bytes()).hexdigest()[:16]

    def prefixes(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors of the space (n, D ≥ K) → their renormalised K-prefixes."""
        x = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
        if x.shape[1] < self.prefix:
            raise CodebookError(f"vectors of {x.shape[1]} values are shorter than the codebook's prefix of {self.prefix}")
        return normalize(x[:, : self.prefix])

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """The nearest topic of each vector (n,), by cosine of the K-prefix."""
        if len(vectors) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.argmax(self.prefixes(vectors) @ self.centroids.T, axis=1)

    def nearest(self, vector: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """A query's ``count`` nearest topics and their cosines, nearest first."""
        scores = self.centroids @ self.prefixes(np.asarray(vector).reshape(1, -1))[0]
        order = np.argsort(-scores)[:count]
        return order, scores[order]

    @cached_property
    def regions(self) -> np.ndarray:
        """The region of each topic (C,): the nearest of the first ``REGIONS`` centroids."""
        seeds = self.centroids[: min(REGIONS, self.size)].astype(np.float64)
        return np.argmax(self.centroids.astype(np.float64) @ seeds.T, axis=1)

    @property
    def region_count(self) -> int:
        return min(REGIONS, self.size)

    def histogram(self, vectors: np.ndarray) -> np.ndarray:
        """Items per topic (C,)."""
        return np.bincount(self.assign(vectors), minlength=self.size)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        header = {"format": FORMAT, "model_id": self.model_id, "info": self.info}
        np.savez(buffer, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), centroids=self.centroids.astype(np.float32))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Codebook:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                header = json.loads(bytes(npz["header"]).decode())
                centroids = np.asarray(npz["centroids"], dtype=np.float32)
        except Exception as exc:  # a damaged file: zip, npy or JSON errors alike
            raise CodebookError(f"not a codebook file: {exc}") from None
        if header.get("format") != FORMAT or not isinstance(header.get("model_id"), str):
            raise CodebookError("not a codebook file (format)")
        if centroids.ndim != 2 or not 1 <= centroids.shape[0] <= 65535 or not np.isfinite(centroids).all():
            raise CodebookError("a codebook's centroids are a finite (count ≤ 65,535, prefix) matrix")
        if not np.allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-3):
            raise CodebookError("a codebook's centroids are unit vectors")
        return cls(header["model_id"], centroids, header.get("info") or {})  # as stored: its id is of these bytes


def train_codebook(model_id: str, vectors: np.ndarray, count: int = CENTROIDS, prefix: int = PREFIX, seed: int = 0, iterations: int = 25) -> Codebook:
    """Spherical k-means (faiss) of the vectors' renormalised K-prefixes."""
    import faiss

    x = normalize(np.asarray(vectors, dtype=np.float32)[:, :prefix])
    if len(x) < count:
        raise CodebookError(f"{len(x)} vectors cannot make {count} topics")
    kmeans = faiss.Kmeans(prefix, count, niter=iterations, seed=seed, spherical=True, verbose=False, max_points_per_centroid=len(x))
    kmeans.train(np.ascontiguousarray(x))
    centroids = normalize(kmeans.centroids.astype(np.float32))
    info = {"units": int(len(x)), "seed": seed, "iterations": iterations, "prefix": prefix}
    return Codebook(model_id, centroids, info)
