"""Whisper encoder (openai/whisper-*), and the 30 s log-mel window machinery Qwen2-Audio shares.

Loading (transformers 5.23): ``WhisperModel.from_pretrained(src).get_encoder()``. The Hub
checkpoints are ``WhisperForConditionalGeneration`` (keys ``model.encoder.*``); WhisperModel
strips the ``model.`` prefix and loads them, the ``proj_out`` head is reported unexpected.
``WhisperEncoder.from_pretrained`` on the same checkpoint would *silently keep random weights*
(its keys are ``encoder.*``-less), so it is never used; missing encoder keys raise instead.

Input: ``WhisperFeatureExtractor.from_pretrained`` of the source (settings from
``preprocessor_config.json`` or transformers 5's ``processor_config.json``; log-mel, 80 or 128
bins, 10 ms hop), every input padded to exactly 30 s (480,000 samples -> 3,000 mel frames ->
1,500 encoder frames): the encoder has fixed absolute positions and rejects any other length.
Whisper's encoder takes no attention mask (``WhisperEncoder.forward`` ignores it).

What is stored: the model's own ``hidden_states`` tuple, ``encoder_layers + 1`` states at 50
frames/s (:mod:`phonecli.encoders.layers`): state 0 = conv stem + sinusoidal positions (input
of layer 1), state i = output of layer i, and the last state is ``last_hidden_state`` = the
final ``layer_norm`` applied to the last layer's output (``capture_outputs`` ties it; Whisper
is pre-LN), as in transformers 4.x.

Length: each 30 s window is trimmed to the encoder frames that cover real audio: the
extractor's attention mask has ``ceil(samples / 160)`` valid mel frames and the stride-2 conv
stem maps them to ``(mel - 1) // 2 + 1 = ceil(samples / 320)``
(``WhisperEncoder._get_feat_extract_output_lengths``). Audio longer than 30 s is cut into consecutive, non-overlapping 30 s
windows; every window is encoded on its own and the trimmed states are concatenated, so an
utterance of ``n`` samples yields exactly ``ceil(n / 320)`` frames (480,000 is a multiple of
320). States near a window boundary see no context across it: that is how Whisper itself
treats long audio.

Batching: the extractor pads every input to 30 s and normalises each one on its own (log-mel
clamp at its own max - 8), and the encoder has no attention mask, so a batch gives the same
features as one-by-one by construction (``padding_safe = True``). Real frames do attend to the
zero-padded tail of their window -- exactly as in Whisper's own training and inference.
"""

from __future__ import annotations

import math

import numpy as np

# Family-independent helpers live in common.py; they are re-exported here because other
# modules (fine-tuning, older imports) take them from this module.
from phonecli.encoders.adapters.common import (  # noqa: F401
    SAMPLE_RATE,
    check_registry_numbers,
    check_waves,
    expect_model_type,
    first_line,
    hub_commit,
    load_feature_extractor,
    load_pretrained,
    quiet_transformers,
    raise_if_missing,
    read_model_type,
    resolve_device,
)
from phonecli.encoders.base import EncoderAdapter, ExtractionError, LayerInfo, ModelSpec
from phonecli.encoders.layers import describe_states

SAMPLES_PER_FRAME = 320          # 10 ms mel hop x conv2 stride 2
WINDOWS_PER_FORWARD = 8          # bounds activation memory for very long utterances


# -- the 30 s window machinery ------------------------------------------------------------------
def split_windows(wave: np.ndarray, window: int) -> list[np.ndarray]:
    """Consecutive, non-overlapping ``window``-sample pieces (the last one may be shorter)."""
    return [wave[s: s + window] for s in range(0, max(len(wave), 1), window)]


class WindowedLogMelAdapter(EncoderAdapter):
    """Base for fixed-30-s-window log-mel encoders (Whisper, Qwen2-Audio's tower).

    Subclasses set ``self.model`` (the encoder module), ``self.feature_extractor``
    (a ``WhisperFeatureExtractor``) and ``self.processor_source``, ``self.num_states``,
    ``self.hidden_size``, and implement ``layers()``; ``_encode`` runs one batch of windows and
    ``_window_states`` turns one window's states into ``(S, frames, D)``.
    """

    padding_safe = True
    frame_rate = SAMPLE_RATE / SAMPLES_PER_FRAME
    min_samples = 1

    def _setup_windows(self, source: str) -> None:
        fe = self.feature_extractor
        if fe.feature_size != self.model.config.num_mel_bins:
            raise ExtractionError(
                f"{source}: {self.processor_source} has {fe.feature_size} mel bins but the encoder expects "
                f"{self.model.config.num_mel_bins}; the feature extractor does not belong to this model"
            )
        self.window_samples = int(fe.n_samples)
        self.window_frames = int(self.model.config.max_source_positions)
        if self.window_samples != self.window_frames * SAMPLES_PER_FRAME or fe.hop_length * 2 != SAMPLES_PER_FRAME:
            raise ExtractionError(
                f"{source}: feature extractor window ({self.window_samples} samples, hop {fe.hop_length}) does not "
                f"match the encoder's {self.window_frames} positions at {SAMPLES_PER_FRAME} samples/frame"
            )

    def window_settings(self) -> dict:
        return {"features": f"WhisperFeatureExtractor log-mel {self.feature_extractor.feature_size} bins, "
                            "each input padded to 30 s",
                "processor_source": self.processor_source,
                "window_seconds": self.window_samples / SAMPLE_RATE,
                "long_audio": "consecutive non-overlapping 30 s windows, each trimmed to the frames covering "
                              "real audio, concatenated"}

    def frames_in_window(self, samples: int) -> int:
        """Stored frames of a window holding ``samples`` real samples: ``ceil(samples / 320)``."""
        return math.ceil(samples / SAMPLES_PER_FRAME)

    def num_frames(self, num_samples: int) -> int:
        """Frames summed over consecutive 30 s windows (50 frames/s; ``ceil(samples / 320)`` for Whisper)."""
        whole, rest = divmod(int(num_samples), self.window_samples)
        return whole * self.frames_in_window(self.window_samples) + (self.frames_in_window(rest) if rest else 0)

    def features(self, windows: list[np.ndarray]):
        """Log-mel ``(B, mel_bins, 3000)`` float32 tensor, every window padded to 30 s (fine-tuning's input)."""
        return self.features_and_lengths(windows)[0]

    def features_and_lengths(self, windows: list[np.ndarray]):
        """``(log-mel (B, mel_bins, 3000) float32, valid mel frames (B,) int64)``, every window padded
        to 30 s; the valid counts come from the extractor's own attention mask."""
        enc = self.feature_extractor(windows, sampling_rate=SAMPLE_RATE, padding="max_length",
                                     return_attention_mask=True, return_tensors="pt")
        return enc["input_features"], enc["attention_mask"].sum(-1)

    def _encode(self, feats, mel_lengths) -> tuple:
        """The encoder's ``hidden_states`` for one batch of windows (Whisper: no attention mask)."""
        return self.model(feats, output_hidden_states=True).hidden_states

    def _window_states(self, hidden_states: tuple, b: int, frames: int) -> np.ndarray:
        """Window ``b`` of the batch, trimmed to ``frames`` -> float32 ``(S, frames, D)``.

        Trimming before stacking copies only the real frames (a 4 s utterance keeps 200 of
        the window's 1500)."""
        import torch

        return torch.stack([h[b, :frames] for h in hidden_states]).float().cpu().numpy()

    def forward(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """``waves``: float32 ``(samples,)`` at 16 kHz -> per utterance float32
        ``(num_states, num_frames(samples), hidden_size)``; > 30 s audio by consecutive windows."""
        import torch

        waves = check_waves(self.spec.name, waves, min_samples=self.min_samples)
        pieces: list[tuple[int, np.ndarray]] = [
            (u, w) for u, wave in enumerate(waves) for w in split_windows(wave, self.window_samples)
            if self.frames_in_window(len(w)) > 0
        ]
        per_utt: list[list[np.ndarray]] = [[] for _ in waves]
        for start in range(0, len(pieces), WINDOWS_PER_FORWARD):
            chunk = pieces[start: start + WINDOWS_PER_FORWARD]
            feats, mel_lengths = self.features_and_lengths([w for _, w in chunk])
            with torch.inference_mode():
                hidden = self._encode(feats.to(self.device, self._input_dtype()), mel_lengths.to(self.device))
                for b, (u, w) in enumerate(chunk):
                    per_utt[u].append(self._window_states(hidden, b, self.frames_in_window(len(w))))
        return [p[0] if len(p) == 1 else np.ascontiguousarray(np.concatenate(p, axis=1)) for p in per_utt]

    def _input_dtype(self):
        return self.model.conv1.weight.dtype


def load_whisper_feature_extractor(spec: ModelSpec, source: str, revision: str | None):
    """``(WhisperFeatureExtractor, settings origin)`` of the source (see ``common.load_feature_extractor``)."""
    from transformers import WhisperFeatureExtractor

    return load_feature_extractor(WhisperFeatureExtractor, spec, source, revision)


class Adapter(WindowedLogMelAdapter):
    """Whisper encoder -> ``(encoder_layers + 1, ceil(samples / 320), d_model)`` float32, 50 frames/s."""

    def __init__(self, spec: ModelSpec, source: str, *, revision: str | None = None,
                 device: str = "cpu", trust_remote_code: bool = False):
        super().__init__(spec, source, revision=revision, device=device, trust_remote_code=trust_remote_code)
        import torch
        from transformers import WhisperModel

        model_type, _ = read_model_type(source, revision)
        expect_model_type(spec, source, model_type, {"whisper"}, "WhisperModel")
        self.device = resolve_device(device)
        full, info = load_pretrained(WhisperModel, source, revision=revision, dtype=torch.float32)
        raise_if_missing(source, info, "Whisper", prefix="encoder.")
        # Keep only the encoder: the decoder (as large as the encoder) is freed with `full`.
        self.model = full.get_encoder().eval().to(self.device)
        del full
        self.config = self.model.config
        self.model_id = source
        self.revision = hub_commit(source, revision) or revision
        self.hidden_size = int(self.config.d_model)
        self.num_states = int(self.config.encoder_layers) + 1
        self.feature_extractor, self.processor_source = load_whisper_feature_extractor(spec, source, revision)
        self._setup_windows(source)
        self.settings = self.window_settings()
        check_registry_numbers(spec, source, self.num_states, self.hidden_size)

    def layers(self) -> list[LayerInfo]:
        return describe_states("whisper", self.num_states, self.frame_rate)
