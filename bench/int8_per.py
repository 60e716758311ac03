"""Bytes per stored value (float16 vs int8 caches) and the PER change int8 storage causes, on the sample corpus.

Prepares the bundled sample corpus, extracts fbank twice (``--dtype float16`` and ``--dtype int8``:
per-channel scales), then trains the same probe (the quickstart's fbank MLP: +-4 frames of context,
1000-frame batches, lr 2e-3, same seed, same batches) on each cache and evaluates both on test. Reports bytes on disk per stored value (everything in the store:
arrays, index, scales, metadata), the int8 reconstruction error against the float16 cache,
and test PER (HQ / all) of both probes with the difference.

    MPLBACKEND=Agg /work/venv/bin/python bench/int8_per.py [--epochs 20] [--head mlp] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--head", default="mlp")
    ap.add_argument("--batch-frames", type=int, default=1000)
    ap.add_argument("--out", default=None, help="keep the work here (default: a temporary directory)")
    args = ap.parse_args()
    logging.disable(logging.INFO)

    from phonecli.cache import FeatureCache
    from phonecli.data import prepare_corpus
    from phonecli.evaluate import evaluate_run
    from phonecli.extract.runner import run_extraction
    from phonecli.probe import train_probe

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        data = root / "data"
        if not (data / "manifest.json").exists():
            prepare_corpus("sample", data, progress=False)
        caches, per, size = {}, {}, {}
        for dtype in ("float16", "int8"):
            rep = run_extraction("fbank", data, root / "cache", dtype=dtype, device="cpu", progress=False)
            caches[dtype] = FeatureCache.open(rep.path)
            c = caches[dtype]
            values = sum(c.num_frames(u) for u in c.utterance_ids()) * len(c.layers) * c.dim
            size[dtype] = (du(Path(rep.path)) / values, du(Path(rep.path)))
            run = train_probe(rep.path, data, root / "runs" / f"fbank-{args.head}-{dtype}", head=args.head,
                              epochs=args.epochs, batch_frames=args.batch_frames, lr=2e-3, patience=5, seed=0,
                              device="cpu", progress=False)
            m = evaluate_run(run.path, protocol="seed", ci=False)
            per[dtype] = (m["seed"]["task_a"]["per_hq"], m["seed"]["task_a"]["per_all"],
                          run.info["selection"]["value"], run.info["selection"]["epoch"])
        # reconstruction error of the int8 store against the float16 one
        err, ref = 0.0, 0.0
        for u in caches["float16"].utterance_ids():
            a = caches["float16"].read(u).astype(np.float32)
            b = caches["int8"].read(u).astype(np.float32)
            err = max(err, float(np.abs(a - b).max()))
            ref = max(ref, float(np.abs(a).max()))
        n_utts = len(caches["float16"].utterance_ids())
        print(f"sample corpus, fbank (1 state x 80 dims, 100 fps), {n_utts} utterances")
        for dtype in ("float16", "int8"):
            print(f"{dtype:<8} {size[dtype][0]:.3f} bytes per stored value ({size[dtype][1] / 1e6:.2f} MB on disk); "
                  f"{args.head} probe: dev PER {per[dtype][2]:.2f} (epoch {per[dtype][3]}), "
                  f"test PER HQ {per[dtype][0]:.2f}, all {per[dtype][1]:.2f}")
        print(f"int8 max |error| vs float16: {err:.4g} (max |value| {ref:.4g})")
        print(f"bytes per value float16 {size['float16'][0]:.3f} int8 {size['int8'][0]:.3f}; "
              f"PER (HQ) change int8 - float16 = {per['int8'][0] - per['float16'][0]:+.2f} points "
              f"(all: {per['int8'][1] - per['float16'][1]:+.2f})")


if __name__ == "__main__":
    main()
