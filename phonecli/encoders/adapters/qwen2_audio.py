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

Input: ``WhisperFeatureExtractor`` with 128 mel bins, fixed 30 s windows (see whisper.py: the
same windowing and batching rules apply; ``padding_safe = True``).

Padding mask: the tower gets exactly the mask ``Qwen2AudioModel.forward`` builds (transformers
5.24, ``modeling_qwen2_audio.py``): valid mel frames from the feature extractor's attention mask
(``ceil(samples / 160)``), ``audio_feat_lengths = (mel - 1) // 2 + 1`` valid positions of the 1,500,
``create_bidirectional_mask`` over those for the tower's attention. Without it every state after
the first attends to the zero-padded rest of the 30 s window (a 1 s clip is 1,450 of 1,500
positions of padding), which is not what Qwen2-Audio computes.

What is stored (``encoder_layers + 1`` = 33 states x 1280 for the 7B model, 50 frames/s;
:mod:`phonecli.encoders.layers`): the tower's own ``hidden_states`` tuple. States 0..31 are the
conv stem + positions and the outputs of layers 1..31 at 50 frames/s, ``audio_feat_lengths``
frames per window (= ``ceil(samples / 320)``). The tower then average-pools the last layer's
output (kernel 2, stride 2) to **25 frames/s** and applies ``layer_norm``; ``capture_outputs``
replaces the last entry of ``hidden_states`` with that ``last_hidden_state`` -- what the language
model reads through the projector, ``audio_output_lengths = (feat - 2) // 2 + 1 = feat // 2``
pooled frames per window (``Qwen2AudioProcessor`` inserts exactly that many audio tokens).

One ``(states, frames, dim)`` array per utterance holds both rates: the pooled state is stored
**at 50 frames/s by exact repetition** -- stored frames ``2j`` and ``2j+1`` both hold pooled frame
``j`` -- and, when a window's full-rate count is odd, its last full-rate frame repeats the last
pooled frame instead of a pooled frame that would average a real and a padded position (which
Qwen never feeds its language model). So every stored state has ``feat`` frames and the last
one holds exactly Qwen's ``feat // 2`` distinct pooled frames (a 16,001-sample clip: 51 frames,
25 distinct pooled ones). A window with fewer than 2 full-rate frames (<= 320 samples, only
possible as the tail of audio longer than 30 s) has no pooled frame and is dropped; Qwen2-Audio
itself truncates audio at 30 s. The un-pooled output of the last layer is not part of
``hidden_states`` and is not stored.
"""

from __future__ import annotations

import gc
import math

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
from phonecli.encoders.adapters.whisper import (
    SAMPLES_PER_FRAME,
    WindowedLogMelAdapter,
    load_whisper_feature_extractor,
)
from phonecli.encoders.base import ExtractionError, LayerInfo, ModelSpec
from phonecli.encoders.layers import describe_states

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

    min_samples = SAMPLES_PER_FRAME + 1  # > 320 samples: 2 full-rate frames, hence one pooled frame

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
        self.feature_extractor, self.processor_source = load_whisper_feature_extractor(spec, source, revision)
        self._setup_windows(source)
        self.settings = {**self.window_settings(), "quantization": self.quantization,
                         "attention_mask": "padding mask of Qwen2AudioModel.forward (valid mel frames from the "
                                           "feature extractor's attention mask)",
                         "final_state": "avg-pooled 25 frames/s (Qwen's audio_output_lengths), stored at 50 frames/s "
                                        "by repeating each pooled frame twice; an odd last frame repeats the last "
                                        "pooled frame"}
        check_registry_numbers(spec, source, self.num_states, self.hidden_size)

    def frames_in_window(self, samples: int) -> int:
        """``audio_feat_lengths`` of a window with ``samples`` real samples (= ``ceil(samples / 320)``),
        or 0 when it has no pooled frame (``audio_output_lengths`` = 0: <= 320 samples)."""
        feat = (math.ceil(samples / (SAMPLES_PER_FRAME // 2)) - 1) // 2 + 1 if samples > 0 else 0
        return feat if self.pooled_frames(feat) > 0 else 0

    @staticmethod
    def pooled_frames(feat: int) -> int:
        """``Qwen2AudioEncoder._get_feat_extract_output_lengths``' second value for ``feat`` full-rate frames."""
        return (feat - 2) // 2 + 1 if feat > 0 else 0

    def _encode(self, feats, mel_lengths) -> tuple:
        """The tower's ``hidden_states`` with the padding mask ``Qwen2AudioModel.forward`` builds
        (transformers 5.24 ``modeling_qwen2_audio.py``; the same steps, written out because the
        model builds it inline)."""
        import torch
        from transformers.masking_utils import create_bidirectional_mask

        feat_lengths, _ = self.model._get_feat_extract_output_lengths(mel_lengths)
        batch, _, max_mel = feats.shape
        max_seq_len = (max_mel - 2) // 2 + 1
        seq_range = torch.arange(max_seq_len, dtype=feat_lengths.dtype, device=feat_lengths.device)
        padding_mask = seq_range[None, :].expand(batch, max_seq_len) >= feat_lengths[:, None]
        mask_2d = (~padding_mask).to(dtype=torch.long)
        dummy = torch.zeros((batch, max_seq_len, 1), dtype=self._input_dtype(), device=feats.device)
        mask = create_bidirectional_mask(config=self.model.config, inputs_embeds=dummy, attention_mask=mask_2d)
        return self.model(feats, attention_mask=mask, output_hidden_states=True).hidden_states

    def _window_states(self, hidden_states: tuple, b: int, frames: int) -> np.ndarray:
        """Window ``b`` trimmed to ``frames`` -> float32 ``(S, frames, D)``; the pooled last state
        repeated x2 back to 50 frames/s, holding exactly ``frames // 2`` distinct pooled frames."""
        import torch

        *full_rate, pooled = hidden_states
        if pooled.shape[1] * POOL != full_rate[0].shape[1]:
            raise ExtractionError(
                f"{self.spec.name}: final state has {pooled.shape[1]} frames for {full_rate[0].shape[1]} "
                f"input frames; expected the {POOL}x average pool of Qwen2AudioEncoder"
            )
        # Exact repetition, not interpolation: stored frames 2j and 2j+1 are both pooled frame j;
        # an odd last frame repeats the last valid pooled frame (never the one averaging padding).
        source = torch.clamp(torch.arange(frames, device=pooled.device) // POOL, max=self.pooled_frames(frames) - 1)
        repeated = pooled[b].index_select(0, source)
        return torch.stack([*(h[b, :frames] for h in full_rate), repeated]).float().cpu().numpy()

    def layers(self) -> list[LayerInfo]:
        return describe_states("qwen2-audio", self.num_states, self.frame_rate)
