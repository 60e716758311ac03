"""MDD on the generated L2-ARCTIC miniature: an fbank MLP probe trained on perceived phones vs the floors.

Builds the miniature of tests/miniatures.py (9 speakers, espeak-ng speech of the annotated
perceived phones at 44.1 kHz, Praat TextGrids with substitutions, deletions, additions,
distortions and ``err``), runs prepare -> extract fbank -> probe (MLP, --targets realized) ->
evaluate, and prints PER and the MDD metrics beside the accept-all and text-prior floors. The
corpus is synthetic and tiny: the numbers show the pipeline and the floors, not a benchmark result.

    python bench/mdd_miniature.py [--per-speaker 6] [--epochs 40]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from miniatures import make_l2arctic  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-speaker", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    import torch

    from phonecli.data.prepare import prepare_corpus
    from phonecli.evaluate import evaluate_run
    from phonecli.extract.runner import extract_features
    from phonecli.probe.train import train_probe

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_l2arctic(tmp / "l2", per_speaker=args.per_speaker)
        m = prepare_corpus(tmp / "l2", tmp / "data")
        cache = extract_features("fbank", tmp / "data", tmp / "cache", device="cpu")
        train_probe([str(cache)], tmp / "data", tmp / "run", head="mlp", targets="realized", epochs=args.epochs,
                    patience=10, seed=0, device="cpu", progress=False)
        r = evaluate_run(tmp / "run", n_bootstrap=200, progress=False)
    mdd, per = r["mdd"], r["per"]
    print(f"L2-ARCTIC miniature: {len(m)} utterances ({len(m.split('test'))} test, 3 test speakers); "
          f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"PER vs annotation: {per['per_test']:.1f}% {per.get('per_test_ci95')}; "
          f"accept-all floor PER {mdd['floors']['accept_all']['per']:.1f}%")
    rows = [("fbank MLP probe", mdd)] + [(f"floor: {k}", v) for k, v in mdd["floors"].items()]
    print(f"{'system':24s} {'P':>6s} {'R':>6s} {'F1':>6s} {'DA':>6s}  TA/FR/FA/CD/DE")
    for name, b in rows:
        c = b["counts"]
        fmt = (lambda v: f"{v:6.3f}" if isinstance(v, float) else "     -")
        print(f"{name:24s} {fmt(b['precision'])} {fmt(b['recall'])} {fmt(b['f1'])} {fmt(b['diagnosis_accuracy'])}"
              f"  {c['ta']}/{c['fr']}/{c['fa']}/{c['cd']}/{c['de']}")
    print(json.dumps({"f1_ci95": mdd.get("f1_ci95")}))


if __name__ == "__main__":
    main()
