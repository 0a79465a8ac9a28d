"""``index.*`` and ``models.*``: keeping the index current, and the models behind it."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..catalog import libraries
from ..catalog.database import Catalog
from ..catalog.items import item_counts, list_problems
from ..callers import Caller
from ..control.params import Params
from ..control.protocol import InvalidParams, NotFound, Unavailable
from ..control.server import Emit, Handler, Streaming, local_only
from ..pathnames import display
from ..threads import run_io

ROLES = ("image", "text", "audio")
FIT_SAMPLE = 8000  # stored vectors an ordering is judged on (about a second of work)

if TYPE_CHECKING:
    from ..index.embedder import Embedder
    from ..index.indexer import Indexer
    from ..models import ModelManager


class IndexMethods:
    def __init__(self, catalog: Catalog, indexer: Indexer, embedder: Embedder) -> None:
        self._catalog = catalog
        self._indexer = indexer
        self._embedder = embedder

    def methods(self) -> dict[str, Handler | Streaming]:
        methods: dict[str, Handler | Streaming] = {
            "index.run": self.run,
            "index.status": self.status,
            "index.wait": Streaming(self.wait),
            "index.problems": self.problems,
        }
        return {name: local_only(method) for name, method in methods.items()}

    async def wait(self, raw: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        """Stream the index status as progress events until scanning and embedding are done.

        Each check reads in-memory progress and the catalog's trigger-kept counters (a few
        rows), and an event goes out only when something changed; the server cancels the
        wait as soon as its client disconnects.
        """
        params = Params(raw)
        interval = params.number("interval", 0.25, min=0.05, max=10)
        params.done()
        last = None
        while True:
            status = await self.status({}, caller)
            if not status["busy"]:
                return status
            if status != last:
                await emit(status)
                last = status
            await trio.sleep(interval)

    async def problems(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Files that could not be indexed, with why, and items whose embedding failed."""
        params = Params(raw)
        include_unsupported = params.flag("all", False)
        limit = params.number("limit", 1000, min=1, max=100_000, integer=True)
        params.done()
        return await self._catalog.read(partial(list_problems, include_unsupported=include_unsupported, limit=limit))

    async def run(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Ask for a rescan of one library (id, path or name) or all; returns at once."""
        params = Params(raw)
        key = params.key("library", None)
        params.done()
        library_id = None
        if key is not None:
            try:
                library_id = (await self._catalog.read(partial(libraries.find_library, key=key))).id
            except libraries.LibraryNotFound as exc:
                raise NotFound(str(exc)) from None
        self._indexer.request_scan(library_id)
        return {"requested": True, "library_id": library_id}

    async def status(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        Params(raw).done()
        counts = await self._catalog.read(item_counts)
        scanning = self._indexer.progress.busy or self._indexer.scan_requested
        embedding = self._embedder.pass_running or self._embedder.pass_requested
        return {
            "busy": scanning or embedding,
            "scanning": scanning,
            "embedding": embedding,
            "libraries": self._indexer.progress.to_wire(),
            "embeddings": self._embedder.progress.to_wire(),
            **counts,
        }


class ModelMethods:
    def __init__(
        self,
        models: ModelManager,
        embedder: Embedder,
        catalog: Catalog,
        adapters_dir: Path,
        prefix_for: Callable[[int], int],
    ) -> None:
        self._models = models
        self._embedder = embedder
        self._catalog = catalog
        self._adapters_dir = adapters_dir
        self._prefix_for = prefix_for  # the prefix length the node's searches use, for a dimension

    def methods(self) -> dict[str, Handler | Streaming]:
        return {
            "models.list": local_only(self.list),
            "models.train_adapter": local_only(Streaming(self.train_adapter)),
            "models.ordering_fit": local_only(self.ordering_fit),
        }

    async def ordering_fit(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """How well the encoder's ordering suits this library: its stored vectors' K-prefixes
        against a PCA fit to them (see :mod:`peerlight.embeddings.ordering_fit`)."""
        from peerlight.embeddings.ordering_fit import TooFewVectors, ordering_fit

        from ..catalog.embeddings import sample_vectors
        from ..models import ModelUnavailable

        params = Params(raw)
        role = params.choice("encoder", ROLES, "text")
        params.done()
        try:
            model = await self._models.get(role)
        except ModelUnavailable as exc:
            raise Unavailable(str(exc)) from None
        vectors = await self._catalog.read(partial(sample_vectors, model_id=model.model_id, limit=FIT_SAMPLE))
        try:
            fit = await trio.to_thread.run_sync(ordering_fit, vectors, self._prefix_for(model.dimension))
        except TooFewVectors as exc:
            raise InvalidParams(f"not enough stored {role} vectors of {model.model_id} to judge its ordering: {exc}") from None
        adapter = getattr(model, "adapter", None)  # an OrderedEncoder's; none: vectors stored unordered
        return {"role": role, "model_id": model.model_id, "adapter_id": adapter.adapter_id if adapter else None, **fit.to_wire()}

    async def train_adapter(self, raw: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        """Train an importance-ordering adapter for one encoder, streaming progress events."""
        from peerlight.embeddings.adapter_training import TrainingOptions

        from ..adapters import TrainingError, TrainingProgress, train_node_adapter
        from ..models import ModelUnavailable

        params = Params(raw)
        role = params.choice("encoder", ROLES)
        corpus = params.path("corpus", None)
        align_to = params.choice("align_to", ROLES, None)
        steps = params.number("steps", TrainingOptions.steps, min=1, max=1_000_000, integer=True)
        seed = params.number("seed", 0, min=0, max=2**31 - 1, integer=True)
        params.done()
        corpus_path = None
        if corpus is not None:
            corpus_path = Path(corpus)
            if not await run_io(corpus_path.exists, what=f"checking {display(corpus)}"):
                raise InvalidParams(f"corpus {display(corpus)} does not exist", data={"param": "corpus"})
        progress = TrainingProgress()
        outcome: dict[str, Any] = {}
        finished = trio.Event()

        async def train() -> None:
            try:
                outcome["result"] = await train_node_adapter(
                    self._catalog,
                    self._models,
                    self._adapters_dir,
                    role,
                    corpus_path,
                    TrainingOptions(steps=steps, seed=seed),
                    progress,
                    align_to,
                )
            except TrainingError as exc:
                outcome["error"] = InvalidParams(str(exc))
            except ModelUnavailable as exc:
                outcome["error"] = Unavailable(str(exc))
            finally:
                finished.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(train)
            while not finished.is_set():
                await emit(progress.to_wire())
                with trio.move_on_after(0.5):
                    await finished.wait()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    async def list(self, raw: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """Every configured model, loaded now if it can be; pending items are retried at once."""
        params = Params(raw)
        check = params.flag("check", True)
        params.done()
        infos = await self._models.check_all() if check else self._models.describe()
        self._embedder.wake()
        return [info.to_wire() for info in infos]
