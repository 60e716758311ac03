"""SSL adapter cost on CPU, base-size random models (no download).

1. Overhead: ``Adapter.forward`` (feature extractor + normalisation + all-state copy to numpy)
   vs a bare ``model(x, output_hidden_states=True)`` on the same utterances. Target <= 1.05.
2. Why padding safety matters: padded batch (attention mask) vs one-by-one throughput for a
   "layer"-norm (padding-safe) model of base size.

Usage: python bench/ssl_adapter.py [--utts 16] [--threads 2] [--cpu-time]
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


CLOCK = time.perf_counter


def best_of(fn, repeat=3) -> float:
    """Best of ``repeat`` runs (``--cpu-time``: process CPU seconds, robust on a shared box)."""
    times = []
    for _ in range(repeat):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utts", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpu-time", action="store_true",
                    help="measure process CPU time instead of wall time (use with --threads 1 on a busy machine)")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    lengths = rng.integers(16000, 5 * 16000, args.utts)  # 1-5 s, like SpeechOcean762 utterances
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    seconds = lengths.sum() / 16000
    with tempfile.TemporaryDirectory() as tmp:
        for norm in ("group", "layer"):
            path = Path(tmp) / norm
            torch.manual_seed(0)
            T.HubertModel(T.HubertConfig(feat_extract_norm=norm, do_stable_layer_norm=norm == "layer")).save_pretrained(path)
            a = get_adapter(str(path))
            model = a.model

            def bare():
                with torch.inference_mode():
                    for w in waves:
                        model(torch.from_numpy(w)[None], output_hidden_states=True)

            def adapter_one():
                for w in waves:
                    a.forward([w])

            t_bare, t_one = best_of(bare), best_of(adapter_one)
            print(f"hubert-base-size {norm}-norm: bare forward {seconds / t_bare:.1f} audio-s/s, "
                  f"adapter one-by-one {seconds / t_one:.1f} audio-s/s, overhead ratio {t_one / t_bare:.3f}")
            if a.padding_safe:
                order = np.argsort(lengths)
                batches = [[waves[i] for i in order[j:j + 4]] for j in range(0, len(order), 4)]
                t_batch = best_of(lambda: [a.forward(b) for b in batches])
                print(f"  padded batches of 4 (length-sorted): {seconds / t_batch:.1f} audio-s/s, "
                      f"speed-up vs one-by-one {t_one / t_batch:.2f}")


if __name__ == "__main__":
    main()
