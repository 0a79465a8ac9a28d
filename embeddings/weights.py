"""Finding model weights on this machine, without touching the network unless allowed.

Order: an explicit local checkpoint, then the library's own caches (Hugging Face hub cache,
open_clip's URL cache), then a package that ships the weights, and only then a download —
and only if the user allowed downloads. Anything else is :class:`WeightsMissing`, with
the places that were searched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import WeightsMissing


@dataclass(frozen=True)
class Weights:
    """Where a model's weights come from. ``path`` is None for random or to-be-downloaded weights."""

    source: str  # checkpoint | hf-cache | clip-cache | package | download | random
    path: str | None
    description: str


@dataclass(frozen=True)
class HubModelSpec:
    """A model known by its Hugging Face Hub name, or loaded from a local folder instead."""

    name: str
    checkpoint: Path | None = None
    device: str = "cpu"
    allow_download: bool = False
    cache_dir: str | None = None


def hf_cached_file(repo_id: str, filenames: tuple[str, ...], cache_dir: str | None) -> str | None:
    """A file of a Hugging Face repo if it is already in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def hf_cached_snapshot(repo_id: str, marker: str, cache_dir: str | None) -> str | None:
    """The local snapshot folder of a Hugging Face repo, if ``marker`` (a file in it) is cached."""
    found = hf_cached_file(repo_id, (marker,), cache_dir)
    return str(Path(found).parent) if found else None


def hub_folder(weights: Weights, spec: HubModelSpec) -> str:
    """The local folder of a Hub model's weights, downloading the snapshot first when that is the source.

    Loading always goes through a local folder, so the model id can be taken from its content.
    """
    if weights.path:
        return weights.path
    from huggingface_hub import snapshot_download

    # The PyTorch weights and their configuration, not every other format a repository ships.
    return snapshot_download(spec.name, cache_dir=spec.cache_dir, ignore_patterns=_OTHER_FORMATS)


_OTHER_FORMATS = ["onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot", "tf_model*", "flax_model*", "rust_model*"]


def require_local_path(path: Path, what: str) -> Weights:
    if not path.exists():
        raise WeightsMissing(f"{what}: checkpoint {path} does not exist")
    return Weights("checkpoint", str(path), f"local checkpoint {path}")


def missing(what: str, searched: list[str], hint: str) -> WeightsMissing:
    return WeightsMissing(f"{what}: weights not found (looked in: {'; '.join(searched)}). {hint}")
