"""Indexing throughput of the full pipeline vs the bare image encoder, on the same images.

The bare figure is the encoder alone on already decoded, preprocessed tensors, in batches:
the most any pipeline could reach. The pipeline figure is a real scan (stat, hash, type,
EXIF) plus the embedding service (decode and preprocess in worker threads, overlapped
with inference), from an empty catalog until every image has its vector. Target: >= 0.85.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import trio
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, time_pipeline  # noqa: E402

from peerlight.embeddings.clip import ClipModel, ClipSpec, resolve_clip_weights  # noqa: E402
from peerlight.embeddings.media import load_image  # noqa: E402
from peerlight.node.config import Config  # noqa: E402


def make_images(root: Path, count: int, size: tuple[int, int]) -> list[Path]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    paths = []
    for i in range(count):
        # Smooth gradients plus noise: photo-like JPEGs that take real work to decode.
        base = np.linspace(0, 255, size[0], dtype=np.float32)[None, :, None] * rng.random(3)[None, None, :]
        noise = rng.normal(0, 25, (size[1], size[0], 3))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = root / f"img{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def bare_encoder(model: ClipModel, paths: list[Path], batch: int) -> float:
    tensors = [model.preprocess(load_image(p)) for p in paths]
    model.encode(tensors[:batch])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(tensors), batch):
        model.encode(tensors[start : start + batch])
    return len(tensors) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="random")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="pl-bench-"))
    try:
        paths = make_images(base / "library", args.images, (800, 600))
        defaults = Config()
        config = replace(
            defaults,
            image_model=replace(defaults.image_model, name=args.model, pretrained=args.pretrained),
            models=replace(defaults.models, batch_size=args.batch, device=args.device),
            index=replace(defaults.index, watch=False),
        )
        device = "cuda" if args.device == "auto" and __import__("torch").cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
        spec = ClipSpec(args.model, args.pretrained, device=device)
        bare = bare_encoder(ClipModel(spec, resolve_clip_weights(spec)), paths, args.batch)
        library = base / "library"
        seconds = trio.run(
            time_pipeline, config, base, library, args.images, "image",
            lambda model: model.encode([model.prepare(str(next(library.iterdir())))] * 4),
        )
        full = args.images / seconds
        emit(
            "index_throughput",
            model=f"{args.model}/{args.pretrained}",
            device=device,
            images=args.images,
            batch=args.batch,
            bare_encoder_items_per_s=round(bare, 2),
            pipeline_items_per_s=round(full, 2),
            pipeline_vs_bare=round(full / bare, 3),
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
