"""Spectral-input adapters on CPU, random full-width models (no download).

1. Whisper-base-size encoder (6 x 512, 80 mel): ``Adapter.forward`` on short utterances vs a
   bare ``encoder(features, output_hidden_states=True)`` on the same 30 s windows (overhead
   ratio), and the real-time factor. Every utterance costs a full 30 s window, so short
   SpeechOcean-like utterances (~4 s) pay ~7.5x their length.
2. Qwen2-Audio tower at full width (1280, 20 heads, 5120 ffn) but ``--qwen-layers`` deep:
   seconds per 30 s window per layer in 4-bit nf4 (bitsandbytes on CPU) vs float32, and the
   tower's weight bytes in each. The real tower has 32 layers.
3. Parakeet at full width (1024, 8 heads, 4096 ffn) but ``--parakeet-layers`` deep: seconds
   per audio second per layer (real: 24 layers for 0.6b, 42 for 1.1b).

Usage: python bench/spectral_adapters.py [--utts 8] [--seconds 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers as T

from phonecli.encoders.registry import get_adapter


def best_of(fn, repeat=2) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def weight_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values() if torch.is_tensor(t))


def bench_whisper(root: Path, waves: list[np.ndarray]) -> None:
    d = root / "whisper-base-size"
    cfg = T.WhisperConfig(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048,
                          decoder_layers=1, decoder_attention_heads=8, decoder_ffn_dim=256, vocab_size=128,
                          num_mel_bins=80, max_source_positions=1500, max_target_positions=32,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    T.WhisperForConditionalGeneration(cfg).save_pretrained(d)
    T.WhisperFeatureExtractor(feature_size=80).save_pretrained(d)
    a = get_adapter(str(d))
    audio_s = sum(len(w) for w in waves) / 16000
    t_adapter = best_of(lambda: a.forward(waves))

    def bare():
        for s in range(0, len(waves), 8):
            feats = a.feature_extractor(waves[s: s + 8], sampling_rate=16000, return_tensors="pt").input_features
            with torch.inference_mode():
                a.model(feats, output_hidden_states=True)

    t_bare = best_of(bare)
    print(f"whisper-base-size: {len(waves)} utts, {audio_s:.1f} s audio -> adapter {t_adapter:.2f} s "
          f"(RTF {t_adapter / audio_s:.3f}), bare extractor+encoder {t_bare:.2f} s, overhead ratio "
          f"{t_adapter / t_bare:.3f}; encoder input {len(waves) * 30} s of windows for {audio_s:.1f} s of audio")


def bench_qwen(root: Path, layers: int) -> None:
    d = root / "qwen2-audio-width"
    cfg = T.Qwen2AudioConfig(
        audio_config=dict(d_model=1280, encoder_layers=layers, encoder_attention_heads=20, encoder_ffn_dim=5120,
                          num_mel_bins=128, max_source_positions=1500),
        text_config=dict(model_type="qwen2", vocab_size=256, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1),
        audio_token_index=200)
    T.Qwen2AudioForConditionalGeneration(cfg).save_pretrained(d)
    T.WhisperFeatureExtractor(feature_size=128).save_pretrained(d)
    q4 = get_adapter(str(d))
    fp32 = T.Qwen2AudioForConditionalGeneration.from_pretrained(d).model.audio_tower.eval()
    w = [np.random.default_rng(1).standard_normal(16000 * 4).astype(np.float32) * 0.1]
    feats = q4.features(w)
    with torch.inference_mode():
        t4 = best_of(lambda: q4.model(feats, output_hidden_states=True))
        t32 = best_of(lambda: fp32(feats, output_hidden_states=True))
        h4 = q4.model(feats, output_hidden_states=True).hidden_states
        h32 = fp32(feats, output_hidden_states=True).hidden_states
    rel = [float((a - b).norm() / b.norm()) for a, b in zip(h4, h32)]
    print(f"qwen2-audio tower width, {layers} layers, one 30 s window: 4-bit {t4 / layers:.2f} s/layer, "
          f"float32 {t32 / layers:.2f} s/layer (x{t4 / t32:.2f}); weights 4-bit {weight_bytes(q4.model) / 2**20:.1f} MiB "
          f"vs float32 {weight_bytes(fp32) / 2**20:.1f} MiB; relative L2 error of 4-bit states vs float32 per state: "
          + ", ".join(f"{r:.3f}" for r in rel))


def bench_parakeet(root: Path, layers: int, waves: list[np.ndarray]) -> None:
    d = root / "parakeet-width"
    enc = dict(hidden_size=1024, num_hidden_layers=layers, num_attention_heads=8, intermediate_size=4096,
               subsampling_conv_channels=256, num_mel_bins=80)
    T.ParakeetForCTC(T.ParakeetCTCConfig(encoder_config=enc, vocab_size=1025, pad_token_id=1024)).save_pretrained(d)
    T.ParakeetFeatureExtractor().save_pretrained(d)
    a = get_adapter(str(d))
    audio_s = sum(len(w) for w in waves) / 16000
    t = best_of(lambda: a.forward(waves))
    print(f"parakeet width, {layers} layers: {t:.2f} s for {audio_s:.1f} s audio in one padded batch "
          f"= {t / audio_s / layers:.4f} s per audio-second per layer")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utts", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--qwen-layers", type=int, default=2)
    ap.add_argument("--parakeet-layers", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(int(16000 * args.seconds * rng.uniform(0.8, 1.2)))).astype(np.float32)
             for _ in range(args.utts)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bench_whisper(root, waves)
        bench_parakeet(root, args.parakeet_layers, waves)
        bench_qwen(root, args.qwen_layers)


if __name__ == "__main__":
    main()
