"""Time `evaluate_run` on a SpeechOcean762-sized synthetic run (no audio needed).

2,500 train / 2,500 test utterances (125 speakers each, 250 dev speakers carved as DESIGN says
would be 10%: here 12 train speakers become dev), ~10 phones per utterance, posteriors at
50 frames/s built from the realized phones with noise. Prints wall time per stage.

    /work/venv/bin/python bench/bench_evaluate.py [--bootstrap 1000] [--utts 2500]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np


def build(root: Path, n_utts: int, seed: int = 0):
    from phonecli.data.manifest import Manifest, Mispronunciation, Utterance, Word, realize
    from phonecli.data.phones import PHONES

    rng = random.Random(seed)
    utts = []
    per_spk = 20
    for split, n in (("train", n_utts * 9 // 10), ("dev", n_utts // 10), ("test", n_utts)):
        for i in range(n):
            words = []
            for w in range(rng.randint(2, 5)):
                phones = [rng.choice(PHONES) for _ in range(rng.randint(2, 4))]
                acc = [rng.choice([2.0] * 8 + [1.6, 1.0, 0.4, 0.0]) for _ in phones]
                mis = [Mispronunciation(j, phones[j], rng.choice(["<DEL>", "S", "AH", "<unk>"]))
                       for j, a in enumerate(acc) if a < 0.5]
                words.append(Word(text=f"w{w}", phones=phones, phone_accuracy=acc, mispronunciations=mis))
            accuracy = float(round(10 * np.mean([a for w in words for a in w.phone_accuracy]) / 2))
            utts.append(Utterance(utt_id=f"{split}{i:06d}", speaker=f"{split}{i // per_spk:03d}", split=split,
                                  audio="none.wav", duration=2.0, num_samples=32000, sample_rate=16000, text="x",
                                  accuracy=accuracy, completeness=10, fluency=8, prosodic=8, total=accuracy,
                                  words=words, realized_phones=realize(words)))
    m = Manifest(utterances=utts, source={"kind": "bench"})
    m.save(root / "data")
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--utts", type=int, default=2500)
    args = ap.parse_args()
    from phonecli.data.phones import PHONE_TO_ID
    from phonecli.evaluate import evaluate_run
    from phonecli.runs import Run

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        m = build(root, args.utts)
        run = Run.create(root / "run", "probe", config={"model": "bench"}, corpus_id=m.corpus_id,
                         data=root / "data", frame_rate=50)
        nrng = np.random.default_rng(0)
        for split in ("train", "dev", "test"):
            post = {}
            for u in m.split(split):
                frames = [0]
                for p in u.realized_phones:
                    frames += [PHONE_TO_ID[p]] * 4 + [0] * 2
                logits = nrng.normal(0, 1.0, (len(frames), 40))
                logits[np.arange(len(frames)), frames] += 4.0
                post[u.utt_id] = logits - np.log(np.exp(logits).sum(1, keepdims=True))
            run.write_posteriors(split, post)
        n_phones = sum(len(u.canonical_phones) for u in m.split("test"))
        for protocol, ci in (("seed", False), ("phone", False), ("all", True)):
            t = time.perf_counter()
            res = evaluate_run(run.path, protocol=protocol, ci=ci, n_bootstrap=args.bootstrap)
            print(f"protocol={protocol:5s} ci={str(ci):5s} bootstrap={args.bootstrap if ci else 0:5d}: "
                  f"{time.perf_counter() - t:6.1f} s  ({len(m.split('test'))} test utts, {n_phones} test phones)")
        print("PER(HQ)", round(res["seed"]["task_a"]["per_hq"], 2), "pcc_regressor",
              round(res["phone"]["pcc_regressor"], 3), "mdd_auc", round(res["phone"]["mdd_auc"], 3))


if __name__ == "__main__":
    main()
