"""Which adapter the node trained for a base model: its "default" where none ships with Peerlight.

``adapters/defaults.json`` maps base model ids to adapter ids; the adapters themselves are
``adapters/<adapter id>.npz``. Written atomically, read when a model loads.
"""

from __future__ import annotations

import json
from pathlib import Path

from .files import write_atomic

FILE = "defaults.json"


def node_default_adapter(adapters_dir: Path, base_model_id: str) -> Path | None:
    """The adapter file the node trained for ``base_model_id``, if any."""
    adapter_id = _read(adapters_dir).get(base_model_id)
    if adapter_id is None:
        return None
    path = adapters_dir / f"{adapter_id}.npz"
    return path if path.exists() else None


def set_node_default_adapter(adapters_dir: Path, base_model_id: str, adapter_id: str) -> None:
    defaults = _read(adapters_dir) | {base_model_id: adapter_id}
    write_atomic(adapters_dir / FILE, json.dumps(defaults, indent=1, sort_keys=True).encode())


def _read(adapters_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((adapters_dir / FILE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # unreadable: as if none were trained (a new one is trained and written)
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
