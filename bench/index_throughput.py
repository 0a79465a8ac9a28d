"""Indexing throughput of the full pipeline vs the bare image encoder, on the same images or videos.

The bare figure is the encoder alone on already decoded, preprocessed tensors, in batches:
the most any pipeline could reach. The pipeline figure is a real scan (stat, hash, type,
EXIF) plus the embedding service (decode and preprocess in worker threads, overlapped
with inference), from an empty catalog until every file has its vectors. Target: >= 0.85.

The pipeline runs twice, on fresh catalogs: with the native decoders in worker processes
(the default, ``index.isolate_decoders``) and inside the process, to measure what the
isolation costs (the aim: at most 10%).

    python bench/index_throughput.py [--kind image|video] [--images 256] [--videos 24]
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
from peerlight.embeddings.media import load_image, sample_video_frames  # noqa: E402
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


def make_videos(root: Path, count: int) -> list[Path]:
    """Short videos (4 s at 10 fps, 320x240, four scenes of noise): a frame a second is sampled."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests import media

    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    paths = []
    for i in range(count):
        scenes = [(1.0, Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))) for _ in range(4)]
        paths.append(media.video(root / f"clip{i:03d}.mp4", scenes))
    return paths


def decoded(paths: list[Path], kind: str, config: Config) -> list[Image.Image]:
    """What the pipeline encodes: each image, or each video's frames as the node samples them."""
    if kind == "image":
        return [load_image(p) for p in paths]
    video = config.video
    return [frame.image for p in paths for frame in sample_video_frames(p, video.frame_interval_seconds, video.max_frames)]


def bare_encoder(model: ClipModel, images: list[Image.Image], batch: int) -> float:
    tensors = [model.preprocess(image) for image in images]
    model.encode(tensors[:batch])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(tensors), batch):
        model.encode(tensors[start : start + batch])
    return len(tensors) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=["image", "video"], default="image")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="random")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="pl-bench-"))
    try:
        library = base / "library"
        paths = make_images(library, args.images, (800, 600)) if args.kind == "image" else make_videos(library, args.videos)
        defaults = Config()
        config = replace(
            defaults,
            image_model=replace(defaults.image_model, name=args.model, pretrained=args.pretrained),
            models=replace(defaults.models, batch_size=args.batch, device=args.device),
            index=replace(defaults.index, watch=False),
            video=replace(defaults.video, frame_interval_seconds=1.0),  # four frames of each 4 s clip
        )
        device = "cuda" if args.device == "auto" and __import__("torch").cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
        spec = ClipSpec(args.model, args.pretrained, device=device)
        images = decoded(paths, args.kind, config)
        bare = bare_encoder(ClipModel(spec, resolve_clip_weights(spec)), images, args.batch)
        seconds = {}
        for isolated in (True, False, True, False):  # interleaved: this machine's speed drifts
            run = base / f"run{len(seconds)}-{isolated}"
            run.mkdir()
            took = trio.run(
                time_pipeline, replace(config, index=replace(config.index, isolate_decoders=isolated)), run, library, len(paths), "image",
                lambda model: model.encode([model.preprocess(images[0])] * 4),
            )
            seconds[isolated] = min(took, seconds.get(isolated, took))
        # Items per second for the pipeline; the bare encoder counts what it encodes (frames, for videos).
        isolated, in_process = len(paths) / seconds[True], len(paths) / seconds[False]
        per_item = len(images) / len(paths)
        emit(
            "index_throughput",
            kind=args.kind,
            model=f"{args.model}/{args.pretrained}",
            device=device,
            items=len(paths),
            frames_per_item=round(per_item, 2),
            batch=args.batch,
            bare_encoder_items_per_s=round(bare / per_item, 2),
            pipeline_items_per_s=round(isolated, 2),
            pipeline_vs_bare=round(isolated / (bare / per_item), 3),
            pipeline_in_process_items_per_s=round(in_process, 2),
            isolation_cost=round(1 - isolated / in_process, 3),
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
