"""Seconds per optimizer step, peak RSS and trainable parameters of every fine-tuning mode and memory
lever, on a HuBERT-base-sized random model (12 x 768, 95 M parameters; weights random, shapes real)
and the bundled sample corpus (real espeak audio), CPU.

Each configuration runs in its own process (peak RSS is per process) for ``--steps`` optimizer
steps of ``--batch-seconds`` s batches (1 epoch capped by ``--max-train``), then prints one Markdown row.

    /work/venv/bin/python bench/finetune_levers.py [--steps 4] [--batch-seconds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "full": ["--mode", "full"],
    "freeze-feature-encoder": ["--mode", "freeze-feature-encoder"],
    "top:2": ["--mode", "top:2"],
    "lora": ["--mode", "lora"],
    "qlora": ["--mode", "qlora"],
    "full + gradient checkpointing": ["--mode", "full", "--gradient-checkpointing"],
    "full + bf16": ["--mode", "full", "--precision", "bf16"],
    "qlora + gradient checkpointing": ["--mode", "qlora", "--gradient-checkpointing"],
}


def child(args) -> None:
    """One configuration: train a few steps with the library API, print a JSON line."""
    import torch

    from phonecli.data.manifest import Manifest
    from phonecli.finetune import train as T

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    opts = json.loads(args.child)
    # a subset of train utterances: `steps` batches worth of audio
    m = Manifest.load(args.data)
    keep = []
    total = 0.0
    for u in m.split("train"):
        if total >= args.steps * args.batch_seconds * 0.8:
            break
        keep.append(u)
        total += u.duration
    sub = Manifest(utterances=keep + m.split("dev")[:4] + m.split("test")[:2], source=m.source)
    for u in sub:
        u.audio = str(m.audio_path(u))
    data = Path(args.tmp) / "data"
    sub.save(data)
    cfg = T.FinetuneConfig(mode=opts["mode"], epochs=1, lr=3e-5, batch_seconds=args.batch_seconds, device="cpu",
                           precision=opts.get("precision", "fp32"),
                           gradient_checkpointing=opts.get("gradient_checkpointing", False))
    t0 = time.perf_counter()
    res = T.finetune(args.model, data, Path(args.tmp) / "run", cfg, overwrite=True, progress=False)
    wall = time.perf_counter() - t0
    log = res.run.read_log()
    print(json.dumps({"steps": log[-1]["step"], "train_seconds": log[-1]["seconds"], "wall": wall,
                      "audio": total, "trainable": res.run.info["config"]["parameters"]["trainable"],
                      "total": res.run.info["config"]["parameters"]["total"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-seconds", type=float, default=8.0)
    ap.add_argument("--only", default=None, help="comma list of config names")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import torch
    from transformers import HubertConfig, HubertModel

    root = Path(tempfile.mkdtemp(prefix="ft-bench-"))
    model = root / "hubert-base-random"
    torch.manual_seed(0)
    HubertModel(HubertConfig()).save_pretrained(model)  # HuBERT-base shapes (12 x 768, 512-ch CNN)
    data = root / "sample"
    subprocess.run([sys.executable, "-m", "phonecli", "data", "prepare", "sample", "--out", str(data)], check=True,
                   capture_output=True)
    print(f"HuBERT-base-sized random model, sample corpus, {args.batch_seconds:g} s batches, CPU "
          f"({os.environ.get('BENCH_THREADS', '2')} threads)\n")
    print("| configuration | trainable params | s / step | peak RSS (MB) |")
    print("|---|---:|---:|---:|")
    names = args.only.split(",") if args.only else list(CONFIGS)
    for name in names:
        flags = CONFIGS[name]
        opts = {"mode": flags[1], "gradient_checkpointing": "--gradient-checkpointing" in flags,
                "precision": flags[flags.index("--precision") + 1] if "--precision" in flags else "fp32"}
        tmp = tempfile.mkdtemp(dir=root)
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(opts), "--model", str(model),
                              "--data", str(data), "--tmp", tmp, "--steps", str(args.steps),
                              "--batch-seconds", str(args.batch_seconds)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {name} | failed: {out.stderr.strip().splitlines()[-1]} | | |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {name} | {r['trainable'] / 1e6:.1f} M of {r['total'] / 1e6:.1f} M | "
              f"{r['train_seconds'] / max(r['steps'], 1):.2f} | {r['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
