"""Qwen2-Audio's audio tower (Qwen/Qwen2-Audio-7B), weights in 4-bit nf4 through bitsandbytes.

Loading (transformers 5.23): the FULL ``Qwen2AudioForConditionalGeneration`` is loaded with
``quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
bnb_4bit_compute_dtype=torch.float32)`` and ``device_map`` = the device (bitsandbytes >= 0.45
runs 4-bit on CPU), then ``.model.audio_tower`` is kept and the language model is freed.
``Qwen2AudioEncoder.from_pretrained`` on the full checkpoint would *silently keep random
weights* (its keys live under ``audio_tower.``), so it is used only for a directory that holds
a bare encoder (``model_type: qwen2_audio_encoder``). The tower's ``nn.Linear`` layers become
``bitsandbytes.nn.Linear4bit``; convolutions, positions and LayerNorms stay float32.
Peak RAM while loading the 7B checkpoint is the whole 4-bit model (about 5 GB).

Input: ``WhisperFeatureExtractor`` with 128 mel bins, fixed 30 s windows (see whisper.py:
the same windowing, trimming and batching rules apply; ``padding_safe = True``).

What is stored (``encoder_layers + 1`` = 33 states x 1280 for the 7B model, 50 frames/s):
the tower's own ``hidden_states`` tuple. States 0..31 are the conv stem + positions and the
outputs of layers 1..31 at 50 frames/s. The tower then average-pools the last layer's output
(kernel 2, stride 2) to **25 frames/s** and applies ``layer_norm``; ``capture_outputs``
replaces the last entry of ``hidden_states`` with that ``last_hidden_state`` (what the LLM
sees through the projector). A cache holds one frame rate per utterance, so this final state
is **stored at 50 frames/s by exact repetition**: stored frames ``2j`` and ``2j+1`` both hold
pooled frame ``j`` (then trimmed with the others to ``ceil(samples / 320)``). Its LayerInfo
says so. The un-pooled output of layer 32 is not part of ``hidden_states`` and is not stored.
"""

from __future__ import annotations

import gc

import numpy as np

from phonecli.encoders.adapters.common import (
    check_registry_numbers,
    expect_model_type,
    hub_commit,
    load_pretrained,
    raise_if_missing,
    read_model_type,
    resolve_device,
)
from phonecli.encoders.adapters.whisper import WindowedLogMelAdapter, load_whisper_feature_extractor
from phonecli.encoders.base import ExtractionError, LayerInfo, ModelSpec

POOL = 2  # Qwen2AudioEncoder.avg_pooler: AvgPool1d(2, stride=2)


def nf4_config():
    """The 4-bit quantization every Qwen2-Audio load uses (float32 compute: CPU-exact matmuls)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=torch.float32)


class Adapter(WindowedLogMelAdapter):
    """Qwen2-Audio tower (4-bit nf4) -> ``(encoder_layers + 1, ceil(samples / 320), d_model)`` float32.

    All states at 50 frames/s; the last one is 25 frames/s content repeated x2 (module docstring).
    """

    def __init__(self, spec: ModelSpec, source: str, *, revision: str | None = None,
                 device: str = "cpu", trust_remote_code: bool = False):
        super().__init__(spec, source, revision=revision, device=device, trust_remote_code=trust_remote_code)
        import torch

        try:
            import bitsandbytes  # noqa: F401
        except ImportError as e:
            raise ExtractionError(
                f"{spec.name}: 4-bit loading needs bitsandbytes, which is not installed; "
                "pip install 'phonecli[quant]'"
            ) from e
        from transformers import Qwen2AudioEncoder, Qwen2AudioForConditionalGeneration

        model_type, _ = read_model_type(source, revision)
        expect_model_type(spec, source, model_type, {"qwen2_audio", "qwen2_audio_encoder"},
                          "Qwen2AudioForConditionalGeneration")
        self.device = resolve_device(device)
        full_model = model_type == "qwen2_audio"
        cls = Qwen2AudioForConditionalGeneration if full_model else Qwen2AudioEncoder
        model, info = load_pretrained(
            cls, source, what=f"{cls.__name__} in 4-bit", errors=(OSError, ValueError, RuntimeError, ImportError),
            revision=revision, dtype=torch.float32, quantization_config=nf4_config(), device_map=self.device,
        )
        if full_model:
            raise_if_missing(source, info, "Qwen2-Audio", prefix="audio_tower.")
            tower = model.model.audio_tower
            # Drop the 7B language model: only the tower is needed from here on.
            del model
            gc.collect()
        else:
            raise_if_missing(source, info, "Qwen2AudioEncoder")
            tower = model
        self.model = tower.eval()
        self.config = self.model.config
        self.model_id = source
        self.revision = hub_commit(source, revision) or revision
        self.hidden_size = int(self.config.d_model)
        self.num_states = int(self.config.encoder_layers) + 1
        self.quantization = {"method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                             "bnb_4bit_compute_dtype": "float32"}
        self.feature_extractor = load_whisper_feature_extractor(source, revision)
        self._setup_windows(source)
        self.settings = {**self.window_settings(), "quantization": self.quantization,
                         "final_state": "avg-pooled 25 frames/s, stored at 50 frames/s by repeating each frame twice"}
        check_registry_numbers(spec, source, self.num_states, self.hidden_size)

    def _window_states(self, hidden_states: tuple, b: int, frames: int) -> np.ndarray:
        """Window ``b`` trimmed to ``frames`` -> float32 ``(S, frames, D)``, the pooled last
        state repeated x2 back to 50 frames/s."""
        import torch

        *full_rate, pooled = hidden_states
        if pooled.shape[1] * POOL != full_rate[0].shape[1]:
            raise ExtractionError(
                f"{self.spec.name}: final state has {pooled.shape[1]} frames for {full_rate[0].shape[1]} "
                f"input frames; expected the {POOL}x average pool of Qwen2AudioEncoder"
            )
        # Exact repetition, not interpolation: stored frames 2j and 2j+1 are both pooled frame j.
        repeated = pooled[b, : -(-frames // POOL)].repeat_interleave(POOL, dim=0)[:frames]
        return torch.stack([*(h[b, :frames] for h in full_rate), repeated]).float().cpu().numpy()

    def layers(self) -> list[LayerInfo]:
        n = self.num_states - 1
        fr = self.frame_rate
        out = [LayerInfo(0, "conv+positions", fr, "gelu(conv1) -> gelu(conv2, stride 2) + learned positions")]
        out += [LayerInfo(i, f"encoder_layer.{i}", fr, "output of encoder layer (4-bit nf4 linears)") for i in range(1, n)]
        out.append(LayerInfo(
            n, f"avgpool(encoder_layer.{n}) + final LayerNorm [25 fps, repeated x2]", fr,
            f"last_hidden_state: AvgPool1d(2,2) -> layer_norm, natively {fr / POOL:g} frames/s; stored at "
            f"{fr:g} frames/s by exact repetition (frames 2j and 2j+1 are identical)",
        ))
        return out
