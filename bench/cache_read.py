"""Read throughput of the phonecli feature cache vs numpy memmap and h5py on the same bytes, and int8 vs
float16 caches read from disk (page cache evicted) and from RAM (warm page cache).

Writes the same synthetic float16 features (N utterances x L layers x D, ~1-3 s each at 50
frames/s) as (a) one .npy per utterance, (b) h5py, one dataset per utterance (lhotse style),
(c) a phonecli cache (float16) and (d) a phonecli int8 cache; then serves random minibatches of
16 utterances, all layers, copied into RAM, with a warm page cache. Prints frames/s, GB/s,
ratio vs memmap (target >= 0.5, DESIGN: plain Zarr 0.05-0.30, h5py 0.82), one-layer
whole-split load speed, and bytes on disk per stored value.

int8 vs float16 (issue 13, target >= 1.8x from disk): one *epoch* of random all-layer minibatches
(every utterance exactly once, so each byte comes from the disk once) read as the probe reads it:
float16 via ``read_many``, int8 via ``read_many_int8`` (int8 values + float32 scales, dequantised
later on the probe's device). Cold passes: before each one, every chunk file of both stores is
fsync'ed and dropped from the page cache with ``os.posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)``
(works on ext4/xfs, not on tmpfs: keep --workdir on a real disk). Eviction is checked twice: the
kernel's ``Cached`` figure (/proc/meminfo) must fall by about the stores' size, and a plain
sequential read of the float16 chunk files must be slower cold than warm. Warm passes follow a
full read. Cold and warm passes alternate and the best of --repeats is kept for each.

Verified reads (every part crc32- and finite-checked once per process): the same minibatches
through a cache opened with ``verify=False`` run side by side, in steady state (parts already
checked) and as the first pass of a fresh process (the one-time check included; the process-wide
registry is cleared before each repeat). Target: verified / unverified >= 0.9.

    /work/venv/bin/python bench/cache_read.py [--utts 400 --layers 13 --dim 768 --batches 200]
        [--workdir DIR on a disk]   (default: a temporary directory under the current directory)
"""

from __future__ import annotations

import argparse
import gc
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

    from phonecli.threads import configure, machine_line

    setting = configure(args.threads)
    print(machine_line(setting))

    N, L, D = args.utts, args.layers, args.dim
    # default under the current directory, not /tmp: /tmp may be a tmpfs, whose pages cannot be evicted
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cache_bench_", dir="."))
    work.mkdir(parents=True, exist_ok=True)
    lengths = make_lengths(N, 0)
    ids = [f"{i:09d}" for i in range(N)]
    total_frames = sum(lengths)
    values = total_frames * L * D
    print(f"{N} utterances x {L} layers x {D} dim, {total_frames} frames, "
          f"{values * 2 / 1e6:.0f} MB as float16, in {work}")
    try:
        compare_formats(work, ids, lengths, L, D, args)
        gc.collect()   # unmap every memmap of that comparison: mapped pages cannot be evicted
        os.sync()      # no writeback of the stores just written competes with the cold reads
        int8_vs_float16(work, ids, lengths, L, D, args)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def compare_formats(work: Path, ids: list[str], lengths: list[int], L: int, D: int, args) -> None:
    """npy memmap vs h5py vs phonecli float16/int8 caches, warm page cache (writes the stores it reads)."""
    import h5py

    from phonecli.cache import CacheWriter, FeatureCache, plan_parts
    from phonecli.cache.checksum import VERIFIED

    N = len(ids)
    total_frames = sum(lengths)
    values = total_frames * L * D
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

    def r_cache_int8_raw():
        for b in batch_ids:
            c8.read_many_int8(b)

    os.sync()                                   # no writeback of the freshly written files while timing
    readers = [("memmap (.npy per utt)", r_memmap), ("h5py (dataset per utt)", r_h5),
               ("phonecli cache float16", r_cache), ("phonecli float16, unverified", r_cache_unverified),
               ("phonecli cache int8 (->float32)", r_cache_int8),
               ("phonecli cache int8 (raw+scales)", r_cache_int8_raw),
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
              "phonecli cache int8 (raw+scales)": t["int8"], "phonecli float16, fsspec ranged": float("nan")}
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


def chunk_files(store: Path) -> list[Path]:
    return sorted(p for p in store.rglob("c/0/0/0") if p.is_file())


def evict(files: list[Path]) -> None:
    """Drop ``files`` from the page cache (fsync first: only clean pages can be dropped)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def page_cache_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Cached:"):
                return int(line.split()[1]) * 1024
    return 0


def sequential_read(files: list[Path]) -> float:
    t0 = time.perf_counter()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.read(16 * 2**20):
                pass
    return time.perf_counter() - t0


def int8_vs_float16(work: Path, ids: list[str], lengths: list[int], L: int, D: int, args) -> None:
    """One epoch of random all-layer minibatches, int8 (raw + scales) vs float16, cold (evicted) and warm."""
    from phonecli.cache import FeatureCache

    stores = {dt: work / f"{dt}.zarr" for dt in ("float16", "int8")}
    files = {dt: chunk_files(p) for dt, p in stores.items()}
    everything = files["float16"] + files["int8"]
    nbytes = {dt: sum(f.stat().st_size for f in fs) for dt, fs in files.items()}
    rng = np.random.default_rng(2)
    perm = rng.permutation(len(ids)).tolist()
    epoch = [[ids[i] for i in perm[k:k + args.batch]] for k in range(0, len(perm), args.batch)]
    frames = sum(lengths)

    # eviction check 1: the kernel's page-cache size falls by about the stores' size
    sequential_read(everything)
    before = page_cache_bytes()
    evict(everything)
    dropped = before - page_cache_bytes()
    # eviction check 2: a sequential read of the float16 chunks is slower cold than warm
    cold_seq = sequential_read(files["float16"])
    warm_seq = min(sequential_read(files["float16"]) for _ in range(2))

    def one_epoch(dtype: str) -> float:
        # fresh memmaps: nothing of the previous pass is mapped; verify=False: the one-time crc check
        # reads whole parts (warming the page cache), which would spoil the cold pass
        c = FeatureCache.open(stores[dtype], verify=False)
        read = c.read_many_int8 if dtype == "int8" else c.read_many
        t0 = time.perf_counter()
        for b in epoch:
            read(b)
        return time.perf_counter() - t0

    cold: dict[str, list[float]] = {"float16": [], "int8": []}
    warm: dict[str, list[float]] = {"float16": [], "int8": []}
    for _ in range(args.repeats):
        for dt in ("float16", "int8"):              # alternate: background load hits both alike
            evict(everything)
            cold[dt].append(one_epoch(dt))
            warm[dt].append(one_epoch(dt))          # the cold pass just read every byte: now cached
    best = {k: {dt: min(v[dt]) for dt in v} for k, v in (("cold", cold), ("warm", warm))}
    load = os.getloadavg()
    print(f"\nint8 vs float16, one epoch of random {args.batch}-utterance all-layer minibatches "
          f"({len(epoch)} batches, {frames} frames; best of {args.repeats}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load average {load[0]:.2f} {load[1]:.2f})")
    print(f"  eviction check: page cache fell by {dropped / 1e6:.0f} MB for {sum(nbytes.values()) / 1e6:.0f} MB of "
          f"chunks; sequential float16 read cold {nbytes['float16'] / cold_seq / 1e9:.2f} GB/s vs warm "
          f"{nbytes['float16'] / warm_seq / 1e9:.2f} GB/s (cold {cold_seq / warm_seq:.1f}x slower)"
          + ("" if cold_seq > 1.5 * warm_seq else "  WARNING: eviction did not take effect (tmpfs?)"))
    print(f"  {'':<26} {'cold frames/s':>14} {'warm frames/s':>14} {'bytes read':>11}")
    for dt, label in (("float16", "float16 (read_many)"), ("int8", "int8 (read_many_int8)")):
        print(f"  {label:<26} {frames / best['cold'][dt]:>14.0f} {frames / best['warm'][dt]:>14.0f} "
              f"{nbytes[dt] / 1e6:>9.0f} MB")
    pairs = {k: sorted(a / b for a, b in zip(v["float16"], v["int8"])) for k, v in (("cold", cold), ("warm", warm))}
    print(f"  int8/float16 frames/s: cold (disk) {best['cold']['float16'] / best['cold']['int8']:.2f}x "
          f"(target >= 1.8), warm (page cache) {best['warm']['float16'] / best['warm']['int8']:.2f}x; "
          f"bytes int8/float16 {nbytes['int8'] / nbytes['float16']:.3f}")
    print("  per-repeat ratios (the disk is shared; spread = noise): "
          + "; ".join(f"{k} median {np.median(v):.2f}x, {v[0]:.2f}-{v[-1]:.2f}x" for k, v in pairs.items()))


if __name__ == "__main__":
    main()
