"""CLAP (through ``transformers``): music and sound, and text queries in the audio space.

Used only when its weights are on the machine (a local folder or the Hugging Face cache);
otherwise the node embeds audio files' tag text instead, so music stays searchable.
"""

from __future__ import annotations

import threading

import numpy as np

from .errors import WeightsMissing
from .model_ids import hub_weights_fingerprint, make_model_id
from .vectors import normalize
from .weights import HubModelSpec, Weights, hf_cached_snapshot, hub_folder, missing, require_local_path

SPACE = "audio"
SAMPLE_RATE = 48_000
MAX_SECONDS = 30.0
WINDOW_SECONDS = 10.0


def resolve_clap_weights(spec: HubModelSpec) -> Weights:
    what = f"CLAP {spec.name}"
    if spec.checkpoint is not None:
        return require_local_path(spec.checkpoint, what)
    snapshot = hf_cached_snapshot(spec.name, "config.json", spec.cache_dir)
    if snapshot:
        return Weights("hf-cache", snapshot, f"Hugging Face cache: {snapshot}")
    if spec.allow_download:
        return Weights("download", None, f"download of {spec.name}")
    raise missing(
        what,
        [f"Hugging Face cache ({spec.name})"],
        "Audio is embedded from its tags until then. Set audio_model.checkpoint to a local CLAP folder, "
        "or set models.allow_download = true.",
    )


class ClapModel:
    """A loaded CLAP model (an :class:`~.base.Encoder` over audio files)."""

    space = SPACE

    def __init__(self, spec: HubModelSpec, weights: Weights) -> None:
        from transformers import ClapModel as HfClapModel
        from transformers import ClapProcessor
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()

        self.spec = spec
        self.weights = weights
        try:
            source = hub_folder(weights, spec)
            self._model = HfClapModel.from_pretrained(source, local_files_only=True)
            self._processor = ClapProcessor.from_pretrained(source, local_files_only=True)
        except OSError as exc:
            raise WeightsMissing(f"CLAP {spec.name}: cannot load {source}: {exc}") from None
        self._model = self._model.eval().to(spec.device)
        self._lock = threading.Lock()
        self.dimension = int(self._model.config.projection_dim)
        fingerprint = hub_weights_fingerprint(source)
        self.model_id = make_model_id("clap", spec.name, fingerprint, self.dimension)

    sample_rate = SAMPLE_RATE  # what ``prepare`` decodes to: a decoder elsewhere can do the same
    max_seconds = MAX_SECONDS

    def prepare(self, path: str) -> np.ndarray:
        """The first ``MAX_SECONDS`` of a file, as 48 kHz mono samples."""
        from .media import load_audio

        return load_audio(path, SAMPLE_RATE, MAX_SECONDS)

    def encode(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """One vector per waveform (48 kHz mono): the mean over its 10-second windows."""
        import torch

        window = int(WINDOW_SECONDS * SAMPLE_RATE)
        pieces, owners = [], []
        for index, wave in enumerate(waveforms):
            for start in range(0, max(len(wave), 1), window):
                pieces.append(wave[start : start + window])
                owners.append(index)
        with self._lock, torch.inference_mode():
            inputs = self._processor(audio=pieces, sampling_rate=SAMPLE_RATE, return_tensors="pt")
            features = self._model.get_audio_features(**{k: v.to(self.spec.device) for k, v in inputs.items()})
            features = _as_tensor(features)
            vectors = normalize(features.float().cpu().numpy())
        result = np.zeros((len(waveforms), vectors.shape[1]), dtype=np.float32)
        np.add.at(result, np.array(owners), vectors)
        return normalize(result)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        import torch

        with self._lock, torch.inference_mode():
            inputs = self._processor(text=texts, return_tensors="pt", padding=True)
            features = self._model.get_text_features(**{k: v.to(self.spec.device) for k, v in inputs.items()})
            return normalize(_as_tensor(features).float().cpu().numpy())


def _as_tensor(features):  # type: ignore[no-untyped-def]
    """transformers 5 may return a model output object where 4.x returned the tensor."""
    if hasattr(features, "pooler_output") and not hasattr(features, "shape"):
        return features.pooler_output
    return features
