"""The PER change int8 storage causes, isolated from training noise: ONE probe, trained on the float16 cache,
evaluated with its saved weights on the float16 and on the int8 cache of the same corpus.

Prepares the bundled sample corpus, extracts fbank twice (``--dtype float16`` and ``--dtype int8``:
per-utterance, per-(layer, channel) scales), trains the quickstart's fbank MLP probe (+-4 frames of
context, 1000-frame batches, lr 2e-3, seed 0) on the float16 cache only, then recomputes its dev/test
posteriors from the int8 cache with ``recompute_posteriors`` (no retraining: the weights, the
standardisation statistics and the batches are the same) and evaluates both (seed protocol). Reports
bytes on disk per stored value, the int8 reconstruction error against float16, the share of frames
whose best phone changes, and test PER (HQ / all) and dev PER on both caches with the difference.

    MPLBACKEND=Agg OMP_NUM_THREADS=1 /work/venv/bin/python bench/int8_per.py [--epochs 40] [--head mlp] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--head", default="mlp")
    ap.add_argument("--batch-frames", type=int, default=1000)
    ap.add_argument("--out", default=None, help="keep the work here (default: a temporary directory)")
    args = ap.parse_args()
    logging.disable(logging.INFO)

    import torch

    from phonecli.cache import FeatureCache
    from phonecli.data import prepare_corpus
    from phonecli.evaluate import evaluate_run
    from phonecli.extract.runner import run_extraction
    from phonecli.probe import recompute_posteriors, train_probe
    from phonecli.probe.features import open_source
    from phonecli.runs import Run

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        data = root / "data"
        if not (data / "manifest.json").exists():
            prepare_corpus("sample", data, progress=False)
        caches, size = {}, {}
        for dtype in ("float16", "int8"):
            rep = run_extraction("fbank", data, root / "cache", dtype=dtype, device="cpu", progress=False)
            caches[dtype] = FeatureCache.open(rep.path)
            c = caches[dtype]
            values = sum(c.num_frames(u) for u in c.utterance_ids()) * len(c.layers) * c.dim
            size[dtype] = (du(Path(rep.path)) / values, du(Path(rep.path)))

        # train ONCE, on float16
        run16 = train_probe(caches["float16"].path, data, root / "runs" / f"fbank-{args.head}-float16", head=args.head,
                            epochs=args.epochs, batch_frames=args.batch_frames, lr=2e-3, patience=5, seed=0,
                            device="cpu", progress=False)
        # the same weights on the int8 cache: a copy of the run whose posteriors come from int8 features
        run8_dir = root / "runs" / f"fbank-{args.head}-float16-weights-on-int8"
        shutil.rmtree(run8_dir, ignore_errors=True)
        shutil.copytree(run16.path, run8_dir)
        run8 = Run.open(run8_dir)
        src = run16.info["sources"][0]
        on_int8 = open_source(caches["int8"].path, "weighted" if src["weighted"] else ",".join(map(str, src["layers"])))
        changed, total, max_lp = 0, 0, 0.0
        for split in ("train", "dev", "test"):
            post8 = recompute_posteriors(run16, split, on_int8)
            post16 = recompute_posteriors(run16, split)
            saved = run16.read_posteriors(split)
            max_lp = max(max_lp, max(float(np.abs(post16[u] - saved[u]).max()) for u in saved))
            for u in saved:
                changed += int((post8[u].argmax(-1) != saved[u].argmax(-1)).sum())
                total += saved[u].shape[0]
            run8.write_posteriors(split, post8)
        run8.info["sources"][0].update({"cache": str(caches["int8"].path), "dtype": "int8",
                                        "note": "weights trained on the float16 cache, evaluated on int8"})
        run8.save_info()
        m16 = evaluate_run(run16.path, protocol="seed", ci=False, progress=False)
        m8 = evaluate_run(run8.path, protocol="seed", ci=False, progress=False)
        per = {k: (m["seed"]["task_a"]["per_hq"], m["seed"]["task_a"]["per_all"]) for k, m in
               (("float16", m16), ("int8", m8))}
        dev = {}
        from phonecli.ctc import greedy_ids, phone_error_rate

        man = run16.manifest()
        dev_ids = caches["float16"].utterance_ids("dev")
        refs = [man.vocab.encode(man[u].canonical_phones) for u in dev_ids]
        for k, r in (("float16", run16), ("int8", run8)):
            post = r.read_posteriors("dev")
            dev[k] = phone_error_rate(refs, [greedy_ids(post[u]) for u in dev_ids])

        # reconstruction error of the int8 store against the float16 one
        err, ref = 0.0, 0.0
        for u in caches["float16"].utterance_ids():
            a = caches["float16"].read(u).astype(np.float32)
            b = caches["int8"].read(u)
            err = max(err, float(np.abs(a - b).max()))
            ref = max(ref, float(np.abs(a).max()))
        n_utts = len(caches["float16"].utterance_ids())
        print(f"sample corpus, fbank (1 state x 80 dims, 100 fps), {n_utts} utterances; one {args.head} probe trained "
              f"on float16 (best dev epoch {run16.info['selection']['epoch']} of {run16.info['selection']['epochs_run']}); "
              f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
        for dtype in ("float16", "int8"):
            print(f"{dtype:<8} {size[dtype][0]:.3f} bytes per stored value ({size[dtype][1] / 1e6:.2f} MB on disk); "
                  f"same weights: dev PER {dev[dtype]:.2f}, test PER HQ {per[dtype][0]:.2f}, all {per[dtype][1]:.2f}")
        print(f"int8 max |error| vs float16: {err:.4g} (max |value| {ref:.4g}); best phone changed on "
              f"{changed} of {total} frames ({100 * changed / total:.2f}%); float16 recompute vs saved "
              f"posteriors max |diff| {max_lp:.2g}")
        print(f"PER change int8 - float16 (same probe, no retraining): test HQ {per['int8'][0] - per['float16'][0]:+.2f} "
              f"points, test all {per['int8'][1] - per['float16'][1]:+.2f}, dev {dev['int8'] - dev['float16']:+.2f}")


if __name__ == "__main__":
    main()
