"""The daemon's embedding models: configured from ``node.toml``, loaded lazily, unloaded when idle.

Three roles: ``image`` (open_clip: images, video frames and the queries that search them),
``text`` (sentence-transformers: documents, and audio tags while CLAP is absent) and
``audio`` (CLAP). Loading runs in a worker thread. Missing weights are remembered for
``models.retry_missing_seconds`` so the node does not search the disk on every item, and
are never fatal: the items wait as "embedding pending".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .adapter_registry import node_default_adapter
from .config import Config

log = logging.getLogger("peerlight.models")

ROLES = ("image", "text", "audio")


class ModelUnavailable(Exception):
    """The model of a role cannot be used now; ``reason`` says why (for status and logs)."""


@dataclass
class ModelInfo:
    role: str
    name: str
    state: str  # unloaded | loading | loaded | missing | failed
    weights: str | None = None
    model_id: str | None = None
    dimension: int | None = None
    space: str | None = None
    reason: str | None = None
    base_model_id: str | None = None  # set when an ordering adapter follows the base encoder
    adapter_id: str | None = None
    adapter_training: dict[str, Any] | None = None  # progress while the node trains this model's adapter

    def to_wire(self) -> dict[str, Any]:
        return dict(vars(self))


class ModelSlot:
    """One role's model: its loader, the loaded instance, and why it is unavailable if it is."""

    def __init__(self, role: str, name: str, space: str, load: Callable[[], Any], retry_after: float) -> None:
        self.role, self.name, self.space = role, name, space
        self._load = load
        self._retry_after = retry_after
        self.model: Any = None
        self.last_used = 0.0
        self.failure: str | None = None
        self.failure_state = "failed"
        self._failed_at = -float("inf")
        self._loading: trio.Event | None = None  # set when the running load ends
        self.loading_since: float | None = None
        self.known_id: str | None = None
        self.known_dimension: int | None = None
        self.weights: str | None = None
        self.base_id: str | None = None
        self.adapter_id: str | None = None
        self.adapter_training: Any = None  # a TrainingProgress while the node trains an adapter for it

    async def get(self, loader: trio.Nursery | None = None) -> Any:
        """The loaded model, loading it first if needed; :class:`ModelUnavailable` if it cannot be.

        With ``loader`` (the models service's nursery), the load runs there, not in the caller:
        a caller that gives up (a client that disconnects) leaves it running for the next one,
        and every caller meanwhile waits for the same load.
        """
        while True:
            if self.model is not None:
                self.last_used = time.monotonic()
                return self.model
            if self._loading is None:
                if self.failure and time.monotonic() - self._failed_at < self._retry_after:
                    raise ModelUnavailable(self.failure)
                self._loading = trio.Event()
                if loader is None:
                    await self._load_now()
                else:
                    loader.start_soon(self._load_now)
            loading = self._loading
            if loading is not None:
                await loading.wait()
            if self.model is None and self.failure:
                raise ModelUnavailable(self.failure)

    async def _load_now(self) -> None:
        log.info("loading model", extra={"role": self.role, "model": self.name})
        started = time.monotonic()
        self.loading_since = time.time()
        try:
            # Abandoned on cancellation: a shutdown does not wait for a load (a cold one takes
            # seconds, one from a stalled disk forever). The thread finishes or dies with the
            # process, which exits without interpreter teardown (see __main__), so a thread still
            # inside torch cannot abort it.
            model = await trio.to_thread.run_sync(self._load, abandon_on_cancel=True)
        except trio.Cancelled:
            # Its waiters are told, instead of starting a load of their own; the next use loads afresh.
            self.failure, self._failed_at = "the load was cancelled (the daemon is stopping)", -float("inf")
            raise
        except Exception as exc:  # WeightsMissing, or anything a model library raises
            self.failure = str(exc) if _is_missing(exc) else f"{type(exc).__name__}: {exc}"
            self.failure_state = "missing" if _is_missing(exc) else "failed"
            self._failed_at = time.monotonic()
            (log.warning if _is_missing(exc) else log.exception)(
                "model unavailable", extra={"role": self.role, "reason": self.failure}
            )
        else:
            self.model, self.failure = model, None
            self.known_id, self.known_dimension = model.model_id, model.dimension
            self.weights = model.weights.description
            adapter = getattr(model, "adapter", None)
            self.base_id = model.base.model_id if adapter else None
            self.adapter_id = adapter.adapter_id if adapter else None
            self.last_used = time.monotonic()
            log.info(
                "model loaded",
                extra={"role": self.role, "model_id": self.known_id, "seconds": round(time.monotonic() - started, 2)},
            )
        finally:
            loading, self._loading, self.loading_since = self._loading, None, None
            if loading is not None:
                loading.set()

    async def reload(self) -> None:
        """Drop the loaded model so the next use loads it again (e.g. with a newly trained adapter)."""
        while self._loading is not None:
            await self._loading.wait()
        self.model = None
        self.forget_failure()

    def forget_failure(self) -> None:
        self.failure, self._failed_at = None, -float("inf")

    def unload_if_idle(self, idle_seconds: float) -> None:
        if self.model is not None and time.monotonic() - self.last_used > idle_seconds and self._loading is None:
            log.info("unloading idle model", extra={"role": self.role})
            self.model = None

    def info(self) -> ModelInfo:
        if self.model is not None:
            state = "loaded"
        elif self._loading is not None:
            state = "loading"
        elif self.failure:
            state = self.failure_state
        else:
            state = "unloaded"
        return ModelInfo(
            self.role,
            self.name,
            state,
            self.weights,
            self.known_id,
            self.known_dimension,
            self.space,
            self.failure,
            self.base_id,
            self.adapter_id,
            self.adapter_training.to_wire() if self.adapter_training is not None else None,
        )


def _is_missing(exc: BaseException) -> bool:
    from peerlight.embeddings.errors import WeightsMissing

    return isinstance(exc, WeightsMissing)


def _device(configured: str) -> str:
    if configured != "auto":
        return configured
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def with_adapter(base: Any, choice: str, adapters_dir: Path | None) -> Any:
    """The base encoder followed by the configured ordering adapter (or alone, for "none")."""
    from peerlight.embeddings import default_adapters
    from peerlight.embeddings.adapters import Adapter, AdapterError
    from peerlight.embeddings.ordered import OrderedEncoder

    if choice == "none":
        return base
    if choice == "default":
        path = default_adapters.file_for(base.model_id)
        if not path.exists():
            trained = node_default_adapter(adapters_dir, base.model_id) if adapters_dir is not None else None
            if trained is None:
                log.info(
                    "no adapter ships for this model and none is trained yet; its vectors are stored unordered",
                    extra={"model_id": base.model_id},
                )
                return base
            path = trained
    elif choice.endswith(".npz") or "/" in choice:
        path = Path(choice)
    elif adapters_dir is not None:
        path = adapters_dir / f"{choice}.npz"
    else:
        raise AdapterError(f"adapter {choice!r}: no adapters folder to look in")
    if not path.exists():
        raise AdapterError(f"adapter {path} does not exist")
    return OrderedEncoder(base, Adapter.load(path))


class ModelManager:
    def __init__(
        self,
        config: Config,
        data_dir_resolve: Callable[[Any], Any] = lambda p: p,
        adapters_dir: Path | None = None,
    ) -> None:
        self._config = config
        models = config.models
        cache_dir = str(data_dir_resolve(models.cache_dir)) if models.cache_dir else None

        def image() -> Any:
            from peerlight.embeddings.clip import ClipModel, ClipSpec, resolve_clip_weights

            opts = config.image_model
            checkpoint = data_dir_resolve(opts.checkpoint) if opts.checkpoint else None
            spec = ClipSpec(opts.name, opts.pretrained, checkpoint, _device(models.device), models.allow_download, cache_dir)
            return with_adapter(ClipModel(spec, resolve_clip_weights(spec)), opts.adapter, adapters_dir)

        def text() -> Any:
            from peerlight.embeddings.sentence import SentenceModel, resolve_sentence_weights
            from peerlight.embeddings.weights import HubModelSpec

            opts = config.text_model
            checkpoint = data_dir_resolve(opts.checkpoint) if opts.checkpoint else None
            spec = HubModelSpec(opts.name, checkpoint, _device(models.device), models.allow_download, cache_dir)
            return with_adapter(SentenceModel(spec, resolve_sentence_weights(spec)), opts.adapter, adapters_dir)

        def audio() -> Any:
            from peerlight.embeddings.clap import ClapModel, resolve_clap_weights
            from peerlight.embeddings.errors import WeightsMissing
            from peerlight.embeddings.weights import HubModelSpec

            opts = config.audio_model
            if not opts.enabled:
                raise WeightsMissing("CLAP is disabled (audio_model.enabled = false); audio is embedded from its tags")
            checkpoint = data_dir_resolve(opts.checkpoint) if opts.checkpoint else None
            spec = HubModelSpec(opts.name, checkpoint, _device(models.device), models.allow_download, cache_dir)
            return with_adapter(ClapModel(spec, resolve_clap_weights(spec)), opts.adapter, adapters_dir)

        retry = models.retry_missing_seconds
        self._loader: trio.Nursery | None = None  # the models service's nursery, while it runs
        self.slots = {
            "image": ModelSlot("image", f"{config.image_model.name} ({config.image_model.pretrained})", "clip", image, retry),
            "text": ModelSlot("text", config.text_model.name, "text", text, retry),
            "audio": ModelSlot("audio", config.audio_model.name, "audio", audio, retry),
        }

    async def get(self, role: str) -> Any:
        return await self.slots[role].get(self._loader)

    async def check_all(self) -> list[ModelInfo]:
        """Try to load every model now (clearing remembered failures): what ``peerlight models`` shows."""
        for slot in self.slots.values():
            slot.forget_failure()
            try:
                await slot.get(self._loader)
            except ModelUnavailable:
                pass
        return self.describe()

    def describe(self) -> list[ModelInfo]:
        return [slot.info() for slot in self.slots.values()]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the models' loads, and unload models that have been idle for ``models.idle_unload_seconds``."""
        idle = self._config.models.idle_unload_seconds
        try:
            async with trio.open_nursery() as loader:
                self._loader = loader
                task_status.started()
                while True:
                    await trio.sleep(min(idle / 2, 30))
                    for slot in self.slots.values():
                        slot.unload_if_idle(idle)
        finally:
            self._loader = None
