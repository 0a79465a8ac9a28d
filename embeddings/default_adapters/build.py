"""Build the shipped default adapters (run from a checkout: python -m peerlight.embeddings.default_adapters.build).

The text model's adapter is trained (PCA-initialised, Matryoshka loss, the default
training options, seed 0) on 100,000 docstring sentences of the installed Python stdlib and
site-packages — the training split of bench/prefix_quality.py, disjoint from the sentences
it searches and queries with, so the benchmark measures it on text it has not seen. Pass ``--pca`` to ship the untrained PCA rotation instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

from peerlight.embeddings.adapter_training import TrainingOptions, train_adapter
from peerlight.embeddings.adapters import pca_adapter

from . import file_for


def main() -> None:
    bench = Path(__file__).resolve().parents[2] / "bench"
    sys.path.insert(0, str(bench))
    from prefix_quality import CORPUS, QUERIES, TRAIN, splits  # the benchmark's sentences and cache

    _, _, train, base_model_id, source = splits(CORPUS, QUERIES, TRAIN)
    if "--pca" in sys.argv[1:]:
        adapter = pca_adapter(base_model_id, train)
    else:
        adapter = train_adapter(base_model_id, train, TrainingOptions())
    adapter.info["corpus"] = f"{source}: the benchmark's {len(train):,} training sentences"
    path = file_for(base_model_id)
    path.write_bytes(adapter.to_bytes())  # a build output in the source tree, committed with git
    print(f"{path.name}: {adapter.model_id}")


if __name__ == "__main__":
    main()
