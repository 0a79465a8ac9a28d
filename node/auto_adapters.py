"""The node trains ordering adapters itself for models that have none shipped.

Peerlight ships an adapter for each default encoder whose weights were at hand when the
package was built (the text model). For any other model with real weights — open_clip,
CLAP, a user's own checkpoint — the node first stores its base (unordered) vectors; once
``models.adapter_training_vectors`` of them are stored, it trains an adapter from them in
the background, records it as the node's default for that base model, and **converts** the
stored vectors by applying the adapter (no media is decoded or encoded again). The model
is then reloaded with its adapter: from here on its vectors are ordered, searched through
the prefix funnel and ready to be shared as prefixes.

A failed training is logged and not retried until the daemon restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from peerlight.embeddings.adapter_training import TrainingOptions, train_adapter
from peerlight.embeddings.adapters import Adapter

from .adapter_registry import set_node_default_adapter
from .adapters import MAX_CORPUS, TrainingProgress, train_in_worker
from .catalog import embeddings as store
from .catalog.database import Catalog
from .config import Config
from .files import write_atomic
from .index.conversion import convert_base_vectors
from .models import ModelManager, ModelSlot

log = logging.getLogger("peerlight.adapters")

CHECK_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True)
class AutoAdapterSettings:
    enabled: bool
    min_vectors: int
    steps: int

    @classmethod
    def from_config(cls, config: Config) -> AutoAdapterSettings:
        m = config.models
        return cls(m.train_adapters, m.adapter_training_vectors, m.adapter_training_steps)


class AutoAdapters:
    def __init__(
        self,
        catalog: Catalog,
        models: ModelManager,
        adapters_dir: Path,
        adapter_choice: Callable[[str], str],
        settings: AutoAdapterSettings,
        on_switched: Callable[[], None] = lambda: None,
    ) -> None:
        self._catalog = catalog
        self._models = models
        self._adapters_dir = adapters_dir
        self._adapter_choice = adapter_choice  # role -> its configured ``adapter`` option
        self._settings = settings
        self._on_switched = on_switched
        self._given_up: set[str] = set()  # base model ids whose training failed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if not self._settings.enabled:
            return
        while True:
            await trio.sleep(CHECK_INTERVAL_SECONDS)
            for role, slot in self._models.slots.items():
                await self.consider(role, slot)

    async def consider(self, role: str, slot: ModelSlot) -> bool:
        """Train, convert and switch if this role's loaded model wants a node-trained adapter; True if it did."""
        model = slot.model
        if model is None:
            return False
        if getattr(model, "adapter", None) is not None or self._adapter_choice(role) != "default":
            return False
        base_id = model.model_id
        if base_id in self._given_up:
            return False
        count = await self._catalog.read(partial(store.vector_count, model_id=base_id))
        if count < self._settings.min_vectors:
            return False
        progress = TrainingProgress()
        slot.adapter_training = progress
        try:
            adapter = await self._train(base_id, progress)
            # Recorded before converting: a daemon stopped mid-way loads the model with its adapter
            # next time, and the embedder converts what is left.
            await trio.to_thread.run_sync(set_node_default_adapter, self._adapters_dir, base_id, adapter.adapter_id)
            progress.phase = "converting stored vectors"
            converted = await convert_base_vectors(self._catalog, base_id, adapter)
            await slot.reload()
            log.info(
                "ordering adapter trained and applied",
                extra={"role": role, "base_model_id": base_id, "model_id": adapter.model_id, "converted_vectors": converted},
            )
        except Exception:
            self._given_up.add(base_id)
            log.exception("training an ordering adapter failed; vectors stay unordered", extra={"role": role})
            return False
        finally:
            slot.adapter_training = None
        self._on_switched()
        return True

    async def _train(self, base_id: str, progress: TrainingProgress) -> Adapter:
        vectors = await self._catalog.read(partial(store.model_vectors, model_id=base_id, limit=MAX_CORPUS))
        options = TrainingOptions(steps=self._settings.steps)
        adapter = await train_in_worker(partial(train_adapter, base_id, vectors, options), options.steps, progress)
        adapter.info["corpus"] = f"{len(vectors)} stored vectors (trained by the node)"
        path = self._adapters_dir / f"{adapter.adapter_id}.npz"
        await trio.to_thread.run_sync(partial(write_atomic, path, adapter.to_bytes(), mode=0o644))
        return adapter
