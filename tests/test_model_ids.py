"""Model ids come from the weights' content: downloaded, cached or a local file, the same weights
get the same id on every node, so peers agree and a restart never re-embeds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from peerlight.embeddings.sentence import SentenceModel, resolve_sentence_weights
from peerlight.embeddings.weights import HubModelSpec, Weights

NAME = "sentence-transformers/all-MiniLM-L6-v2"


def hub_cache_with(folder: Path, cache: Path, repo: str) -> Path:
    """A Hugging Face hub cache holding ``folder`` as the snapshot of ``repo`` (what a download leaves)."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    shutil.copytree(folder, repo_dir / "snapshots" / revision)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    return cache


@pytest.fixture(scope="module")
def packaged() -> Path:
    weights = resolve_sentence_weights(HubModelSpec(NAME))
    assert weights.source == "package"
    return Path(weights.path)


def test_the_same_weights_get_the_same_id_wherever_they_come_from(packaged: Path, tmp_path: Path) -> None:
    shipped = SentenceModel(HubModelSpec(NAME), resolve_sentence_weights(HubModelSpec(NAME)))
    copy = shutil.copytree(packaged, tmp_path / "elsewhere" / "my-minilm")
    local = SentenceModel(HubModelSpec(NAME, checkpoint=copy), resolve_sentence_weights(HubModelSpec(NAME, checkpoint=copy)))
    cache = hub_cache_with(packaged, tmp_path / "hub", NAME)
    cached_weights = resolve_sentence_weights(HubModelSpec(NAME, cache_dir=str(cache)))
    assert cached_weights.source == "hf-cache"
    cached = SentenceModel(HubModelSpec(NAME, cache_dir=str(cache)), cached_weights)
    # The download path (HF_HUB_OFFLINE is set for the tests: the snapshot is taken from the cache).
    downloaded = SentenceModel(HubModelSpec(NAME, cache_dir=str(cache), allow_download=True), Weights("download", None, "download"))
    assert shipped.model_id == local.model_id == cached.model_id == downloaded.model_id

    changed = tmp_path / "changed"
    shutil.copytree(packaged, changed)
    weights_file = changed / "model.safetensors"
    data = bytearray(weights_file.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights_file.write_bytes(bytes(data))
    other = SentenceModel(HubModelSpec(NAME, checkpoint=changed), resolve_sentence_weights(HubModelSpec(NAME, checkpoint=changed)))
    assert other.model_id != shipped.model_id


def test_a_clip_checkpoint_id_is_its_content(tmp_path: Path) -> None:
    import open_clip
    import torch

    from peerlight.embeddings.clip import ClipModel, ClipSpec, resolve_clip_weights

    torch.manual_seed(3)
    first = tmp_path / "a" / "vit.pt"
    first.parent.mkdir()
    torch.save(open_clip.create_model("ViT-S-32", pretrained=None).state_dict(), first)
    second = tmp_path / "b" / "renamed-checkpoint.pt"
    second.parent.mkdir()
    shutil.copy(first, second)
    ids = [ClipModel(ClipSpec("ViT-S-32", "x", path), resolve_clip_weights(ClipSpec("ViT-S-32", "x", path))).model_id for path in (first, second)]
    assert ids[0] == ids[1]
    random = [ClipModel(ClipSpec("ViT-S-32", "random"), resolve_clip_weights(ClipSpec("ViT-S-32", "random"))).model_id for _ in range(2)]
    assert random[0] == random[1] != ids[0]
