"""Importance-ordering adapters: maps a base encoder's vectors into an ordered space.

An adapter is PCA-initialised and then trained (Matryoshka style) so that the first K
values of its output already rank neighbours like the full base vectors do, for every K in
a nested list (8, 16, 32, ..., D). Its form is

    y = normalise((x + MLP(x)) @ R)

with R a D-column rotation initialised from PCA (importance order) and a residual MLP whose
output layer starts at zero — so an untrained adapter *is* PCA, and training only has to
improve on it. The PCA is uncentred (eigenvectors of the second moment): a pure rotation
keeps cosine similarities, so the full-length vector of an untrained adapter ranks exactly
like the base vector, while centring would distort it. Inference is plain numpy; torch is
needed only for training.

An adapter is a small ``.npz`` file. Its id is the BLAKE3 hash of its base model id and
weights in a layout any language can write (:meth:`Adapter.id_bytes`), and the model id of
the vectors it produces is a hash of (base model id, adapter id, D): so vectors from
different adapters are never compared, and a node can fetch an adapter it lacks from a
peer and verify it by its hash.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .model_ids import ORDERED, make_model_id
from .vectors import normalize

DEFAULT_PREFIXES = (8, 16, 32, 48, 64, 96, 128, 192)
ID_TAG = b"peerlight-adapter-id/2\0"  # version 2 of the adapter id recipe (docs/protocol.md)
FORMAT = "peerlight-ordering-adapter/1"


class AdapterError(Exception):
    """An adapter file that cannot be used (corrupt, for another model, wrong shape)."""


def _gelu(x: np.ndarray) -> np.ndarray:
    # The tanh form, as in training (torch.nn.GELU(approximate="tanh")).
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


@dataclass
class Adapter:
    base_model_id: str
    rotation: np.ndarray  # (d_in, D)
    hidden_weight: np.ndarray  # (d_in, h) — may have h = 0 (a pure PCA adapter)
    hidden_bias: np.ndarray  # (h,)
    out_weight: np.ndarray  # (h, d_in)
    out_bias: np.ndarray  # (d_in,)
    info: dict = field(default_factory=dict)  # how it was made: corpus, seed, steps, figures

    @property
    def input_dimension(self) -> int:
        return self.rotation.shape[0]

    @property
    def dimension(self) -> int:
        return self.rotation.shape[1]

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Base vectors (n, d_in) -> normalised importance-ordered vectors (n, D)."""
        x = np.asarray(vectors, dtype=np.float32).reshape(-1, self.input_dimension)
        residual = x
        if self.hidden_weight.shape[1]:
            residual = residual + _gelu(x @ self.hidden_weight + self.hidden_bias) @ self.out_weight + self.out_bias
        return normalize(residual @ self.rotation)

    # --- identity and files ---

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        header = {"format": FORMAT, "base_model_id": self.base_model_id, "info": self.info}
        np.savez(
            buffer,
            header=np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8),
            rotation=self.rotation.astype(np.float32),
            hidden_weight=self.hidden_weight.astype(np.float32),
            hidden_bias=self.hidden_bias.astype(np.float32),
            out_weight=self.out_weight.astype(np.float32),
            out_bias=self.out_bias.astype(np.float32),
        )
        return buffer.getvalue()

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The weights, in the order the adapter id hashes them."""
        return (self.rotation, self.hidden_weight, self.hidden_bias, self.out_weight, self.out_bias)

    def id_bytes(self) -> bytes:
        """What the adapter id hashes (``docs/protocol.md``, "The adapter id"): a tag, the base model
        id, then each array's dimensions (little-endian u32) and values (little-endian float32,
        row-major). Every implementation can write these bytes; the header's ``info`` is not in them."""
        parts = [ID_TAG, self.base_model_id.encode("utf-8"), b"\0"]
        for array in self.arrays():
            values = np.ascontiguousarray(array, dtype="<f4")
            parts.append(struct.pack(f"<{1 + values.ndim}I", values.ndim, *values.shape))
            parts.append(values.tobytes())
        return b"".join(parts)

    @property
    def adapter_id(self) -> str:
        """BLAKE3 of :meth:`id_bytes`: changes whenever any weight changes."""
        import blake3

        return blake3.blake3(self.id_bytes()).hexdigest()

    @property
    def legacy_adapter_id(self) -> str:
        """The id under version 1 of the recipe (each shape as Python writes a tuple, parts joined by
        NUL bytes): kept only to rename the ids a node stored before version 2."""
        import blake3

        parts = [self.base_model_id.encode()]
        for array in self.arrays():
            parts += [str(array.shape).encode(), np.ascontiguousarray(array, dtype="<f4").tobytes()]
        return blake3.blake3(b"\0".join(parts)).hexdigest()

    @property
    def space_id(self) -> str:
        """The space its vectors live in: its own model id, or the space an alignment joined."""
        return self.info.get("space") or self.model_id

    @property
    def model_id(self) -> str:
        return self.model_id_for(self.adapter_id)

    def model_id_for(self, adapter_id: str) -> str:
        """The model id of this adapter's vectors, were its id ``adapter_id``."""
        name = self.base_model_id.split(":")[1] if self.base_model_id.count(":") >= 2 else self.base_model_id
        return make_model_id(ORDERED, name, f"{self.base_model_id}:{adapter_id}", self.dimension)

    @classmethod
    def load(cls, path: Path) -> Adapter:
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(bytes(data["header"]).decode())
                arrays = {k: data[k] for k in ("rotation", "hidden_weight", "hidden_bias", "out_weight", "out_bias")}
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise AdapterError(f"{path}: not a readable adapter: {exc}") from None
        if header.get("format") != FORMAT:
            raise AdapterError(f"{path}: unknown adapter format {header.get('format')!r}")
        adapter = cls(header["base_model_id"], info=header.get("info", {}), **arrays)
        d_in, hidden = adapter.rotation.shape[0], adapter.hidden_weight.shape[1]
        shapes_ok = (
            adapter.hidden_weight.shape == (d_in, hidden)
            and adapter.hidden_bias.shape == (hidden,)
            and adapter.out_weight.shape == (hidden, d_in)
            and adapter.out_bias.shape == (d_in,)
        )
        if not shapes_ok:
            raise AdapterError(f"{path}: inconsistent adapter shapes")
        return adapter


def pca_adapter(base_model_id: str, vectors: np.ndarray, dimension: int | None = None) -> Adapter:
    """The (uncentred) PCA rotation of a corpus as an untrained adapter: components by energy."""
    x = np.asarray(vectors, dtype=np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(x.T @ x / len(x))
    order = np.argsort(eigenvalues)[::-1]
    d_in = x.shape[1]
    rotation = eigenvectors[:, order][:, : dimension or d_in]
    return Adapter(
        base_model_id,
        rotation.astype(np.float32),
        np.zeros((d_in, 0), np.float32),
        np.zeros(0, np.float32),
        np.zeros((0, d_in), np.float32),
        np.zeros(d_in, np.float32),
        info={"kind": "pca", "corpus_size": len(x)},
    )
