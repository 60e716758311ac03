"""Read throughput of the phonecli feature cache vs numpy memmap and h5py on the same bytes.

Writes the same synthetic float16 features (N utterances x L layers x D, ~1-3 s each at 50
frames/s) as (a) one .npy per utterance, (b) h5py, one dataset per utterance (lhotse style),
(c) a phonecli cache (float16) and (d) a phonecli int8 cache; then serves random minibatches of
16 utterances, all layers, copied into RAM, with a warm page cache. Prints frames/s, GB/s,
ratio vs memmap (target >= 0.5, DESIGN: plain Zarr 0.05-0.30, h5py 0.82), one-layer
whole-split load speed, and bytes on disk per stored value.

Verified reads (every part crc32- and finite-checked once per process): the same minibatches
through a cache opened with ``verify=False`` run side by side, in steady state (parts already
checked) and as the first pass of a fresh process (the one-time check included; the process-wide
registry is cleared before each repeat). Target: verified / unverified >= 0.9.

    /work/venv/bin/python bench/cache_read.py [--utts 400 --layers 13 --dim 768 --batches 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def make_lengths(n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return rng.integers(50, 150, size=n).tolist()


def gen(u: int, L: int, T: int, D: int) -> np.ndarray:
    return np.random.default_rng(u).standard_normal((L, T, D), dtype=np.float32)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utts", type=int, default=400)
    ap.add_argument("--layers", type=int, default=13)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="default: a temporary directory (deleted)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads (default: phonecli's default, i.e. OMP_NUM_THREADS when set)")
    args = ap.parse_args()

    import h5py

    from phonecli.cache import CacheWriter, FeatureCache, plan_parts
    from phonecli.cache.checksum import VERIFIED
    from phonecli.threads import configure, machine_line

    setting = configure(args.threads)
    print(machine_line(setting))

    N, L, D = args.utts, args.layers, args.dim
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cache_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    lengths = make_lengths(N, 0)
    ids = [f"{i:09d}" for i in range(N)]
    total_frames = sum(lengths)
    values = total_frames * L * D
    print(f"{N} utterances x {L} layers x {D} dim, {total_frames} frames, "
          f"{values * 2 / 1e6:.0f} MB as float16, in {work}")

    try:
        t = {}
        t0 = time.perf_counter()
        npy = work / "npy"
        npy.mkdir(exist_ok=True)
        for i, u in enumerate(ids):
            np.save(npy / f"{u}.npy", gen(i, L, lengths[i], D).astype(np.float16))
        t["npy"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        with h5py.File(work / "feats.h5", "w") as f:
            for i, u in enumerate(ids):
                f.create_dataset(u, data=gen(i, L, lengths[i], D).astype(np.float16))
        t["h5py"] = time.perf_counter() - t0

        caches = {}
        for dtype in ("float16", "int8"):
            t0 = time.perf_counter()
            bpf = L * D * np.dtype(dtype).itemsize
            plan = plan_parts([(u, "train", lengths[i]) for i, u in enumerate(ids)], bpf)
            meta = dict(model="bench", model_id="bench", frame_rate=50.0, layers=list(range(L)), dim=D,
                        dtype=dtype, corpus_id="bench")
            w = CacheWriter.create_or_open(work / f"{dtype}.zarr", meta, plan)
            for part in w.pending():
                w.write_part(part, {u: gen(ids.index(u), L, lengths[ids.index(u)], D) for u in part.utt_ids})
            caches[dtype] = w.finalize()
            t[dtype] = time.perf_counter() - t0
        nparts = len(caches["float16"].plan)

        rng = np.random.default_rng(1)
        batches = [rng.choice(N, size=args.batch, replace=False).tolist() for _ in range(args.batches)]
        batch_ids = [[ids[i] for i in b] for b in batches]
        frames_read = sum(lengths[i] for b in batches for i in b)
        bytes_read = frames_read * L * D * 2

        mm = {u: np.load(npy / f"{u}.npy", mmap_mode="r") for u in ids}
        h5 = h5py.File(work / "feats.h5", "r")
        h5d = {u: h5[u] for u in ids}
        c16, c8 = caches["float16"], caches["int8"]

        def r_memmap():
            for b in batch_ids:
                [np.array(mm[u]) for u in b]

        def r_h5():
            for b in batch_ids:
                [h5d[u][...] for u in b]

        def r_cache():
            for b in batch_ids:
                c16.read_many(b)

        c16_unverified = FeatureCache.open(work / "float16.zarr", verify=False)

        def r_cache_unverified():
            for b in batch_ids:
                c16_unverified.read_many(b)

        def first_pass(verify: bool):
            """A fresh process's first pass: new cache object, nothing checked yet."""
            VERIFIED.clear()
            c = FeatureCache.open(work / "float16.zarr", verify=verify)
            t0 = time.perf_counter()
            for b in batch_ids:
                c.read_many(b)
            return time.perf_counter() - t0

        # the remote code path (batched byte-range reads through zarr's FsspecStore), on local files
        c_remote = FeatureCache.open(f"file://{work / 'float16.zarr'}")
        c_remote._local = False

        def r_cache_ranged():
            for b in batch_ids:
                c_remote.read_many(b)

        def r_cache_int8():
            for b in batch_ids:
                c8.read_many(b)

        os.sync()                                   # no writeback of the freshly written files while timing
        readers = [("memmap (.npy per utt)", r_memmap), ("h5py (dataset per utt)", r_h5),
                   ("phonecli cache float16", r_cache), ("phonecli float16, unverified", r_cache_unverified),
                   ("phonecli cache int8 (->float32)", r_cache_int8),
                   ("phonecli float16, fsspec ranged", r_cache_ranged)]
        for _, fn in readers:                       # warm the page cache
            fn()
        # interleaved repeats: background load on a shared machine hits every reader alike
        times: dict[str, list[float]] = {name: [] for name, _ in readers}
        for _ in range(args.repeats):
            for name, fn in readers:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        res = {name: min(v) for name, v in times.items()}
        base = res["memmap (.npy per utt)"]
        print(f"\nrandom minibatches: {args.batches} x {args.batch} utterances, all {L} layers, copied to RAM "
              f"(best of {args.repeats}, warm page cache)")
        print(f"{'reader':<34} {'write s':>8} {'frames/s':>11} {'GB/s (fp16 eq.)':>16} {'vs memmap':>10}")
        writes = {"memmap (.npy per utt)": t["npy"], "h5py (dataset per utt)": t["h5py"],
                  "phonecli cache float16": t["float16"], "phonecli float16, unverified": t["float16"],
                  "phonecli cache int8 (->float32)": t["int8"],
                  "phonecli float16, fsspec ranged": float("nan")}
        for name, sec in res.items():
            w = "-" if writes[name] != writes[name] else f"{writes[name]:.1f}"
            print(f"{name:<34} {w:>8} {frames_read / sec:>11.0f} {bytes_read / sec / 1e9:>16.2f} "
                  f"{base / sec:>10.2f}")

        first = {True: [], False: []}
        for _ in range(args.repeats):
            for verify in (False, True):
                first[verify].append(first_pass(verify))
        steady = res["phonecli float16, unverified"] / res["phonecli cache float16"]
        first_ratio = min(first[False]) / min(first[True])
        cache_bytes = du(work / "float16.zarr")
        check_s = max(min(first[True]) - min(first[False]), 0.0)
        print(f"\nverified reads: steady state verified/unverified = {steady:.3f}; first pass of a fresh process "
              f"(check of {cache_bytes / 1e9:.2f} GB included) {min(first[True]):.3f} s vs {min(first[False]):.3f} s "
              f"unverified: ratio = {first_ratio:.3f} (target >= 0.9); one-time check ~{check_s:.3f} s "
              f"({cache_bytes / max(check_s, 1e-9) / 1e9:.1f} GB/s)")

        # one layer of the whole split into RAM
        mid = L // 2
        one_mm, one_c = float("inf"), float("inf")
        for _ in range(args.repeats):
            one_mm = min(one_mm, best_of(lambda: [np.array(mm[u][mid]) for u in ids], 1))
            one_c = min(one_c, best_of(lambda: c16.load_split("train", [mid]), 1))
        one_bytes = total_frames * D * 2
        print(f"\none layer of the whole split: memmap {one_bytes / one_mm / 1e9:.2f} GB/s, "
              f"cache.load_split {one_bytes / one_c / 1e9:.2f} GB/s ({one_mm / one_c:.2f}x memmap)")

        print("\nbytes on disk per stored value (incl. metadata/index/scales):")
        for name, p in [("npy float16", npy), ("h5py float16", work / "feats.h5"),
                        ("phonecli float16", work / "float16.zarr"), ("phonecli int8", work / "int8.zarr")]:
            print(f"  {name:<18} {du(p) / values:.4f}  ({du(p) / 1e6:.0f} MB)")
        print(f"\nphonecli parts: {nparts} (plan target 256 MiB); ratio cache/memmap = "
              f"{base / res['phonecli cache float16']:.2f} (target >= 0.5), "
              f"h5py/memmap = {base / res['h5py (dataset per utt)']:.2f}")
        h5.close()
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
