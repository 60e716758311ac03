"""Tiny random encoders saved with ``save_pretrained``: they exercise the real SSL extraction path offline.

The weights are random (seeded), so their features carry no phonetic knowledge beyond what a
random convolution stack keeps; they exist to test the HuBERT code path end to end without
downloading anything, not to be benchmarked.
"""

from __future__ import annotations

from pathlib import Path

from phonecli.errors import ExperimentError

KINDS = ("tiny-hubert",)


def build_model(spec: dict, out: str | Path) -> Path:
    """Save a random ``HubertModel`` (``spec``: ``layers``, ``hidden_size``, ``seed``) + feature extractor to ``out``.

    The CNN keeps HuBERT's kernel/stride stack (320 samples per frame -> 50 frames/s at 16 kHz)
    with narrow channels; ``layers`` Transformer layers -> ``layers + 1`` hidden states of
    ``hidden_size`` dims.
    """
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    kind = spec.get("kind", "tiny-hubert")
    if kind not in KINDS:
        raise ExperimentError(f"build kind {kind!r}: only {', '.join(KINDS)} can be built offline")
    hidden = int(spec.get("hidden_size", 32))
    layers = int(spec.get("layers", 2))
    heads = int(spec.get("heads", 2))
    if hidden % heads:
        raise ExperimentError(f"build: hidden_size {hidden} must be a multiple of heads {heads}")
    conv = int(spec.get("conv_dim", 32))
    # layer-norm CNN + pre-LN encoder, like hubert-large: padding-safe, so the adapter batches utterances
    # (a group-norm CNN must be fed one utterance at a time, several times slower on the CPU)
    cfg = HubertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       intermediate_size=2 * hidden, conv_dim=(conv,) * 7, num_conv_pos_embeddings=16,
                       num_conv_pos_embedding_groups=2, vocab_size=40, feat_extract_norm="layer",
                       do_stable_layer_norm=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()      # "Writing model shards" would interleave with the step lines
    torch.manual_seed(int(spec.get("seed", 0)))
    model = HubertModel(cfg).eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(out)
    return out
