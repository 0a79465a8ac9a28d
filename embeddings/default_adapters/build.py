"""Build the shipped default adapters (run from a checkout: python -m peerlight.embeddings.default_adapters.build).

The text model's adapter is the uncentred PCA of 20,000 docstring sentences of the
installed Python stdlib and site-packages (the training split of bench/prefix_quality.py),
which the benchmark shows to be the best ordering measured so far; it is replaced by a
trained adapter once one beats it there.
"""

from __future__ import annotations

import sys
from pathlib import Path

from peerlight.embeddings.adapters import pca_adapter

from . import file_for


def main() -> None:
    bench = Path(__file__).resolve().parents[2] / "bench"
    sys.path.insert(0, str(bench))
    from prefix_quality import embedded_corpus  # the same sentences and cache as the benchmark

    vectors, base_model_id, source = embedded_corpus(41_000)
    adapter = pca_adapter(base_model_id, vectors[:20_000])
    adapter.info["corpus"] = f"{source}: the benchmark's 20,000 training sentences"
    path = file_for(base_model_id)
    adapter.save(path)
    print(f"{path.name}: {adapter.model_id}")


if __name__ == "__main__":
    main()
