"""What thread-independent results cost: MKL's strict CNR mode (``MKL_CBWR=AUTO,STRICT``, what phonecli
sets so that matrix products give the same bits with any thread count) on probe training steps,
against MKL's default mode; and the transformer head's written-out attention with dropout against
torch's fused attention without dropout (what the head ran for a round).

MKL reads the mode once, when it first runs, so each (mode, threads) cell is its own process; the
cells alternate over --repeats rounds and the best time of each is kept. Each process trains the
``mlp`` and ``transformer`` heads for --steps CTC steps on fixed random (batch, 1, frames, dim)
features (the probe's own ProbeHead, AdamW) and prints seconds per step; the table gives
strict/default per head and thread count (1.00 = free; > 1 = strict is slower).

    MPLBACKEND=Agg python bench/blas_cnr_cost.py [--steps 20 --repeats 5 --dim 768]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import json, sys, time
    from phonecli.threads import blas_reproducible, configure
    configure(int(sys.argv[1]))
    import torch
    from phonecli.probe.heads import ProbeHead
    steps, dim = int(sys.argv[2]), int(sys.argv[3])
    out = {"strict": blas_reproducible()}
    for head in ("mlp", "transformer"):
        torch.manual_seed(0)
        m = ProbeHead(dict(head=head, shapes=[[1, dim]], weighted=[False], vocab=40, context=0, dropout=0.1))
        opt = torch.optim.AdamW(m.parameters(), 1e-3)
        g = torch.Generator().manual_seed(1)
        B, T = 8, 300
        x = torch.randn(B, 1, T, dim, generator=g)
        lens = torch.full((B,), T)
        y = torch.randint(1, 40, (B, 40), generator=g)
        def step():
            lp = m([x], lens)
            loss = torch.nn.functional.ctc_loss(lp.transpose(0, 1), y, lens, torch.full((B,), 40))
            opt.zero_grad(); loss.backward(); opt.step()
        step()                                   # warm-up (allocations, first MKL call)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        out[head] = (time.perf_counter() - t0) / steps
    print(json.dumps(out))
""")


def attention_cost(repeats: int) -> None:
    """One encoder block's self-attention, forward + backward, batch 8 x 300 frames x 256, in this process."""
    import time

    import torch
    from torch import nn

    from phonecli.probe.heads import ThreadStableEncoderLayer

    torch.manual_seed(0)
    x = torch.randn(8, 300, 256)
    pad = torch.zeros(8, 300, dtype=torch.bool)
    pad[:4, 250:] = True
    layer = ThreadStableEncoderLayer(256, 4, 1024, dropout=0.1, attention_dropout=0.1, batch_first=True,
                                     norm_first=True)

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats * 5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times) * 1000

    def written_out():
        layer._sa_block(x, None, pad).sum().backward()

    def fused():    # torch's own block (SDPA); attention dropout 0 -> the fused CPU kernel
        nn.TransformerEncoderLayer._sa_block(layer, x, None, pad).sum().backward()

    layer.self_attn.dropout = 0.0
    a = best(fused)
    b = best(written_out)
    print(f"\nself-attention forward + backward (batch 8 x 300 x 256, 4 heads, {torch.get_num_threads()} thread(s)): "
          f"fused SDPA without attention dropout {a:.1f} ms; written out with dropout 0.1 (phonecli) {b:.1f} ms; "
          f"ratio {b / a:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dim", type=int, default=768)
    args = ap.parse_args()
    from phonecli.threads import machine_line

    print(machine_line())
    cells = [(mode, n) for n in (1, 2) for mode in ("AUTO,STRICT", "AUTO")]
    best: dict = {}
    for _ in range(args.repeats):
        for mode, n in cells:               # alternate: background load hits every cell alike
            env = {**os.environ, "MKL_CBWR": mode, "OMP_NUM_THREADS": str(n)}
            proc = subprocess.run([sys.executable, "-c", CHILD, str(n), str(args.steps), str(args.dim)],
                                  capture_output=True, text=True, env=env, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            assert r["strict"] is (mode == "AUTO,STRICT"), (mode, r)
            cur = best.setdefault((mode, n), {})
            for head in ("mlp", "transformer"):
                cur[head] = min(cur.get(head, float("inf")), r[head])
    print(f"\nseconds per probe training step (batch 8 x 300 frames x {args.dim}, best of {args.repeats}; "
          f"load average {os.getloadavg()[0]:.2f})")
    print("| head | threads | MKL default | strict CNR | strict / default |")
    print("|---|---:|---:|---:|---:|")
    for head in ("mlp", "transformer"):
        for n in (1, 2):
            a, b = best[("AUTO", n)][head], best[("AUTO,STRICT", n)][head]
            print(f"| {head} | {n} | {a * 1000:.1f} ms | {b * 1000:.1f} ms | {b / a:.2f} |")
    from phonecli.threads import configure

    configure(1)
    attention_cost(args.repeats)


if __name__ == "__main__":
    main()
