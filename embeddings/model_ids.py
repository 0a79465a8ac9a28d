"""Model ids: which vector space a vector lives in.

Vectors are only comparable when produced by the same weights, so every stored or shared
vector carries the id of its model. The id is a hash of everything that determines the
vectors (encoder kind, architecture, the identity of the weights, dimension), prefixed by a
readable name so logs and ``peerlight models`` stay understandable.
"""

from __future__ import annotations

import hashlib
import re


ORDERED = "ordered"  # the kind of model ids whose vectors an ordering adapter produced


def is_ordered(model_id: str) -> bool:
    """Whether the vectors of this model id are importance-ordered (their prefixes are meaningful)."""
    return model_id.startswith(ORDERED + ":")


def make_model_id(kind: str, name: str, weights: str, dimension: int) -> str:
    digest = hashlib.sha256(f"{kind}\0{name}\0{weights}\0{dimension}".encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9.]+", "-", name.rsplit("/", 1)[-1]).strip("-")
    return f"{kind}:{readable}:{digest}"


def file_fingerprint(path: str) -> str:
    """A content hash of a weights file or folder (BLAKE3), so renamed copies keep their id."""
    import os

    import blake3

    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                hasher.update(os.path.relpath(full, path).encode() + b"\0")
                if os.path.getsize(full):
                    hasher.update_mmap(full)
    else:
        hasher.update_mmap(path)
    return hasher.hexdigest()


HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def hub_weights_fingerprint(folder: str) -> str:
    """The content fingerprint of a Hugging Face model folder's weights.

    The single weights file when there is one (as before, so existing ids stay), else every
    ``*.safetensors`` (or ``*.bin``) shard in name order, else the whole folder: never where
    the folder is or what it is called.
    """
    import glob
    import os

    for name in HUB_WEIGHT_FILES:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return file_fingerprint(candidate)
    shards = sorted(glob.glob(os.path.join(folder, "*.safetensors"))) or sorted(glob.glob(os.path.join(folder, "*.bin")))
    if shards:
        return hashlib.sha256("\0".join(file_fingerprint(shard) for shard in shards).encode()).hexdigest()
    return file_fingerprint(folder)
