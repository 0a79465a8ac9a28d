"""The adapter build and the leave-one-source-out harness, run on images as a user runs them.

No image weights exist here, so the mechanics run on a randomly initialised open_clip: the
commands a user runs with real weights (``build --encoder image --media FOLDER`` and
``bench/prefix_quality.py --encoder image --media FOLDER``) embed every subfolder, train,
write the adapter and judge it, with the same code as for text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from peerlight.embeddings.adapters import Adapter

from .media import image

ROOT = Path(__file__).resolve().parents[1]
RANDOM_CLIP = ("--model", "ViT-S-32", "--pretrained", "random", "--steps", "5")


def media_mix(folder: Path, per_kind: int = 36) -> Path:
    """Three kinds of pictures (flat colours, grids, wide banners), and a file that is no image."""
    rng = np.random.default_rng(0)
    for kind in ("flat", "grid", "banner"):
        (folder / kind).mkdir(parents=True)
        for n in range(per_kind):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            size = (160, 40) if kind == "banner" else (64, 64)
            image(folder / kind / f"{n:03}.png", colour, size, pattern=kind == "grid")
    (folder / "flat" / "notes.txt").write_text("not a picture")
    return folder


def run(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_an_image_adapter_is_built_and_judged_leaving_each_kind_out(tmp_path: Path) -> None:
    media = media_mix(tmp_path / "media")
    output = tmp_path / "image-adapter.npz"
    run("-m", "peerlight.embeddings.default_adapters.build", "--encoder", "image", "--media", str(media), "--output", str(output), *RANDOM_CLIP)
    adapter = Adapter.load(output)
    assert adapter.base_model_id.startswith("clip:ViT-S-32:") and adapter.dimension == adapter.input_dimension
    sources = {entry["name"]: entry for entry in adapter.info["sources"]}
    assert set(sources) == {"flat", "grid", "banner"} and sum(entry["share"] for entry in sources.values()) == pytest.approx(1.0, abs=1e-3)
    assert sources["flat"]["units"] == 18  # half of the 36 readable pictures; the text file skipped

    harness = run("bench/prefix_quality.py", "--encoder", "image", "--media", str(media), "--million", "0", *RANDOM_CLIP)
    assert "notes.txt" in harness.stderr  # skipped, and said so
    rows = [json.loads(line) for line in harness.stdout.splitlines()]
    assert [row["source"] for row in rows] == ["banner", "flat", "grid"]
    d = adapter.dimension
    for row in rows:
        assert row["base_model"] == adapter.base_model_id and row["source"] not in row["trained_on"]
        assert row["train_units"] == 36  # half of each of the two other kinds
        for method in ("raw", "pca_training_mix", "pca_in_domain", "adapter"):
            recalls = row[f"recall_at_10_{method}"]
            assert str(d // 8) in recalls and all(0.0 <= value <= 1.0 for value in recalls.values())
        # A corpus smaller than the 500 shortlist is reranked whole: the funnel is exact.
        assert row["corpus"] < 500 and row["funnel_500_recall_vs_stored"] == 1.0
        assert 0.0 < row["adapter_full_length_fidelity"] <= 1.0
        assert row["pca_best_single_other_source"] in row["trained_on"]
        assert 0.0 <= row["recall_at_d_over_8_pca_best_single_other_source"] <= 1.0
