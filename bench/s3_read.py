"""Minibatch read throughput of a phonecli cache on an S3 server vs on the local disk, same bytes.

Starts an S3-compatible server on 127.0.0.1 (moto's server mode, a separate process; nothing else is
contacted), writes the same synthetic features (N utterances x L layers x D, ~1-3 s each at 50
frames/s) as a float16 and an int8 cache both to a local directory and to ``s3://phonecli-bench/``,
then reads random minibatches of 16 utterances, all layers, as the probe does (float16:
``read_many``; int8: ``read_many_int8``). The local store is read from a warm page cache (memmap);
the S3 store through zarr's FsspecStore + s3fs, one batched ranged request per layer and utterance
of a minibatch, all in flight at once. Prints frames/s and MB/s of stored bytes for each, with
the thread count and the machine load.

A loopback moto server is not a real object store: it bounds what the client side costs
(request building, HTTP, copies) and shows the int8 gain over a network link, not the
latency or bandwidth of AWS/MinIO/Ceph. moto answers a ranged GET by slicing the whole object
in memory (cost grows with the object, not the range), so the caches here use small parts
(--part-mb, default 4 MiB) to keep the server from dominating; phonecli's default is 256 MiB.

    OMP_NUM_THREADS=1 /work/venv/bin/python bench/s3_read.py [--utts 100 --layers 13 --dim 768 --batches 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            return proc, endpoint
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"moto server did not start on {endpoint}")
            time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utts", type=int, default=100)
    ap.add_argument("--layers", type=int, default=13)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--part-mb", type=float, default=4.0, help="cache part size (MiB) for both stores")
    args = ap.parse_args()

    proc, endpoint = start_server()
    # the standard environment variables are phonecli's only source of endpoint and credentials
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                       "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    work = Path(tempfile.mkdtemp(prefix="s3_bench_", dir="."))
    try:
        run(args, endpoint, work)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def run(args, endpoint: str, work: Path) -> None:
    import fsspec

    from phonecli.cache import CacheWriter, FeatureCache, plan_parts

    sys.path.insert(0, str(Path(__file__).parent))
    from cache_read import gen, make_lengths

    N, L, D = args.utts, args.layers, args.dim
    bucket = f"phonecli-bench-{uuid.uuid4().hex[:8]}"
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(bucket)
    lengths = make_lengths(N, 0)
    ids = [f"{i:09d}" for i in range(N)]
    caches: dict[tuple[str, str], FeatureCache] = {}
    write_s = {}
    for dtype in ("float16", "int8"):
        plan = plan_parts([(u, "train", lengths[i]) for i, u in enumerate(ids)], L * D * np.dtype(dtype).itemsize,
                          target_bytes=int(args.part_mb * 2**20))
        meta = dict(model="bench", model_id="bench", frame_rate=50.0, layers=list(range(L)), dim=D, dtype=dtype,
                    corpus_id="bench")
        for where, path in (("local", str(work / f"{dtype}.zarr")), ("s3", f"s3://{bucket}/{dtype}.zarr")):
            t0 = time.perf_counter()
            w = CacheWriter.create_or_open(path, meta, plan)
            for part in w.pending():
                w.write_part(part, {u: gen(ids.index(u), L, lengths[ids.index(u)], D) for u in part.utt_ids})
            caches[(where, dtype)] = w.finalize()
            write_s[(where, dtype)] = time.perf_counter() - t0

    rng = np.random.default_rng(1)
    batches = [[ids[i] for i in rng.choice(N, size=args.batch, replace=False)] for _ in range(args.batches)]
    frames = sum(lengths[int(u)] for b in batches for u in b)

    def reader(key):
        c = caches[key]
        read = c.read_many_int8 if key[1] == "int8" else c.read_many
        return lambda: [read(b) for b in batches]

    keys = list(caches)
    for k in keys:       # warm: page cache (local), connections and scales (S3)
        reader(k)()
    times = {k: [] for k in keys}
    for _ in range(args.repeats):   # interleaved, so background load hits every reader alike
        for k in keys:
            t0 = time.perf_counter()
            reader(k)()
            times[k].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    load = os.getloadavg()
    print(f"{N} utterances x {L} layers x {D}; {args.batches} random minibatches of {args.batch} utterances, all "
          f"layers ({frames} frames); best of {args.repeats}; {args.part_mb:g} MiB parts; S3 = moto server on {endpoint}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load average {load[0]:.2f} {load[1]:.2f}")
    print(f"{'store':<8} {'dtype':<8} {'write s':>8} {'frames/s':>10} {'MB/s stored':>12}")
    for k in keys:
        item = np.dtype(k[1]).itemsize
        print(f"{k[0]:<8} {k[1]:<8} {write_s[k]:>8.1f} {frames / best[k]:>10.0f} "
              f"{frames * L * D * item / best[k] / 1e6:>12.0f}")
    for dtype in ("float16", "int8"):
        print(f"{dtype}: S3/local frames/s = {best[('local', dtype)] / best[('s3', dtype)]:.4f}")
    print(f"int8/float16 frames/s: S3 {best[('s3', 'float16')] / best[('s3', 'int8')]:.2f}x, "
          f"local {best[('local', 'float16')] / best[('local', 'int8')]:.2f}x")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
