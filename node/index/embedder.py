"""The embedding service: computes vectors for items that lack them from the current models.

Work is pipelined so decoding overlaps inference: a producer picks pending items in
batches and decodes them in worker threads (image files, video frames, audio, document
chunks) while the previous batch is being encoded by the model in its own thread. Vectors
are written one transaction per batch. A model whose weights are missing leaves its items
pending; they are completed when the weights appear (checked every
``models.retry_missing_seconds``, or at once after ``peerlight models``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import trio

from peerlight.embeddings.chunking import chunk_text
from peerlight.embeddings.errors import DecodeError
from peerlight.embeddings.base import Encoder
from peerlight.embeddings.media import sample_video_frames
from peerlight.embeddings.vectors import mean_vector

from ..catalog import embeddings as store
from ..catalog.database import Catalog
from ..catalog.embeddings import PendingItem, Segment
from ..catalog.items import document_text
from ..config import Config
from ..models import ModelManager, ModelUnavailable
from ..decoders import DecoderPool, DecoderUnavailable
from ..files import open_regular
from ..pathnames import display
from ..threads import run_io
from .conversion import convert_base_vectors
from .inspect import HEAD_BYTES

PREPARE_TIMEOUT_SECONDS = 120.0  # decoding one item (a stalled disk must not stall the pipeline)
TIMED_OUT = object()  # what a decoding that missed its deadline leaves in its batch

log = logging.getLogger("peerlight.embed")

Prepare = Callable[[PendingItem], Awaitable[Any]]
Encode = Callable[[list[Any]], list[list[Segment]]]


@dataclass
class RoleProgress:
    state: str = "idle"  # idle | embedding | waiting for weights
    embedded: int = 0
    failed: int = 0
    reason: str | None = None


@dataclass
class EmbedProgress:
    kinds: dict[str, RoleProgress] = field(default_factory=dict)

    def of(self, kind: str) -> RoleProgress:
        return self.kinds.setdefault(kind, RoleProgress())

    @property
    def busy(self) -> bool:
        return any(p.state == "embedding" for p in self.kinds.values())

    def to_wire(self) -> dict[str, Any]:
        return {kind: dict(vars(p)) for kind, p in self.kinds.items()}


async def _nothing(item_ids: list[int]) -> None:
    return None


class Embedder:
    def __init__(
        self,
        catalog: Catalog,
        models: ModelManager,
        config: Config,
        decoders: DecoderPool | None = None,
    ) -> None:
        self._catalog = catalog
        self._decoders = decoders  # native decoders in worker processes (None: in this process)
        self._models = models
        self._config = config
        self._wake = trio.Event()
        self._workers = trio.CapacityLimiter(config.index.workers)  # items decoded at once
        self._decode_threads = trio.CapacityLimiter(config.index.workers * 8)
        self.progress = EmbedProgress()
        self.on_embedded: Callable[[list[int]], Awaitable[None]] = _nothing  # items that just got vectors
        self.pass_requested = False
        self.pass_running = False

    def wake(self) -> None:
        self.pass_requested = True
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self._wake = trio.Event()
            self.pass_requested = False
            self.pass_running = True
            try:
                await self.embed_pending()
            except Exception:
                # A failing pass must not end the service: log it and try again later.
                log.exception("embedding pass failed")
            finally:
                self.pass_running = False
            with trio.move_on_after(self._config.models.retry_missing_seconds):
                await self._wake.wait()

    async def embed_pending(self) -> None:
        """One pass over every kind of media: embed everything that is pending and can be."""
        await self._with_model("text", "documents", ("text",), self._prepare_document, self._encode_document)
        await self._with_model("image", "images", ("image",), self._prepare_file, self._encode_whole)
        await self._with_model("image", "videos", ("video",), self._prepare_video, self._encode_videos)
        if not await self._catalog.read(partial(store.may_have_pending, modalities=("audio",), model_id=None)):
            return
        try:
            clap = await self._models.get("audio")
        except ModelUnavailable as exc:
            self.progress.of("audio").reason = f"embedding tags instead: {exc}"
            await self._with_model("text", "audio", ("audio",), self._prepare_tags, self._encode_whole, source="metadata")
        else:
            self.progress.of("audio").reason = None
            await self._drain(clap, "audio", ("audio",), partial(self._prepare_file, clap), partial(self._encode_whole, clap))

    async def _with_model(
        self, role: str, kind: str, modalities: tuple[str, ...], prepare: Any, encode: Any, source: str = "content"
    ) -> None:
        progress = self.progress.of(kind)
        known_id = self._models.slots[role].known_id
        if not await self._catalog.read(partial(store.may_have_pending, modalities=modalities, model_id=known_id)):
            return  # nothing to do: do not load a model for it
        try:
            model = await self._models.get(role)
        except ModelUnavailable as exc:
            progress.state, progress.reason = "waiting for weights", str(exc)
            return
        if source == "content":
            progress.reason = None
        await self._drain(model, kind, modalities, partial(prepare, model), partial(encode, model), source)

    async def _drain(
        self, model: Any, kind: str, modalities: tuple[str, ...], prepare: Prepare, encode: Encode, source: str = "content"
    ) -> None:
        progress = self.progress.of(kind)
        await self._catalog.write_when_space(
            partial(
                store.register_model, model_id=model.model_id, name=model.spec.name, space=model.space, dimension=model.dimension
            )
        )
        adapter = getattr(model, "adapter", None)
        if adapter is not None:
            # Vectors its base model stored (before the adapter was chosen or trained) are
            # converted, not encoded again.
            progress.state = "converting stored vectors"
            await convert_base_vectors(self._catalog, model.base.model_id, adapter)
        send, receive = trio.open_memory_channel[list[tuple[PendingItem, Any]]](1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._produce, send, modalities, model.model_id, prepare)
            async with receive:
                async for batch in receive:
                    progress.state = "embedding"
                    await self._encode_and_store(batch, model.model_id, encode, source, progress)
        progress.state = "idle"

    async def _produce(
        self, send: trio.MemorySendChannel, modalities: tuple[str, ...], model_id: str, prepare: Prepare
    ) -> None:
        async with send:
            after = 0
            while True:
                batch = await self._catalog.read(
                    partial(
                        store.pending_items,
                        modalities=modalities,
                        model_id=model_id,
                        after_id=after,
                        limit=self._config.models.batch_size,
                    )
                )
                if not batch:
                    return
                after = batch[-1].item_id
                await send.send(await self._prepare_batch(batch, prepare))

    async def _prepare_batch(self, batch: list[PendingItem], prepare: Prepare) -> list[tuple[PendingItem, Any]]:
        """Decode a batch in parallel worker threads; a file that fails becomes its DecodeError."""
        prepared: list[Any] = [None] * len(batch)

        async def prepare_one(index: int, item: PendingItem) -> None:
            async with self._workers:  # the deadline counts decoding, not waiting for a turn
                with trio.move_on_after(PREPARE_TIMEOUT_SECONDS):
                    try:
                        prepared[index] = await prepare(item)
                    except DecoderUnavailable:  # no worker now: not the file's fault, tried again next pass
                        log.warning("no decoder was free; the item is tried again later", extra={"path": display(item.path)})
                        prepared[index] = TIMED_OUT
                    except (DecodeError, OSError) as exc:
                        prepared[index] = DecodeError(str(exc))
                    except Exception as exc:  # a decoder's bug on hostile input fails this item, not the batch
                        log.warning("decoding failed unexpectedly", exc_info=True, extra={"path": display(item.path)})
                        prepared[index] = DecodeError(f"{type(exc).__name__}: {exc}")
                    return
            # A stalled disk, not a bad file: the item stays pending and is tried again next pass.
            log.warning("decoding took too long; tried again later", extra={"path": display(item.path)})
            prepared[index] = TIMED_OUT

        async with trio.open_nursery() as nursery:
            for index, item in enumerate(batch):
                nursery.start_soon(prepare_one, index, item)
        return list(zip(batch, prepared))

    async def _encode_and_store(
        self, batch: list[tuple[PendingItem, Any]], model_id: str, encode: Encode, source: str, progress: RoleProgress
    ) -> None:
        batch = [(item, payload) for item, payload in batch if payload is not TIMED_OUT]
        good = [(item, payload) for item, payload in batch if not isinstance(payload, DecodeError)]
        failures = [(item, str(payload)) for item, payload in batch if isinstance(payload, DecodeError)]
        results: list[list[Segment]] = []
        if good:
            try:
                # Abandoned on shutdown like a model load: the process exits without interpreter
                # teardown, so a thread still inside torch cannot abort it (see __main__).
                results = await trio.to_thread.run_sync(encode, [payload for _, payload in good], abandon_on_cancel=True)
            except Exception as exc:  # a model failing on a batch must not stop the service
                log.exception("encoding a batch failed", extra={"model_id": model_id})
                failures += [(item, f"encoding failed: {exc}") for item, _ in good]
                good = []

        def write(conn) -> None:  # type: ignore[no-untyped-def]
            for (item, _), segments in zip(good, results):
                store.store_vectors(conn, item.item_id, model_id, segments, source)
            for item, error in failures:
                store.record_failure(conn, item.item_id, model_id, error)

        # Waits out a full disk with the vectors in memory; vector indexes follow through the journal.
        await self._catalog.write_when_space(write)
        if good:
            await self.on_embedded([item.item_id for item, _ in good])
        progress.embedded += len(good)
        progress.failed += len(failures)
        for item, error in failures:
            log.warning("could not embed a file", extra={"path": item.path, "reason": error})

    async def embed_example(self, path: str) -> tuple[str, np.ndarray]:
        """(model id, whole-item vector) of any media file, indexed or not: query by example."""
        from pathlib import Path

        from ..index.detect import detect
        from ..index.metadata import MediaError, audio_metadata, extract_metadata

        head = await run_io(_read_head, path, what=f"reading {display(path)}")
        detected = detect(Path(path), head)
        item = PendingItem(-1, detected.modality, path)
        encode: Callable[[], list[list[Segment]]]
        if detected.modality in ("image", "video"):
            model = await self._models.get("image")
            if detected.modality == "image":
                payload = await self._prepare_file(model, item)
                encode = partial(self._encode_whole, model, [payload])
            else:
                payload = await self._prepare_video(model, item)
                encode = partial(self._encode_videos, model, [payload])
        elif detected.modality == "audio":
            try:
                model = await self._models.get("audio")
                payload = await self._prepare_file(model, item)
            except ModelUnavailable:  # as indexed without CLAP: by its tags
                model = await self._models.get("text")
                meta = await self._in_worker(audio_metadata, Path(path))
                payload = ". ".join(str(meta[k]) for k in ("title", "artist", "album", "genre") if meta.get(k)) or Path(path).stem
            encode = partial(self._encode_whole, model, [payload])
        elif detected.modality == "text":
            model = await self._models.get("text")
            try:
                _, document = await self._in_worker(partial(extract_metadata, store_gps=False), Path(path), "text", detected.mime)
            except MediaError as exc:
                raise DecodeError(str(exc)) from None
            opts = self._config.text_model
            spans = chunk_text(document.text, opts.chunk_words, opts.chunk_overlap_words)
            if not spans:
                raise DecodeError("the document has no text")
            encode = partial(self._encode_document, model, [[(sp.start, sp.end, document.text[sp.start : sp.end]) for sp in spans]])
        else:
            raise DecodeError(f"{display(path)} is not a media file Peerlight can embed")
        segments = await trio.to_thread.run_sync(encode, abandon_on_cancel=True)
        return model.model_id, segments[0][0].vector

    # --- per kind: preparation (worker threads) and encoding (model thread) ---

    async def _in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        # Decoding threads have their own limiter: one abandoned on a stalled disk keeps its token.
        return await trio.to_thread.run_sync(partial(fn, *args), limiter=self._decode_threads, abandon_on_cancel=True)

    async def _prepare_file(self, model: Encoder, item: PendingItem) -> Any:
        if self._decoders is not None and item.modality in ("image", "audio"):
            return await self._in_worker(_decode_isolated, self._decoders, model, item.path, item.modality)
        return await self._in_worker(_decode_regular, model.prepare, item.path)

    def _encode_whole(self, model: Encoder, batch: list[Any]) -> list[list[Segment]]:
        """One vector per item (images, audio, tag texts)."""
        return [[Segment(0, vector)] for vector in model.encode(batch)]

    async def _prepare_video(self, model: Any, item: PendingItem) -> Any:
        video = self._config.video

        def frames() -> list[tuple[float, Any]]:
            if self._decoders is not None:
                with open_regular(item.path) as handle:
                    sampled = self._decoders.video_frames(handle.fileno(), video.frame_interval_seconds, video.max_frames)
                return [(time_, model.preprocess(image)) for time_, image in sampled]
            open_regular(item.path).close()
            return [(frame.time, model.preprocess(frame.image)) for frame in sample_video_frames(item.path, video.frame_interval_seconds, video.max_frames)]

        return await self._in_worker(frames)

    def _encode_videos(self, model: Any, videos: list[list[tuple[float, Any]]]) -> list[list[Segment]]:
        vectors = model.encode([tensor for frames in videos for _, tensor in frames])
        results, offset = [], 0
        for frames in videos:
            own = vectors[offset : offset + len(frames)]
            offset += len(frames)
            times = [t for t, _ in frames]
            ends = times[1:] + [None]
            segments = [Segment(0, mean_vector(own), times[0], None)]
            segments += [Segment(i + 1, v, t, e) for i, (v, t, e) in enumerate(zip(own, times, ends))]
            results.append(segments)
        return results

    async def _prepare_document(self, model: Any, item: PendingItem) -> Any:
        text = await self._catalog.read(partial(document_text, item_id=item.item_id))
        if not text or not text.strip():
            raise DecodeError("the document has no text")
        opts = self._config.text_model
        spans = await self._in_worker(chunk_text, text, opts.chunk_words, opts.chunk_overlap_words)
        return [(span.start, span.end, text[span.start : span.end]) for span in spans]

    def _encode_document(self, model: Any, documents: list[list[tuple[int, int, str]]]) -> list[list[Segment]]:
        vectors = model.encode([chunk for chunks in documents for _, _, chunk in chunks], self._config.models.batch_size)
        results, offset = [], 0
        for chunks in documents:
            own = vectors[offset : offset + len(chunks)]
            offset += len(chunks)
            segments = [Segment(0, mean_vector(own), chunks[0][0], chunks[-1][1])]
            if len(chunks) > 1:
                segments += [Segment(i + 1, v, s, e) for i, (v, (s, e, _)) in enumerate(zip(own, chunks))]
            results.append(segments)
        return results

    async def _prepare_tags(self, model: Any, item: PendingItem) -> Any:
        return await self._catalog.read(partial(store.describe_text, item_id=item.item_id))


def _read_head(path: str) -> bytes:
    with open_regular(path) as handle:
        return handle.read(HEAD_BYTES)


def _decode_isolated(decoders: DecoderPool, model: Any, path: str, modality: str) -> Any:
    """What ``model.prepare(path)`` gives, with the file decoded in a worker process: an image
    shrunk for the model's input, then preprocessed here; an audio file's samples as the model takes them."""
    with open_regular(path) as handle:
        if modality == "image":
            return model.preprocess(decoders.image(handle.fileno(), min_side=model.input_size))
        return decoders.audio(handle.fileno(), model.sample_rate, model.max_seconds)


def _decode_regular(decode: Callable[[str], Any], path: str) -> Any:
    """``decode(path)``, once the path is known to be a regular file (a FIFO put in its place is refused)."""
    open_regular(path).close()
    return decode(path)
