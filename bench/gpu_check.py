"""One-GPU check of phonecli's CUDA paths (meant to finish in under 8 minutes on one data-centre GPU).

Stages, each printing wall seconds, audio-seconds/s (or frames/s) and peak GPU memory:

1. extraction of the bundled sample corpus (353 s of audio) with a base-size *random* HuBERT
   (HubertConfig() defaults: 12 layers x 768, saved with save_pretrained and loaded by path) in
   float32, float16 and bfloat16 compute (``--precision``: torch.autocast), all stored as float32,
   and the agreement of every layer with the float32 extraction (relative RMS error, min cosine);
   plus an int8 cache of the float32 extraction;
2. one probe epoch (weighted head over all 13 layers) from the float16 cache and from the int8
   cache (int8 values + scales cross to the GPU and are dequantised there);
3. one LoRA fine-tuning epoch of the random HuBERT (bf16 autocast; fp16 with the GradScaler);
4. a 4-bit (bitsandbytes nf4) Qwen2-Audio tower extraction with the real tower's size (32 layers x
   1280, random weights: no checkpoint can be downloaded here) on the dev split.

On a machine without CUDA it exits with one line; ``--cpu`` runs the same stages on the CPU with
tiny models (2 layers x 32) to check the script itself (fp16 fine-tuning is CUDA-only and is
reported as skipped). Random weights: the numbers measure speed, memory and numerical agreement,
never accuracy.

    MPLBACKEND=Agg /work/venv/bin/python bench/gpu_check.py [--cpu] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="no GPU: run the CPU-feasible stages with tiny models")
    ap.add_argument("--out", default=None, help="keep the work here (default: a temporary directory)")
    args = ap.parse_args()
    import torch

    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit(f"gpu_check: no CUDA device visible to torch {torch.__version__} (CUDA build "
                         f"{torch.version.cuda}); run it on a GPU machine, or pass --cpu to check the script "
                         "with tiny models on the CPU")
    logging.disable(logging.INFO)
    device = "cpu" if args.cpu else "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        root.mkdir(parents=True, exist_ok=True)
        Check(root, device).run()


class Check:
    def __init__(self, root: Path, device: str):
        self.root, self.device, self.tiny = root, device, device == "cpu"
        self.t_start = time.perf_counter()

    # -- reporting ---------------------------------------------------------------------------
    def reset_peak(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> str:
        import torch

        if self.device != "cuda":
            return "peak GPU memory n/a (cpu)"
        torch.cuda.synchronize()
        return f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"

    def header(self) -> None:
        import torch

        if self.device == "cuda":
            p = torch.cuda.get_device_properties(0)
            where = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
        else:
            where = f"CPU (--cpu: tiny models), {torch.get_num_threads()} torch threads"
        try:
            import bitsandbytes

            bnb = bitsandbytes.__version__
        except ImportError:
            bnb = "not installed"
        print(f"gpu_check on {where}; torch {torch.__version__}, bitsandbytes {bnb}; "
              f"load average {os.getloadavg()[0]:.2f}")

    # -- stages ------------------------------------------------------------------------------
    def run(self) -> None:
        from phonecli.data import prepare_corpus

        self.header()
        self.data = self.root / "data"
        if not (self.data / "manifest.json").exists():
            prepare_corpus("sample", self.data, progress=False)
        hubert = self.hubert_dir()
        caches = self.extraction(hubert)
        self.probe_epochs(caches)
        self.lora_epochs(hubert)
        self.qwen_tower()
        total = time.perf_counter() - self.t_start
        print(f"total {total:.0f} s" + ("" if total < 480 or self.tiny else "  (over the 8-minute budget)"))

    def hubert_dir(self) -> Path:
        import torch
        from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

        d = self.root / ("hubert-tiny" if self.tiny else "hubert-base-random")
        if not (d / "config.json").exists():
            kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2) if self.tiny else {}
            torch.manual_seed(0)
            HubertModel(HubertConfig(**kw)).eval().save_pretrained(d)
            Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False).save_pretrained(d)
        return d

    def extraction(self, hubert: Path) -> dict:
        from phonecli.cache import FeatureCache
        from phonecli.extract.runner import run_extraction

        print("\n1. extraction, random HuBERT " + ("(tiny)" if self.tiny else "base (12 x 768)")
              + ", sample corpus, stored as float32")
        caches = {}
        for precision in ("float32", "float16", "bfloat16"):
            self.reset_peak()
            rep = run_extraction(str(hubert), self.data, self.root / "cache", dtype="float32", device=self.device,
                                 precision=precision, progress=False)
            caches[precision] = FeatureCache.open(rep.path)
            speed = rep.audio_seconds / rep.elapsed if rep.elapsed and rep.parts_done else float("nan")
            print(f"  {precision:<9} {rep.elapsed:6.1f} s, {speed:8.0f} audio-s/s, {self.peak()}")
        ref = caches["float32"]
        for precision in ("float16", "bfloat16"):
            err, cos = agreement(ref, caches[precision])
            print(f"  {precision} vs float32 per layer: relative RMS error "
                  + " ".join(f"{e:.1e}" for e in err) + f"; max {max(err):.1e}, min cosine {min(cos):.6f}")
        for dtype in ("float16", "int8"):
            rep = run_extraction(str(hubert), self.data, self.root / "cache", dtype=dtype, device=self.device,
                                 progress=False)
            caches[dtype] = FeatureCache.open(rep.path)
        return caches

    def probe_epochs(self, caches: dict) -> None:
        from phonecli.probe import train_probe

        print("\n2. one probe epoch (weighted head, every layer) from the cache")
        for dtype in ("float16", "int8"):
            c = caches[dtype]
            frames = sum(c.num_frames(u) for u in c.utterance_ids("train") + c.utterance_ids("dev"))
            self.reset_peak()
            t0 = time.perf_counter()
            run = train_probe(c.path, self.data, self.root / "runs" / f"probe-{dtype}", head="weighted", epochs=1,
                              patience=1, device=self.device, memory="stream", progress=False, seed=0)
            sec = time.perf_counter() - t0
            log = run.read_log()[0]
            print(f"  {dtype:<8} epoch {log['seconds']:.1f} s (train + dev: {frames / log['seconds']:.0f} frames/s), "
                  f"whole run {sec:.1f} s, train loss {log['train_loss']:.3f}, {self.peak()}")

    def lora_epochs(self, hubert: Path) -> None:
        from phonecli.finetune.train import FinetuneConfig, finetune

        print("\n3. LoRA fine-tuning, one epoch of the sample train split")
        for precision in ("bf16", "fp16"):
            if precision == "fp16" and self.device == "cpu":
                print("  fp16     skipped: fp16 autocast + GradScaler is the CUDA path (refused on the CPU)")
                continue
            self.reset_peak()
            t0 = time.perf_counter()
            cfg = FinetuneConfig(model=str(hubert), data=str(self.data), mode="lora", out=str(self.root / "runs" / f"lora-{precision}"),
                                 epochs=1, lr=1e-3, batch_seconds=40.0, precision=precision, device=self.device,
                                 progress=False)
            res = finetune(cfg)
            sec = time.perf_counter() - t0
            log = res.run.read_log()[0]
            audio = sum(u.duration for u in res.run.manifest().split("train"))
            print(f"  {precision:<8} epoch {log['seconds']:.1f} s ({audio / log['seconds']:.0f} audio-s/s incl. dev), "
                  f"{log['step']} steps, train loss {log['train_loss']:.3f} (finite: {np.isfinite(log['train_loss'])}), "
                  f"whole run {sec:.1f} s, {self.peak()}")

    def qwen_tower(self) -> None:
        import torch
        from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, WhisperFeatureExtractor

        from phonecli.extract.runner import run_extraction

        d = self.root / ("qwen2-audio-tiny" if self.tiny else "qwen2-audio-tower-size-random")
        audio = dict(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128,
                     num_mel_bins=128) if self.tiny else {}   # {} = Qwen2-Audio-7B's tower: 32 x 1280
        print("\n4. Qwen2-Audio audio tower in 4-bit nf4 (bitsandbytes), "
              + ("tiny" if self.tiny else "real tower size (32 x 1280), random weights") + ", dev split")
        if not (d / "config.json").exists():
            t0 = time.perf_counter()
            cfg = Qwen2AudioConfig(audio_config=audio, audio_token_index=150,
                                   text_config=dict(model_type="qwen2", vocab_size=200, hidden_size=64,
                                                    intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                                                    num_key_value_heads=1))
            torch.manual_seed(0)
            Qwen2AudioForConditionalGeneration(cfg).save_pretrained(d)
            WhisperFeatureExtractor(feature_size=128).save_pretrained(d)
            print(f"  random checkpoint written in {time.perf_counter() - t0:.0f} s")
        self.reset_peak()
        rep = run_extraction(str(d), self.data, self.root / "cache", splits="dev", device=self.device, progress=False)
        print(f"  {rep.utterances} utterances, {rep.audio_seconds:.0f} s audio (each a 30 s window): {rep.elapsed:.1f} s, "
              f"{rep.audio_seconds / rep.elapsed:.1f} audio-s/s, {self.peak()}")


def agreement(ref, other) -> tuple[list[float], list[float]]:
    """Per layer over every utterance: relative RMS error ||x - ref|| / ||ref|| and the minimum per-frame cosine."""
    num = np.zeros(len(ref.layers))
    den = np.zeros(len(ref.layers))
    cos = np.ones(len(ref.layers))
    for u in ref.utterance_ids():
        a, b = ref.read(u).astype(np.float64), other.read(u).astype(np.float64)
        num += ((a - b) ** 2).sum(axis=(1, 2))
        den += (a ** 2).sum(axis=(1, 2))
        c = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
        cos = np.minimum(cos, c.min(axis=1))
    return list(np.sqrt(num / den)), list(cos)


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
