"""open_clip: images, video frames and text queries in one shared vector space.

Weights come from a local checkpoint, the Hugging Face cache or open_clip's own cache for a
pretrained tag (e.g. ``ViT-B-32`` / ``laion2b_s34b_b79k``), a download if allowed, or — for
tests and trying out the pipeline — ``pretrained = "random"``: untrained weights drawn with
a fixed seed, so every node gets the same ones.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import WeightsMissing
from .model_ids import file_fingerprint, make_model_id
from .vectors import normalize
from .weights import Weights, hf_cached_file, missing, require_local_path

RANDOM = "random"
RANDOM_SEED = 0
SPACE = "clip"


@dataclass(frozen=True)
class ClipSpec:
    name: str
    pretrained: str
    checkpoint: Path | None = None
    device: str = "cpu"
    allow_download: bool = False
    cache_dir: str | None = None


def resolve_clip_weights(spec: ClipSpec) -> Weights:
    import open_clip

    what = f"open_clip {spec.name}"
    if spec.name not in open_clip.list_models():
        raise WeightsMissing(f"{what}: unknown open_clip architecture {spec.name!r}")
    if spec.checkpoint is not None:
        return require_local_path(spec.checkpoint, what)
    if spec.pretrained == RANDOM:
        return Weights("random", None, f"random weights (seed {RANDOM_SEED}); for tests only")
    cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(spec.name)) or "none"
        raise WeightsMissing(f"{what}: unknown pretrained tag {spec.pretrained!r} (known: {tags})")
    searched = []
    if cfg.get("hf_hub"):
        repo_id, filename = os.path.split(cfg["hf_hub"])
        names = (filename,) if filename else ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
        found = hf_cached_file(repo_id, names, spec.cache_dir)
        if found:
            return Weights("hf-cache", found, f"Hugging Face cache: {found}")
        searched.append(f"Hugging Face cache ({repo_id})")
    if cfg.get("url"):
        cache = Path(spec.cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        if cache.is_file():
            return Weights("clip-cache", str(cache), f"open_clip cache: {cache}")
        searched.append(str(cache))
    if spec.allow_download:
        return Weights("download", None, f"download of {spec.name}/{spec.pretrained}")
    raise missing(
        what,
        searched,
        "Put a checkpoint file in place and set image_model.checkpoint, or set models.allow_download = true.",
    )


def download_clip_weights(spec: ClipSpec) -> str:
    """Fetch a pretrained tag's weights file into the cache (allowed downloads only); its local path."""
    import open_clip
    from open_clip.pretrained import download_pretrained

    path = download_pretrained(open_clip.get_pretrained_cfg(spec.name, spec.pretrained), cache_dir=spec.cache_dir)
    if not path or not os.path.isfile(path):
        raise WeightsMissing(f"open_clip {spec.name}: the download of {spec.pretrained!r} gave no weights file")
    return path


class ClipModel:
    """A loaded open_clip model (an :class:`~.base.Encoder`); encoding is serialised by a lock."""

    space = SPACE

    def __init__(self, spec: ClipSpec, weights: Weights) -> None:
        import open_clip
        import torch

        self.spec = spec
        self.weights = weights
        if weights.source == "random":
            generator_state = torch.random.get_rng_state()
            torch.manual_seed(RANDOM_SEED)
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(spec.name, pretrained=None)
            finally:
                torch.random.set_rng_state(generator_state)
        else:
            path = weights.path or download_clip_weights(spec)
            model, _, preprocess = open_clip.create_model_and_transforms(spec.name, pretrained=path, cache_dir=spec.cache_dir)
        self._model = model.eval().to(spec.device)
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(spec.name)
        self._lock = threading.Lock()
        with torch.no_grad():
            probe = self._model.encode_text(self._tokenizer(["probe"]).to(spec.device))
        self.dimension = int(probe.shape[-1])
        size = getattr(self._model.visual, "image_size", 224)
        self.input_size = int(max(size) if isinstance(size, (tuple, list)) else size)
        # From the weights' content only: downloaded, cached or a local file, the same weights get the same id.
        fingerprint = f"random:{spec.pretrained}:{RANDOM_SEED}" if weights.source == "random" else file_fingerprint(path)
        self.model_id = make_model_id("clip", spec.name, fingerprint, self.dimension)

    def preprocess(self, image: Any) -> Any:
        """PIL image -> model input tensor. Safe to call from worker threads in parallel."""
        return self._preprocess(image)

    def prepare(self, path: str) -> Any:
        """Decode just large enough for the model's input (JPEG draft mode makes that cheap)."""
        from .media import load_image

        return self._preprocess(load_image(path, min_side=self.input_size))

    def encode(self, tensors: list[Any]) -> np.ndarray:
        """Preprocessed images (from ``prepare`` or ``preprocess``) -> vectors."""
        import torch

        with self._lock, torch.inference_mode():
            batch = torch.stack(tensors).to(self.spec.device)
            return normalize(self._model.encode_image(batch).float().cpu().numpy())

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        import torch

        with self._lock, torch.inference_mode():
            tokens = self._tokenizer(texts).to(self.spec.device)
            return normalize(self._model.encode_text(tokens).float().cpu().numpy())
