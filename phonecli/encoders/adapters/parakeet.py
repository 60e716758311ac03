"""Parakeet FastConformer encoder (nvidia/parakeet-ctc-0.6b / -1.1b) at 12.5 frames/s.

Loading (transformers 5.23): the Hub checkpoints are ``ParakeetForCTC`` (``model_type:
parakeet_ctc``, keys ``encoder.*`` + ``ctc_head.*``). We load ``ParakeetForCTC`` and keep its
``.encoder`` (a ``ParakeetEncoder``), so no weight depends on prefix guessing;
``ParakeetEncoder.from_pretrained`` on the CTC checkpoint also loads real weights (its
``base_model_prefix`` is ``encoder``), and is used for a bare encoder directory
(``model_type: parakeet_encoder``). Missing encoder weights raise instead of staying random.

Input: ``ParakeetFeatureExtractor`` from the source: pre-emphasis 0.97, 80-bin log-mel (25 ms
Hann window, 10 ms hop, n_fft 512), each mel bin normalised over the utterance's own valid
frames; ``samples // 160`` valid frames (the attention mask). The encoder subsamples 8x with
three stride-2 convolutions: ``T -> floor((T - 1) / 2) + 1`` three times
(``model._get_subsampling_output_length``) -> **12.5 frames/s** (80 ms per frame).

Batching: padded frames are zeroed after the extractor and after every subsampling conv,
masked in attention and before each depthwise convolution; BatchNorm runs in eval mode, so a
padded batch with the attention mask gives the one-by-one features (``padding_safe = True``,
tested).

What is stored: the encoder's own ``hidden_states`` (``num_hidden_layers + 1``: 25 x 1024 for
0.6b, 43 x 1024 for 1.1b): state 0 = subsampling output (x sqrt(d_model) when
``scale_input``), the input of conformer block 1; state i = output of block i. Every block ends
in its own ``norm_out`` LayerNorm and there is no encoder-level final norm, so the last state is
``last_hidden_state`` (what the CTC head reads).
"""

from __future__ import annotations

import numpy as np

from phonecli.encoders.adapters.common import (
    SAMPLE_RATE,
    check_registry_numbers,
    check_waves,
    expect_model_type,
    hub_commit,
    load_feature_extractor,
    load_pretrained,
    raise_if_missing,
    read_model_type,
    resolve_device,
)
from phonecli.encoders.base import EncoderAdapter, ExtractionError, LayerInfo, ModelSpec
from phonecli.encoders.layers import describe_states


class Adapter(EncoderAdapter):
    """Parakeet encoder -> ``(num_hidden_layers + 1, num_frames(samples), hidden_size)`` float32, 12.5 frames/s."""

    padding_safe = True

    def __init__(self, spec: ModelSpec, source: str, *, revision: str | None = None,
                 device: str = "cpu", trust_remote_code: bool = False):
        super().__init__(spec, source, revision=revision, device=device, trust_remote_code=trust_remote_code)
        import torch
        from transformers import ParakeetEncoder, ParakeetFeatureExtractor, ParakeetForCTC

        model_type, _ = read_model_type(source, revision)
        expect_model_type(spec, source, model_type, {"parakeet_ctc", "parakeet_encoder"}, "ParakeetEncoder")
        self.device = resolve_device(device)
        cls = ParakeetForCTC if model_type == "parakeet_ctc" else ParakeetEncoder
        model, info = load_pretrained(cls, source, revision=revision, dtype=torch.float32)
        raise_if_missing(source, info, "Parakeet")
        encoder = model.encoder if model_type == "parakeet_ctc" else model
        self.model = encoder.eval().to(self.device)
        self.config = self.model.config
        self.feature_extractor, self.processor_source = load_feature_extractor(ParakeetFeatureExtractor, spec, source, revision)
        fe = self.feature_extractor
        if fe.feature_size != self.config.num_mel_bins:
            raise ExtractionError(
                f"{source}: preprocessor_config.json has {fe.feature_size} mel bins but the encoder expects "
                f"{self.config.num_mel_bins}"
            )
        self.model_id = source
        self.revision = hub_commit(source, revision) or revision
        self.hidden_size = int(self.config.hidden_size)
        self.num_states = int(self.config.num_hidden_layers) + 1
        self.frame_rate = SAMPLE_RATE / (fe.hop_length * self.config.subsampling_factor)
        self.settings = {"features": f"ParakeetFeatureExtractor log-mel {fe.feature_size} bins, per-utterance "
                                     "normalisation", "subsampling": int(self.config.subsampling_factor),
                         "attention_mask": True, "processor_source": self.processor_source}
        check_registry_numbers(spec, source, self.num_states, self.hidden_size)

    def layers(self) -> list[LayerInfo]:
        return describe_states("parakeet", self.num_states, self.frame_rate,
                               detail={"scale_input": bool(self.config.scale_input)})

    def mel_frames(self, num_samples: int) -> int:
        """Valid log-mel frames: the extractor's ``(samples + n_fft//2*2 - n_fft) // hop``."""
        fe = self.feature_extractor
        return max((int(num_samples) + fe.n_fft // 2 * 2 - fe.n_fft) // fe.hop_length, 0)

    def num_frames(self, num_samples: int) -> int:
        """``floor((T - 1) / 2) + 1`` applied log2(subsampling_factor) times to the mel frames T
        (0 below 2 mel frames = 320 samples: too short)."""
        import torch

        t = self.mel_frames(num_samples)
        if t < 2:  # the extractor's per-bin variance needs >= 2 frames; forward refuses these
            return 0
        return int(self.model._get_subsampling_output_length(torch.tensor([t]))[0])

    def forward(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """``waves``: float32 ``(samples,)`` at 16 kHz -> per utterance float32
        ``(num_hidden_layers + 1, num_frames(samples), hidden_size)``; one padded batch + attention mask."""
        import torch

        # >= 2 valid mel frames: the extractor's per-bin variance divides by (frames - 1).
        waves = check_waves(self.spec.name, waves, min_samples=2 * self.feature_extractor.hop_length)
        if not waves:
            return []
        enc = self.feature_extractor(waves, sampling_rate=SAMPLE_RATE, padding="longest",
                                     return_attention_mask=True, return_tensors="pt")
        with torch.inference_mode():
            res = self.model(enc["input_features"].to(self.device, torch.float32),
                             attention_mask=enc["attention_mask"].to(self.device), output_hidden_states=True)
            states = torch.stack(res.hidden_states, dim=1).float().cpu().numpy()  # (B, S, T, D)
        lengths = res.attention_mask.sum(-1).tolist()
        expected = [self.num_frames(len(w)) for w in waves]
        if lengths != expected:
            raise ExtractionError(
                f"{self.spec.name}: encoder gave {lengths} frames where the length formula says {expected}; "
                "the preprocessor_config.json does not match the encoder"
            )
        return [np.ascontiguousarray(states[b, :, :n]) for b, n in enumerate(lengths)]
