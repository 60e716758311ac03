"""What probe resume costs: the per-epoch checkpoint (head + AdamW state + RNG, written whole, then LATEST
moves) against the epoch it protects, per head, measured side by side in one process.

    MPLBACKEND=Agg python bench/probe_checkpoint_cost.py [--epochs 6] [--workdir DIR]

Trains each head on the bundled sample corpus (real `phonecli data prepare` + fbank extraction; 144 train
utterances), timing every checkpoint save (wrapped around ``phonecli.probe.train._save_checkpoint``) and
reading each epoch's own time from train_log.jsonl (which excludes the save). Prints per head: parameters,
checkpoint MB, mean epoch seconds, mean checkpoint seconds and their ratio, with the torch thread count and
the load average. The checkpoint cost is constant per epoch while the epoch grows with the corpus, so on
SpeechOcean762 (17x the sample's train audio) the ratio is about 17x smaller than printed here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--heads", default="linear,mlp,transformer")
    ap.add_argument("--workdir", default=None, help="keep the corpus and cache here (default: a temp dir)")
    args = ap.parse_args()

    import phonecli.probe.train as train
    from phonecli.data.prepare import prepare_corpus
    from phonecli.extract.runner import extract_features

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ckpt_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "sample" / "manifest.json").exists():
        prepare_corpus("sample", work / "sample")
    cache = extract_features("fbank", work / "sample", work / "cache", device="cpu", progress=False)

    saves: list[float] = []
    sizes: list[int] = []
    original = train._save_checkpoint

    def timed(ckpts, model, opt, state, best):
        t0 = time.perf_counter()
        out = original(ckpts, model, opt, state, best)
        saves.append(time.perf_counter() - t0)
        sizes.append(sum(f.stat().st_size for f in ckpts.root.rglob("*") if f.is_file()))
        return out

    train._save_checkpoint = timed
    print(f"torch threads: {torch.get_num_threads()}; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| head | parameters | checkpoint MB | epoch s (mean) | checkpoint s (mean) | checkpoint / epoch |")
    print("|---|---:|---:|---:|---:|---:|")
    for head in args.heads.split(","):
        saves.clear()
        sizes.clear()
        run = train.train_probe(cache, work / "sample", work / "runs" / head, head=head, epochs=args.epochs,
                                patience=args.epochs, device="cpu", progress=False, overwrite=True)
        epochs = [r["seconds"] for r in run.read_log()]
        e, c = statistics.mean(epochs), statistics.mean(saves)
        print(f"| {head} | {run.record.config['params']:,} | {max(sizes) / 1e6:.2f} | {e:.3f} | {c:.4f} | "
              f"{c / e:.3f} |")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
