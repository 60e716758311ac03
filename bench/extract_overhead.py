"""Overhead of `phonecli extract` over the unavoidable work (target: ratio <= 1.10).

Compares, on CPU, for a base-size *random* HuBERT (``HubertConfig()`` defaults: 12 layers x
768, group-norm CNN; saved with ``save_pretrained`` and loaded back by path):

  extract   ``phonecli.extract.run_extraction`` end to end: manifest, model load, planning,
            audio decoding, forward, layer stacking, float16 checks/conversion, Zarr writes,
            finalize;
  bare      model load + ``load_audio`` + ``HubertModel(x, output_hidden_states=True)`` over
            exactly the batches the runner forms (``make_batches`` with the same cap and the
            adapter's padding rule) -- nothing stored.

over ~40 short utterances of the bundled sample corpus. Runs are interleaved and the
minimum of ``--repeats`` is kept (the machine is shared; the minimum is the least-disturbed run).
CPU time of the process (all threads) is reported too: it is the steadier number when other
jobs compete for the cores.

    /work/venv/bin/python bench/extract_overhead.py [--utterances 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def subset_manifest(out: Path, n: int) -> Path:
    """Prepare the bundled sample corpus and keep its ``n`` shortest-first-by-id utterances."""
    from phonecli.data.manifest import Manifest
    from phonecli.data.prepare import prepare_corpus

    full = prepare_corpus("sample", out / "full", progress=False)
    utts = full.utterances[:n]
    for u in utts:
        u.audio = str(full.audio_path(u))  # absolute: the subset manifest lives elsewhere
    sub = Manifest(utterances=utts, source={"kind": "bench-subset"})
    sub.save(out / "subset")
    return out / "subset"


def bare(model_dir: Path, data: Path, batch_seconds: float) -> tuple[float, float]:
    import torch
    from transformers import HubertModel

    from phonecli.data.audio import load_audio
    from phonecli.data.manifest import Manifest
    from phonecli.extract.batching import make_batches

    t0, c0 = time.perf_counter(), time.process_time()
    m = Manifest.load(data)
    model = HubertModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    padding_safe = model.config.feat_extract_norm == "layer"  # the SSL adapter's rule for HuBERT
    waves = {u.utt_id: load_audio(m.audio_path(u)) for u in m}
    batches = make_batches([(k, len(w)) for k, w in waves.items()], int(batch_seconds * 16000), padding_safe)
    with torch.inference_mode():
        for batch in batches:
            n = max(len(waves[u]) for u in batch)
            x = torch.zeros(len(batch), n)
            mask = torch.zeros(len(batch), n, dtype=torch.long)
            for i, u in enumerate(batch):
                x[i, : len(waves[u])] = torch.from_numpy(waves[u])
                mask[i, : len(waves[u])] = 1
            kw = {"attention_mask": mask} if padding_safe and len(batch) > 1 else {}
            model(x, output_hidden_states=True, **kw)
    return time.perf_counter() - t0, time.process_time() - c0


def extract(model_dir: Path, data: Path, batch_seconds: float, cache: Path) -> tuple[float, float, object]:
    from phonecli.extract.runner import run_extraction

    t0, c0 = time.perf_counter(), time.process_time()
    report = run_extraction(str(model_dir), data, cache, device="cpu", batch_seconds=batch_seconds,
                            progress=False)
    return time.perf_counter() - t0, time.process_time() - c0, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-seconds", type=float, default=60.0)
    args = ap.parse_args()

    import torch
    import transformers  # noqa: F401  (import cost outside both timings)
    from transformers import HubertConfig, HubertModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    tmp = Path(tempfile.mkdtemp(prefix="phonecli-bench-"))
    try:
        data = subset_manifest(tmp, args.utterances)
        model_dir = tmp / "hubert-base-random"
        torch.manual_seed(0)
        HubertModel(HubertConfig()).save_pretrained(model_dir)
        from phonecli.data.manifest import Manifest

        m = Manifest.load(data)
        audio_s = sum(u.duration for u in m)
        print(f"{len(m)} utterances, {audio_s:.1f} s audio; random HubertConfig() (base) on CPU, "
              f"{torch.get_num_threads()} threads")

        bare(model_dir, data, args.batch_seconds)  # warm-up: page cache, lazy imports, allocator
        t_bare, t_ext, c_bare, c_ext = [], [], [], []
        report = None
        for r in range(args.repeats):
            wall, cpu = bare(model_dir, data, args.batch_seconds)
            t_bare.append(wall)
            c_bare.append(cpu)
            wall, cpu, report = extract(model_dir, data, args.batch_seconds, tmp / f"cache{r}")
            t_ext.append(wall)
            c_ext.append(cpu)
            print(f"  repeat {r}: bare {t_bare[-1]:.2f} s wall / {c_bare[-1]:.2f} s CPU, "
                  f"extract {t_ext[-1]:.2f} s wall / {c_ext[-1]:.2f} s CPU")
        b, e = min(t_bare), min(t_ext)
        print(f"bare (decode + forward, output_hidden_states): {b:.2f} s   (RTF {b / audio_s:.3f})")
        print(f"phonecli extract:                              {e:.2f} s   (RTF {e / audio_s:.3f})")
        print(f"cache: {report.path} ({report.nbytes / 2**20:.1f} MiB, float16, 13 states x 768)")
        print(f"overhead ratio extract / bare = {e / b:.3f}  (target <= 1.10; median ratio "
              f"{np.median(t_ext) / np.median(t_bare):.3f})")
        # On a shared machine wall time swings with other jobs; CPU time (all threads) does not.
        print(f"CPU-time ratio extract / bare = {min(c_ext) / min(c_bare):.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
