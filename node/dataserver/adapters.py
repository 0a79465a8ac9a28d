"""Ordering adapters by the model id they produce: what the adapter protocol serves and verifies.

A share's ordered vectors live in the space of ``base model + adapter``; a peer with the
same base model but another adapter (or none) can join that space for a query by applying
the share's adapter to its own base vector. An adapter proves itself: its model id is a
hash of its base model id, its weights and its dimension, so a client recomputes it from
the bytes it received and rejects an adapter that does not produce the id it asked for.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from peerlight.embeddings import default_adapters
from peerlight.embeddings.adapters import FORMAT, Adapter, AdapterError

log = logging.getLogger("peerlight.dataserver")

MAX_ADAPTER_BYTES = 32 * 1024 * 1024  # the file, as sent
MAX_ADAPTER_INFLATED = 64 * 1024 * 1024  # its arrays, inflated (a 384-wide adapter is ~2 MB)
MAX_ADAPTER_MEMBERS = 8


class AdapterFiles:
    """The adapters this node has (shipped ones and its own), found by the model id they produce."""

    def __init__(self, folders: list[Path]) -> None:
        self._folders = folders
        self._by_model: dict[str, Path] = {}
        self._seen: dict[Path, float] = {}

    def find(self, model_id: str) -> bytes | None:
        """The adapter file producing ``model_id``, as bytes (blocking: run in a worker thread)."""
        if model_id not in self._by_model:
            self._scan()
        path = self._by_model.get(model_id)
        return path.read_bytes() if path is not None else None

    def _scan(self) -> None:
        for folder in self._folders:
            for path in sorted(folder.glob("*.npz")) if folder.is_dir() else ():
                try:
                    mtime = path.stat().st_mtime
                    if self._seen.get(path) == mtime:
                        continue
                    self._seen[path] = mtime
                    self._by_model[Adapter.load(path).model_id] = path
                except (OSError, AdapterError) as exc:
                    log.debug("not an adapter: %s (%s)", path, exc)


def adapter_folders(node_adapters: Path) -> list[Path]:
    return [default_adapters.FOLDER, node_adapters]


def _check_inflated_size(data: bytes) -> None:
    """Refuse a zip bomb before inflating it: the members' declared sizes bound what zipfile inflates
    (it stops reading a member at its declared size), so they are checked first."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise AdapterError(f"not an adapter file: {exc}") from None
    if len(members) > MAX_ADAPTER_MEMBERS:
        raise AdapterError(f"an adapter file of {len(members)} members")
    inflated = sum(member.file_size for member in members)
    if inflated > MAX_ADAPTER_INFLATED:
        raise AdapterError(f"an adapter file that inflates to {inflated:,} bytes (at most {MAX_ADAPTER_INFLATED:,})")


def verified_adapter(data: bytes, model_id: str) -> Adapter:
    """The adapter in ``data`` if it produces ``model_id``; AdapterError otherwise (hostile bytes included)."""
    if len(data) > MAX_ADAPTER_BYTES:
        raise AdapterError("an adapter larger than 32 MiB")
    _check_inflated_size(data)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            header = json.loads(bytes(arrays["header"]).decode())
            parts = {k: np.asarray(arrays[k], dtype=np.float32) for k in ("rotation", "hidden_weight", "hidden_bias", "out_weight", "out_bias")}
    except Exception as exc:  # np.load on hostile bytes raises many kinds
        raise AdapterError(f"not an adapter file: {type(exc).__name__}: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("base_model_id"), str):
        raise AdapterError("not an adapter of a known format")
    d_in, hidden = parts["rotation"].shape[0], parts["hidden_weight"].shape[1] if parts["hidden_weight"].ndim == 2 else -1
    shapes = (
        parts["rotation"].ndim == 2
        and parts["hidden_weight"].shape == (d_in, hidden)
        and parts["hidden_bias"].shape == (hidden,)
        and parts["out_weight"].shape == (hidden, d_in)
        and parts["out_bias"].shape == (d_in,)
    )
    if sum(p.nbytes for p in parts.values()) > MAX_ADAPTER_INFLATED:
        raise AdapterError("an adapter larger than 64 MiB inflated")
    if not shapes or not all(np.isfinite(p).all() for p in parts.values()):
        raise AdapterError("an adapter with inconsistent shapes or values")
    info = header.get("info") if isinstance(header.get("info"), dict) else {}
    adapter = Adapter(header["base_model_id"], info=info, **parts)
    if adapter.model_id != model_id:
        raise AdapterError(f"the adapter produces {adapter.model_id}, not {model_id}")
    return adapter
