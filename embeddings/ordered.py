"""An encoder whose vectors are importance-ordered: a base encoder followed by its adapter.

It is an :class:`~.base.Encoder` like any other, so the node stores, searches and (later)
shares ordered vectors without knowing how they were made; its ``model_id`` is the
adapter's, which hashes the base model id, the adapter weights and the dimension.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .adapters import Adapter, AdapterError


class OrderedEncoder:
    def __init__(self, base: Any, adapter: Adapter) -> None:
        if adapter.base_model_id != base.model_id:
            raise AdapterError(f"the adapter is for {adapter.base_model_id}, not {base.model_id}")
        self.base = base
        self.adapter = adapter
        self.model_id = adapter.model_id
        self.dimension = adapter.dimension
        self.space = base.space
        self.spec = base.spec
        self.weights = base.weights

    def __getattr__(self, name: str) -> Any:
        # Media-specific helpers of the base encoder (preprocess, input_size, ...) stay available.
        return getattr(self.base, name)

    def prepare(self, source: Any) -> Any:
        return self.base.prepare(source)

    def encode(self, batch: list[Any], *args: Any) -> np.ndarray:
        return self.adapter.apply(self.base.encode(batch, *args))

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.adapter.apply(self.base.encode_queries(texts))
