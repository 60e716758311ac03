"""Time `data prepare` / `data validate` on a SpeechOcean762-sized corpus (both readers).

Builds a synthetic corpus with the release's shape (250 speakers x 20 utterances, 16 kHz
mono PCM-16 WAV, scores.json with ~9 phones per utterance) in a temp dir, converts it to
parquet shards, and times each step. Usage::

    python bench/data_prepare.py [--utterances 5000]

Audio is 0.25-0.4 s per utterance by default (the real corpus averages ~4 s); ``--seconds 4``
gives the release's audio volume (~640 MB of 16-bit WAV for 5,000 files), which is what the
content hash (``audio_sha256``, part of ``corpus_id``) costs: the script times ``prepare`` (hashing
included) and, separately, reading + SHA-256 of every file alone, and prints the hash's share.
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
    ap.add_argument("--seconds", type=float, default=0.25, help="shortest utterance (s); 4 = the release's volume")
    ap.add_argument("--threads", type=int, default=None, help="default: phonecli's (OMP_NUM_THREADS when set)")
    args = ap.parse_args()
    from phonecli.threads import configure, machine_line

    print(machine_line(configure(args.threads)))
    per = 20
    spk = args.utterances // per
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        make_openslr(tmp / "so", n_train_speakers=spk // 2, n_test_speakers=spk - spk // 2, per_speaker=per,
                     base_seconds=args.seconds)
        print(f"build corpus ({spk * per} utts): {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        shards = to_parquet(tmp / "so", tmp / "hf")
        mb = sum(p.stat().st_size for p in shards) / 1e6
        print(f"to parquet ({mb:.0f} MB): {time.perf_counter() - t:.1f} s")
        timings: dict[str, float] = {}
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
            timings[label] = dt
            print(f"{label}: {dt:.2f} s ({len(out) if isinstance(out, list) else len(out.utterances)} items, "
                  f"{spk * per / dt:.0f} utt/s)")
        from phonecli.data import load_manifest
        from phonecli.data.audio import file_hash

        m1 = load_manifest(tmp / "m1")
        files = [m1.audio_path(u) for u in m1]
        nbytes = sum(f.stat().st_size for f in files)
        t = time.perf_counter()
        hashes = [file_hash(f) for f in files]
        hash_s = time.perf_counter() - t
        assert hashes == [u.audio_sha256 for u in m1]
        print(f"audio content hash alone (read + SHA-256, {len(files)} files, {nbytes / 1e6:.0f} MB, warm page cache): "
              f"{hash_s:.2f} s ({nbytes / hash_s / 1e6:.0f} MB/s) = {100 * hash_s / timings['prepare openslr']:.0f}% "
              f"of `prepare openslr`")

        t = time.perf_counter()
        load_manifest(tmp / "m1")
        print(f"load manifest: {time.perf_counter() - t:.3f} s")


if __name__ == "__main__":
    main()
