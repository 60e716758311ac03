"""The weight-free baseline: 80-dim Kaldi log-mel filterbanks (25 ms window, 10 ms shift).

``torchaudio.compliance.kaldi.fbank`` with Kaldi's defaults (povey window, pre-emphasis
0.97, DC removal, no dither so the cache is deterministic) and ``snip_edges=True``, i.e.
``1 + (samples - 400) // 160`` frames at 100 frames/s. The waveform is scaled to the int16
range first, as Kaldi reads 16-bit PCM: log energies then match Kaldi/ESPnet/WeNet recipes
instead of sitting ~20.8 nats lower and hitting the energy floor in near-silence.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from phonecli.encoders.base import EncoderAdapter, LayerInfo, ModelSpec
from phonecli.encoders.layers import describe_states

#: Everything that determines the output; also the adapter's fingerprint (there are no weights).
FBANK_SETTINGS: dict = {
    "num_mel_bins": 80,
    "frame_length": 25.0,   # ms
    "frame_shift": 10.0,    # ms
    "dither": 0.0,
    "snip_edges": True,
    "window_type": "povey",
    "preemphasis_coefficient": 0.97,
    "remove_dc_offset": True,
    "energy_floor": 1.0,
    "sample_frequency": 16000.0,
}
#: float waveform in [-1, 1] -> int16 scale before Kaldi fbank (see module docstring).
INPUT_SCALE = 32768.0


class Adapter(EncoderAdapter):
    """Kaldi fbank as a one-"layer" encoder: ``(1, frames, 80)`` float32 at 100 frames/s."""

    padding_safe = True  # computed one utterance at a time: no padding ever reaches it

    def __init__(self, spec: ModelSpec, source: str, *, revision: str | None = None,
                 device: str = "cpu", trust_remote_code: bool = False):
        super().__init__(spec, source, revision=revision, device=device, trust_remote_code=trust_remote_code)
        import torchaudio

        self.model_id = "torchaudio.compliance.kaldi.fbank"
        self.revision = f"torchaudio-{torchaudio.__version__}"
        self.hidden_size = int(FBANK_SETTINGS["num_mel_bins"])
        self.frame_rate = 1000.0 / FBANK_SETTINGS["frame_shift"]
        self.settings = {**FBANK_SETTINGS, "input_scale": INPUT_SCALE}
        self._window = int(FBANK_SETTINGS["sample_frequency"] * FBANK_SETTINGS["frame_length"] / 1000)  # 400
        self._shift = int(FBANK_SETTINGS["sample_frequency"] * FBANK_SETTINGS["frame_shift"] / 1000)    # 160

    def layers(self) -> list[LayerInfo]:
        return describe_states("fbank", 1, self.frame_rate)

    def num_frames(self, num_samples: int) -> int:
        """Kaldi's ``snip_edges=True`` count: ``1 + (samples - 400) // 160`` (0 below one window)."""
        if num_samples < self._window:
            return 0
        return 1 + (num_samples - self._window) // self._shift

    def forward(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """``waves``: float32 ``(samples,)`` at 16 kHz -> float32 ``(1, frames, 80)`` each."""
        import torch
        from torchaudio.compliance import kaldi

        out = []
        with torch.inference_mode():
            for w in waves:
                x = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).unsqueeze(0) * INPUT_SCALE
                feats = kaldi.fbank(x, **FBANK_SETTINGS)  # (frames, 80)
                out.append(feats.numpy()[None].astype(np.float32, copy=False))
        return out

    def fingerprint(self) -> str:
        """Weight-free: the settings are the identity (sha256[:16] of their JSON)."""
        blob = json.dumps(self.settings, sort_keys=True).encode()
        return "fbank-" + hashlib.sha256(blob).hexdigest()[:16]
