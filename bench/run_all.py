"""Run every benchmark of the README table in one session, side by side, and print the table.

Each script runs as its own process, one after the other (never in parallel: they would
compete for the cores they measure), with its default arguments unless --quick. Its full output
is kept in --log-dir; the headline number is parsed from its last lines and put in a Markdown
table (docs/sections/benchmarks.md holds the measured table and the machine it ran on).

    MPLBACKEND=Agg /work/venv/bin/python bench/run_all.py [--quick] [--only NAME ...] [--log-dir DIR] [--from-logs]
                                                          [--threads N]

Every script runs with the same pinned thread count (``OMP_NUM_THREADS`` in its environment, which
phonecli's thread default and torch / BLAS honour); the table header prints it with the machine
(CPU model, cores, load).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Bench:
    name: str
    script: str
    measures: str
    patterns: list[tuple[str, str]]     # (label, regex with one group)
    quick_args: list[str]


BENCHES = [
    Bench("extract_overhead", "extract_overhead.py", "`phonecli extract` time / bare decode + forward (base HuBERT, CPU)",
          [("ratio", r"overhead ratio extract / bare = ([\d.]+)"), ("CPU ratio", r"CPU-time ratio extract / bare = ([\d.]+)")],
          ["--utterances", "20", "--repeats", "2"]),
    Bench("cache_read", "cache_read.py", "cache minibatch read (all layers) / numpy memmap; h5py / memmap; crc-verified / "
          "unverified; int8 / float16 frames/s from disk (page cache evicted) and from RAM",
          [("cache/memmap", r"ratio cache/memmap = ([\d.]+)"), ("h5py/memmap", r"h5py/memmap = ([\d.]+)"),
           ("verified/unverified", r"steady state verified/unverified = ([\d.]+)"),
           ("first pass incl. check", r"unverified: ratio = ([\d.]+)"),
           ("int8/float16 cold", r"cold \(disk\) ([\d.]+)x"), ("int8/float16 warm", r"warm \(page cache\) ([\d.]+)x")],
          ["--utts", "100", "--batches", "50", "--repeats", "2"]),
    Bench("probe_vs_reencode", "probe_vs_reencode.py", "probe epoch re-encoding audio / epoch from the cache",
          [("weighted, 13 layers", r"\| weighted \|[^\n]*?\| ([\d.]+)x \|"),
           ("linear, 1 layer", r"\| linear \|[^\n]*?\| ([\d.]+)x \|")], ["--utts", "20"]),
    Bench("fusion_sweep", "fusion_sweep.py", "late-fusion sweep of 11 weights / one evaluation (both protocols, CIs)",
          [("ratio", r"sweep of 11 weights / one evaluation = ([\d.]+)"),
           ("sweep s", r"11 weights, serial:\s+([\d.]+) s"), ("evaluation s", r"1000 bootstrap\): ([\d.]+) s")],
          ["--repeats", "1"]),
    Bench("int8_per", "int8_per.py", "bytes per stored value float16 / int8; test PER (HQ) change of ONE float16-trained "
          "probe evaluated on the int8 cache (sample corpus)",
          [("float16 B/value", r"float16\s+([\d.]+) bytes per stored value"),
           ("int8 B/value", r"int8\s+([\d.]+) bytes per stored value"),
           ("PER change (points)", r"no retraining\): test HQ ([-+\d.]+) points")],
          ["--epochs", "8"]),
    Bench("s3_read", "s3_read.py", "minibatch read from an S3 server (moto, 127.0.0.1) / local disk; int8 / float16 on S3",
          [("S3/local float16", r"float16: S3/local frames/s = ([\d.]+)"), ("int8/float16 on S3", r"S3 ([\d.]+)x,")],
          ["--utts", "40", "--batches", "5", "--repeats", "1"]),
    Bench("probe_checkpoint_cost", "probe_checkpoint_cost.py", "probe resume checkpoint / the epoch it protects",
          [("linear", r"\| linear \|[^\n]*\| ([\d.]+) \|\n"), ("mlp", r"\| mlp \|[^\n]*\| ([\d.]+) \|\n"),
           ("transformer", r"\| transformer \|[^\n]*\| ([\d.]+) \|\n")], ["--epochs", "3"]),
    Bench("blas_cnr_cost", "blas_cnr_cost.py", "probe training step with MKL strict CNR (thread-independent products) / "
          "MKL's default mode",
          [("mlp 1 thread", r"\| mlp \| 1 \|[^\n]*\| ([\d.]+) \|"), ("mlp 2", r"\| mlp \| 2 \|[^\n]*\| ([\d.]+) \|"),
           ("transformer 1", r"\| transformer \| 1 \|[^\n]*\| ([\d.]+) \|"),
           ("transformer 2", r"\| transformer \| 2 \|[^\n]*\| ([\d.]+) \|")], ["--steps", "3", "--repeats", "1"]),
]


def parse(b: Bench, stdout: str) -> dict[str, str]:
    found = {}
    for label, rx in b.patterns:
        m = re.findall(rx, stdout)
        found[label] = m[-1] if m else "—"
    return found


def run_one(b: Bench, quick: bool, log_dir: Path, threads: int) -> tuple[dict[str, str], float, int]:
    cmd = [sys.executable, str(HERE / b.script)] + (b.quick_args if quick else [])
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.time() - t0
    (log_dir / f"{b.name}.log").write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n--- stderr ---\n{proc.stderr}\n"
                                           f"--- exit {proc.returncode}, {seconds:.1f} s ---\n")
    return parse(b, proc.stdout), seconds, proc.returncode


def from_log(b: Bench, log_dir: Path) -> tuple[dict[str, str], float, int]:
    """Re-read a saved log (``--from-logs``): same table, no re-measurement."""
    text = (log_dir / f"{b.name}.log").read_text()
    stdout = text.split("\n--- stderr ---", 1)[0]
    tail = re.findall(r"--- exit (-?\d+), ([\d.]+) s ---", text)
    rc, seconds = (int(tail[-1][0]), float(tail[-1][1])) if tail else (0, 0.0)
    return parse(b, stdout), seconds, rc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run, not the README numbers)")
    ap.add_argument("--only", nargs="*", default=None, help=f"subset of: {', '.join(b.name for b in BENCHES)}")
    ap.add_argument("--log-dir", default="bench-logs")
    ap.add_argument("--from-logs", action="store_true", help="rebuild the table from the logs in --log-dir")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for every script (default: phonecli's)")
    args = ap.parse_args()
    from phonecli.threads import configure, machine_line

    setting = configure(args.threads)
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    chosen = [b for b in BENCHES if args.only is None or b.name in args.only]
    missing = [b.script for b in chosen if not (HERE / b.script).exists()]
    rows = []
    for b in chosen:
        if b.script in missing:
            rows.append((b, {"": "script missing"}, 0.0, 1))
            continue
        if args.from_logs:
            rows.append((b, *from_log(b, log_dir)))
            continue
        print(f"running {b.script} ...", file=sys.stderr, flush=True)
        found, seconds, rc = run_one(b, args.quick, log_dir, setting.threads)
        rows.append((b, found, seconds, rc))
        print(f"  {b.script}: {'; '.join(f'{k} {v}' for k, v in found.items())} ({seconds:.0f} s, exit {rc})",
              file=sys.stderr, flush=True)

    when = "logs re-read" if args.from_logs else time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    print(f"Measured {when}, Python {platform.python_version()}; {machine_line(setting)} at the end"
          f"{' (--quick inputs)' if args.quick else ''}; full outputs in {log_dir}/.\n")
    print("| Benchmark | What is compared | Result | Script |")
    print("|---|---|---|---|")
    for b, found, seconds, rc in rows:
        result = "; ".join(f"{k} **{v}**" if k else v for k, v in found.items())
        if rc != 0:
            result += f" (exit {rc}, see {log_dir}/{b.name}.log)"
        print(f"| {b.name} | {b.measures} | {result} | `bench/{b.script}` ({seconds:.0f} s) |")


if __name__ == "__main__":
    main()
