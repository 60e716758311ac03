"""A late-fusion sweep of 11 weights vs one evaluation of one run, on the same posteriors.

Prepares the bundled sample corpus (or uses --data DIR), writes two run directories whose
log-posteriors are noisy CTC paths over each utterance's canonical phones (two noise levels;
probes are not trained here, the cost of fusion does not depend on where posteriors came from),
then times

  sweep      ``phonecli.fuse.late_fusion`` with ``--alphas 0:1:0.1`` (11 weight vectors): load and
             align both runs, score every weight on dev (and test, reported only), write the
             fused run + sweep.csv + sweep.png;
  evaluate   ``phonecli.evaluate.evaluate_run`` of one input run, as `phonecli evaluate` does it
             (both protocols, 1000-replicate speaker bootstrap);

best of --repeats, serial (``n_jobs=1``) and with the default worker policy.

    MPLBACKEND=Agg /work/venv/bin/python bench/fusion_sweep.py [--data DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np


def synthetic_run(path: Path, data: Path, noise: float, seed: int):
    from scipy.special import log_softmax

    from phonecli.data.manifest import Manifest
    from phonecli.data.phones import VOCAB, encode
    from phonecli.runs import Run

    m = Manifest.load(data)
    run = Run.create(path, "probe", config={"head": "synthetic", "noise": noise}, corpus_id=m.corpus_id, data=data,
                     frame_rate=50, sources=[{"name": f"synthetic-{seed}"}])
    for split in ("train", "dev", "test"):
        post = {}
        for u in m.split(split):
            rng = np.random.default_rng(seed * 100_000 + zlib.crc32(u.utt_id.encode()) % 100_000)
            t = max(1, (u.num_samples - 400) // 320 + 1)
            ids = encode(u.canonical_phones)
            logits = rng.normal(0.0, noise, size=(t, len(VOCAB)))
            logits[:, 0] += 5.0
            edges = np.linspace(0, t, len(ids) + 1).astype(int)
            for p, a, b in zip(ids, edges[:-1], edges[1:]):
                logits[a:max(a + 1, (a + b) // 2), p] += 8.0
            post[u.utt_id] = log_softmax(logits, axis=1).astype(np.float32)
        run.write_posteriors(split, post)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="a prepared manifest dir (default: the sample corpus, prepared)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    logging.disable(logging.INFO)

    from phonecli.data import prepare_corpus
    from phonecli.evaluate import evaluate_run
    from phonecli.fuse import fuse_late

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = Path(args.data) if args.data else tmp / "data"
        if not args.data:
            prepare_corpus("sample", data, progress=False)
        a = synthetic_run(tmp / "a", data, 1.3, 1)
        b = synthetic_run(tmp / "b", data, 1.5, 2)
        n_dev = len(a.read_posteriors("dev"))
        n_test = len(a.read_posteriors("test"))
        # warm-up: imports (torch for the CTC loss, matplotlib, sklearn) are not what we measure
        fuse_late([a, b], tmp / "warm", alphas="0.5", n_jobs=1)
        evaluate_run(a.path, ci=False)

        def best(fn) -> float:
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return min(times)

        t_eval = best(lambda: evaluate_run(a.path, n_bootstrap=1000))
        t_eval_seed = best(lambda: evaluate_run(a.path, protocol="seed", ci=False))
        t_sweep = best(lambda: fuse_late([a, b], tmp / "late", alphas="0:1:0.1", n_jobs=1, overwrite=True))
        t_sweep_auto = best(lambda: fuse_late([a, b], tmp / "late2", alphas="0:1:0.1", overwrite=True))
        from phonecli.runs import Run

        chosen = Run.open(tmp / "late").info["selection"]
        print(f"{n_dev} dev + {n_test} test utterances, 2 runs at 50 fps; best of {args.repeats}")
        print(f"one evaluation (both protocols, 1000 bootstrap): {t_eval:.2f} s")
        print(f"one evaluation (seed protocol, no CI):           {t_eval_seed:.2f} s")
        print(f"late-fusion sweep, 11 weights, serial:           {t_sweep:.2f} s "
              f"({t_sweep / 11 * 1000:.0f} ms per weight incl. writing the run)")
        print(f"late-fusion sweep, 11 weights, default workers:  {t_sweep_auto:.2f} s")
        print(f"chosen alpha {chosen['alpha']:g} on dev PER {chosen['value']:.2f}")
        print(f"sweep of 11 weights / one evaluation = {t_sweep / t_eval:.2f}")


if __name__ == "__main__":
    main()
