"""Time `data prepare` / `data validate` on a SpeechOcean762-sized corpus (both readers).

Builds a synthetic corpus with the release's shape (250 speakers x 20 utterances, 16 kHz
mono PCM-16 WAV, scores.json with ~9 phones per utterance) in a temp dir, converts it to
parquet shards, and times each step. Usage::

    python bench/data_prepare.py [--utterances 5000]

Audio is 0.25-0.4 s per utterance (the real corpus averages ~4 s), so parquet/audio byte
volumes are ~10x smaller than the release; header reads and JSON work are the same.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from data_corpus import make_openslr, to_parquet  # noqa: E402

from phonecli.data import prepare_corpus, validate_corpus  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utterances", type=int, default=5000)
    args = ap.parse_args()
    per = 20
    spk = args.utterances // per
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        make_openslr(tmp / "so", n_train_speakers=spk // 2, n_test_speakers=spk - spk // 2, per_speaker=per)
        print(f"build corpus ({spk * per} utts): {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        shards = to_parquet(tmp / "so", tmp / "hf")
        mb = sum(p.stat().st_size for p in shards) / 1e6
        print(f"to parquet ({mb:.0f} MB): {time.perf_counter() - t:.1f} s")
        for label, fn in [
            ("validate openslr", lambda: validate_corpus(tmp / "so", progress=False)),
            ("prepare openslr", lambda: prepare_corpus(tmp / "so", tmp / "m1", progress=False)),
            ("validate parquet", lambda: validate_corpus(tmp / "hf", progress=False)),
            ("prepare parquet", lambda: prepare_corpus(tmp / "hf", tmp / "m2", progress=False)),
            ("prepare parquet again (audio already there)", lambda: prepare_corpus(tmp / "hf", tmp / "m2", progress=False)),
        ]:
            t = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t
            print(f"{label}: {dt:.2f} s ({len(out) if isinstance(out, list) else len(out.utterances)} items, "
                  f"{spk * per / dt:.0f} utt/s)")
        from phonecli.data import load_manifest

        t = time.perf_counter()
        load_manifest(tmp / "m1")
        print(f"load manifest: {time.perf_counter() - t:.3f} s")


if __name__ == "__main__":
    main()
