"""The encoder ("upstream") adapter contract every model family implements.

An adapter loads one encoder and turns 16 kHz float32 waveforms into every hidden state it
has: ``(states, frames, dim)`` float32 per utterance. Batching, layer selection, dtype
conversion and writing the cache belong to the extraction runner, not to adapters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from phonecli.errors import ExtractionError  # noqa: F401  (re-exported)


@dataclass
class LayerInfo:
    """One stored state. ``index`` follows the layer convention of :mod:`phonecli.encoders.layers`
    (0 = embeddings/stem, N = the encoder output after its final LayerNorm)."""

    index: int
    name: str                 # e.g. "embeddings", "transformer.3", "transformer.24 -> final LayerNorm"
    frame_rate: float         # frames/s of this state as stored
    note: str = ""
    reference: str = ""       # the same state elsewhere, e.g. "transformers 4.x hidden_states[3]; s3prl ..."


@dataclass
class ModelSpec:
    """One row of ``configs/models.yaml``."""

    name: str
    family: str               # adapter key, e.g. "hubert", "whisper"
    source: str               # Hub id (or "" for weight-free / unavailable rows)
    cls: str                  # transformers class (or other loader) name
    input: str                # "raw" | "log-mel" | "fbank-stacked" | "waveform" | "discrete"
    frame_rate: float         # frames/s
    layers: int               # number of hidden states (incl. embeddings)
    hidden_size: int
    status: str = "ok"        # "ok" | "optional" (needs an extra) | "removed"
    notes: str = ""
    extra: dict = field(default_factory=dict)


class EncoderAdapter(ABC):
    """Loads one encoder; ``forward`` returns all hidden states per utterance.

    Attributes set by ``__init__`` (subclasses must fill them):
      ``model_id`` (Hub id or local path), ``revision`` (commit hash or None),
      ``hidden_size``, ``frame_rate`` (frames/s of the stored states),
      ``padding_safe`` (True if a padded batch with an attention mask gives the same
      features as one-by-one; False -> the runner feeds utterances unpadded / grouped by
      exact length).
    """

    sample_rate: int = 16_000
    model_id: str = ""
    revision: str | None = None
    hidden_size: int = 0
    frame_rate: float = 50.0
    padding_safe: bool = True

    def __init__(self, spec: ModelSpec, source: str, *, revision: str | None = None,
                 device: str = "cpu", trust_remote_code: bool = False):
        self.spec = spec
        self.device = device

    @abstractmethod
    def layers(self) -> list[LayerInfo]:
        """Every state ``forward`` returns, in order."""

    @abstractmethod
    def num_frames(self, num_samples: int) -> int:
        """Frames the model yields for ``num_samples`` samples at 16 kHz (its own formula)."""

    @abstractmethod
    def forward(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """``waves``: float32 ``(samples,)`` at 16 kHz -> per utterance float32
        ``(len(layers()), num_frames(samples), hidden_size)`` on the CPU."""

    def fingerprint(self) -> str:
        """Identifies the weights: revision if known, else a hash of the parameters."""
        return weights_fingerprint(getattr(self, "model", None))


def weights_fingerprint(model) -> str:
    """sha256[:16] over parameter names, shapes, dtypes and a strided sample of values.

    Cheap for 1B-parameter models (samples ~4k values per tensor) yet changes when any
    fine-tuning touched a tensor in a meaningful way.
    """
    import hashlib

    if model is None:
        return "weight-free"
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in sorted(model.state_dict().items()):
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
