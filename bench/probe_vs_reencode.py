"""One probe training epoch from the feature cache vs one epoch that re-encodes the audio every step.

The re-encode epoch is what s3prl does: every step runs the frozen upstream (here a base-size
random HuBERT, ``HubertConfig()`` defaults, saved with ``save_pretrained`` and loaded back by
path) on the batch's audio, then trains the head. Both epochs use the same head (weighted sum
over all 13 hidden states + the SUPERB linear head, or the linear head on the last state), the
same length-bucketed batches, the same optimiser; only the source of the features differs. Audio
is preloaded into RAM so the re-encode side is not charged for file reads.

    MPLBACKEND=Agg python bench/probe_vs_reencode.py --utts 40

Prints the one-off extraction time and, for two heads (the weighted sum over all 13 stored
states, the most cache-bound probe, and a linear probe on the last state), both epoch times, the
speedup and the break-even number of epochs. Target: speedup >= 20x on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def subset_manifest(data: Path, out: Path, n: int):
    """The first ``n`` train utterances of ``data`` plus a few dev ones, saved as a manifest in ``out``."""
    from phonecli.data.manifest import Manifest

    m = Manifest.load(data)
    keep = m.split("train")[:n] + m.split("dev")[:4]
    for u in keep:
        u.audio = str(m.audio_path(u))  # absolute: the subset manifest lives elsewhere
    sub = Manifest(utterances=keep, source={"kind": "bench-subset", "path": str(data)})
    sub.save(out)
    return sub


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utts", type=int, default=40, help="train utterances in the epoch")
    ap.add_argument("--batch-frames", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=2, help="re-encode epochs per head (best is reported)")
    ap.add_argument("--workdir", default=None, help="keep the corpus/model/cache here (default: a temp dir)")
    args = ap.parse_args()

    from transformers import HubertConfig, HubertModel

    from phonecli.data.audio import load_audio
    from phonecli.data.prepare import prepare_corpus
    from phonecli.extract.runner import extract_features
    from phonecli.probe.features import open_source, length_batches
    from phonecli.probe.heads import ProbeHead
    from phonecli.probe.train import collate
    from phonecli.data.phones import VOCAB, encode

    torch.manual_seed(0)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="probe_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "sample" / "manifest.json").exists():
        prepare_corpus("sample", work / "sample")
    man = subset_manifest(work / "sample", work / "subset", args.utts)
    model_dir = work / "hubert-base-random"
    if not (model_dir / "config.json").exists():
        HubertModel(HubertConfig()).save_pretrained(model_dir)  # base size: 12 layers x 768, ~94 M parameters

    stamp = work / "extract_seconds.txt"  # a rerun with --workdir reuses the cache and its measured time
    t0 = time.perf_counter()
    cache = extract_features(str(model_dir), work / "subset", work / "cache", device="cpu", progress=False)
    if not stamp.exists():
        stamp.write_text(str(time.perf_counter() - t0))
    t_extract = float(stamp.read_text())

    encoder = HubertModel.from_pretrained(model_dir).eval()
    ids0 = open_source(cache, "last").utterance_ids("train")
    waves = {u: load_audio(man.audio_path(u)) for u in ids0}
    audio_s = sum(len(w) for w in waves.values()) / 16000
    print(f"train utterances: {len(ids0)} ({audio_s:.1f} s audio); torch threads: {torch.get_num_threads()}; "
          f"one-off extraction into the cache: {t_extract:.2f} s")
    print("| head | layers read | batches | epoch from cache (RAM) | epoch re-encoding | speedup | break-even |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for head_name, layer_spec in (("weighted", "weighted"), ("linear", "last")):
        source = open_source(cache, layer_spec, memory="ram")
        source.preload(["train"])
        ids = source.utterance_ids("train")
        frames = [source.num_frames(u) for u in ids]
        batches = [[ids[i] for i in b] for b in length_batches(frames, args.batch_frames, shuffle=True, seed=0)]
        targets = {u: encode(man[u].canonical_phones) for u in ids}
        (layers, dim), = source.shapes
        rows = slice(None) if layer_spec == "weighted" else slice(-1, None)  # hidden_states[-1] = the cache's last
        cfg = {"head": head_name, "shapes": [[layers, dim]], "weighted": [head_name == "weighted"],
               "layer_norm": False, "context": 0, "vocab": len(VOCAB), "dropout": 0.1}

        def step(head, opt, x, lengths, ids_b):
            lp = head(x, lengths)
            tg = [targets[u] for u in ids_b]
            loss = torch.nn.functional.ctc_loss(lp.transpose(0, 1), torch.tensor([p for t in tg for p in t]),
                                                lengths, torch.tensor([len(t) for t in tg]), zero_infinity=True)
            opt.zero_grad()
            loss.backward()
            opt.step()

        def cache_epoch() -> float:
            head = ProbeHead(cfg)
            opt = torch.optim.AdamW(head.parameters(), lr=1e-3, fused=True)  # as train_probe
            t = time.perf_counter()
            for ids_b, arrays in source.iter_batches(batches):
                x, lengths = collate(arrays, "cpu")
                step(head, opt, x, lengths, ids_b)
            return time.perf_counter() - t

        def reencode_epoch() -> float:
            head = ProbeHead(cfg)
            opt = torch.optim.AdamW(head.parameters(), lr=1e-3, fused=True)  # as train_probe
            t = time.perf_counter()
            for ids_b in batches:
                n = max(len(waves[u]) for u in ids_b)
                wav = torch.zeros(len(ids_b), n)
                for i, u in enumerate(ids_b):
                    wav[i, :len(waves[u])] = torch.from_numpy(waves[u])
                with torch.no_grad():  # frozen upstream; the group-norm base model is fed padded, as s3prl does
                    hs = torch.stack(encoder(wav, output_hidden_states=True).hidden_states, dim=1)  # (B, 13, T, 768)
                lengths = torch.tensor([source.num_frames(u) for u in ids_b])
                x = hs[:, rows, :int(lengths.max())].contiguous()
                step(head, opt, [x], lengths, ids_b)
            return time.perf_counter() - t

        cache_epoch()  # warm-up (allocator, first touch of the in-RAM arrays)
        # interleaved repeats, best of each: the machine is shared, so take the least-disturbed epoch
        t_cache, t_re = float("inf"), float("inf")
        for _ in range(args.repeats):
            t_cache = min(t_cache, *(cache_epoch() for _ in range(3)))
            t_re = min(t_re, reencode_epoch())
        print(f"| {head_name} | {layers} x {dim} | {len(batches)} | {t_cache:.3f} s | {t_re:.2f} s | "
              f"{t_re / t_cache:.1f}x | {t_extract / max(t_re - t_cache, 1e-9):.1f} epochs |")
    print("target: speedup >= 20x; break-even = epochs after which extraction + cached epochs beat re-encoding")


if __name__ == "__main__":
    main()
