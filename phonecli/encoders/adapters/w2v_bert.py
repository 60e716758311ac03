"""Wav2Vec2-BERT 2.0 (facebook/w2v-bert-2.0): ``Wav2Vec2BertModel`` + ``SeamlessM4TFeatureExtractor``.

Input: the extractor computes Kaldi-style 80-bin log-mel fbank (25 ms window, 10 ms hop,
``snip_edges``: ``1 + (samples - 400) // 160`` frames), normalises every mel bin of each
utterance over that utterance only, pads the batch (to an even count) and stacks pairs of
frames (stride 2) -> 160-dim vectors at **50 frames/s**; an odd last fbank frame is dropped.
So ``num_frames(samples) = (1 + (samples - 400) // 160) // 2``, which equals the attention
mask's sum; every state is trimmed to it.

Batching: per-utterance normalisation happens before padding, padded frames are zeroed before
the conformer and masked in attention and in the depthwise convolutions, so a padded batch with
the attention mask gives the same features as one-by-one (``padding_safe = True``, tested).

What is stored: the model's own ``hidden_states`` tuple (``num_hidden_layers + 1`` = 25 x 1024):
state 0 = feature projection (LayerNorm -> Linear) of the stacked fbank, the input of conformer
layer 1 (padding zeroed); state i = output of conformer layer i. Each conformer block ends in
its own ``final_layer_norm`` and there is no model-level final LayerNorm, so the "pre/post final
LayerNorm" question of stable-layer-norm wav2vec2 models does not arise: the last state is the
encoder output. (``last_hidden_state`` differs from it only for configs with
``use_intermediate_ffn_before_adapter``/``add_adapter``, which w2v-bert-2.0 does not use; the
optional adapter's output is not stored.)
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
WIN, HOP = 400, 160  # fixed in SeamlessM4TFeatureExtractor._extract_fbank_features


class Adapter(EncoderAdapter):
    """Wav2Vec2-BERT -> ``(num_hidden_layers + 1, num_frames(samples), hidden_size)`` float32, 50 frames/s."""

    padding_safe = True

    def __init__(self, spec: ModelSpec, source: str, *, revision: str | None = None,
                 device: str = "cpu", trust_remote_code: bool = False):
        super().__init__(spec, source, revision=revision, device=device, trust_remote_code=trust_remote_code)
        import torch
        from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertModel

        model_type, _ = read_model_type(source, revision)
        expect_model_type(spec, source, model_type, {"wav2vec2-bert"}, "Wav2Vec2BertModel")
        self.device = resolve_device(device)
        # A ForCTC checkpoint loads into the base class by stripping "wav2vec2_bert.".
        model, info = load_pretrained(Wav2Vec2BertModel, source, revision=revision, dtype=torch.float32)
        raise_if_missing(source, info, "Wav2Vec2BertModel", optional=("masked_spec_embed",))
        self.model = model.eval().to(self.device)
        self.config = model.config
        self.feature_extractor, self.processor_source = load_feature_extractor(SeamlessM4TFeatureExtractor, spec, source, revision)
        fe = self.feature_extractor
        if fe.num_mel_bins * fe.stride != self.config.feature_projection_input_dim:
            raise ExtractionError(
                f"{source}: feature extractor gives {fe.num_mel_bins} x stride {fe.stride} = "
                f"{fe.num_mel_bins * fe.stride} dims but the model expects {self.config.feature_projection_input_dim}"
            )
        self.stride = int(fe.stride)
        self.model_id = source
        self.revision = hub_commit(source, revision) or revision
        self.hidden_size = int(self.config.hidden_size)
        self.num_states = int(self.config.num_hidden_layers) + 1
        self.frame_rate = SAMPLE_RATE / (HOP * self.stride)
        self.settings = {"features": f"SeamlessM4TFeatureExtractor {fe.num_mel_bins}-bin fbank, stride-{self.stride} "
                                     "stacking, per-utterance mel-bin normalisation", "attention_mask": True,
                         "processor_source": self.processor_source}
        check_registry_numbers(spec, source, self.num_states, self.hidden_size)

    def layers(self) -> list[LayerInfo]:
        return describe_states("w2v-bert", self.num_states, self.frame_rate, detail={"stride": self.stride})

    def num_frames(self, num_samples: int) -> int:
        """Stacked fbank frames: ``(1 + (samples - 400) // 160) // 2`` (0 below 400 samples)."""
        if num_samples < WIN:
            return 0
        return (1 + (int(num_samples) - WIN) // HOP) // self.stride

    def forward(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """``waves``: float32 ``(samples,)`` at 16 kHz -> per utterance float32
        ``(num_hidden_layers + 1, num_frames(samples), hidden_size)``; one padded batch + attention mask."""
        import torch

        waves = check_waves(self.spec.name, waves, min_samples=WIN + HOP * (self.stride - 1))
        if not waves:
            return []
        enc = self.feature_extractor(waves, sampling_rate=SAMPLE_RATE, padding=True,
                                     return_attention_mask=True, return_tensors="pt")
        mask = enc["attention_mask"]
        lengths = mask.sum(-1).tolist()
        expected = [self.num_frames(len(w)) for w in waves]
        if lengths != expected:
            raise ExtractionError(
                f"{self.spec.name}: feature extractor gave {lengths} frames where the length formula says "
                f"{expected}; the preprocessor_config.json is not a standard SeamlessM4TFeatureExtractor"
            )
        with torch.inference_mode():
            res = self.model(enc["input_features"].to(self.device, torch.float32),
                             attention_mask=mask.to(self.device), output_hidden_states=True)
            states = torch.stack(res.hidden_states, dim=1).float().cpu().numpy()  # (B, S, T, D)
        return [np.ascontiguousarray(states[b, :, :n]) for b, n in enumerate(lengths)]
