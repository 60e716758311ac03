"""The probe training loop (one function, :func:`train_probe`) and the helpers it needs.

The train split trains, dev early-stops and selects the epoch (lowest greedy dev PER, ties
broken by dev CTC loss, so the all-blank plateau at the start of CTC training still counts as
progress), test is never looked at. Batches are length-bucketed and sized in padded frames.
For a given seed on the CPU the weights are bit-identical across runs (CUDA's CTC backward is
not deterministic).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from phonecli import ctc
from phonecli.cache.int8 import Int8Features
from phonecli.config import ProbeConfig
from phonecli.finite import check_loss
from phonecli.probe.features import (
    Features, FeatureSource, as_float32, available_memory, length_batches, open_source,
)
from phonecli.probe.heads import ProbeHead
from phonecli.runs import (
    Checkpoints,
    Run,
    finish_run,
    load_optimizer,
    prepare_run,
    refuse_structural_change,
    save_optimizer,
    start_run,
)
from phonecli.storage import atomic_write, atomic_write_text, check_free_space
from phonecli.errors import ProbeError  # noqa: F401  (re-exported)

log = logging.getLogger("phonecli.probe")

DEFAULT_CONTEXT_WEIGHT_FREE = 4  # +-4 frames = 90 ms at 100 fps: a phone-sized window for fbank
GATE_NEAR = 0.05                 # a gate value below this (above 1 - this) is "near 0 (1)"
GATE_COLLAPSE = 0.9              # fraction of frames near one side that counts as collapse
STEPS_PER_EPOCH, MIN_BATCH_FRAMES, MAX_BATCH_FRAMES = 50, 400, 8000


# -- small pieces the loop uses --------------------------------------------------------------

def collate(arrays: list[list[Features]], device: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per utterance a list over streams of ``(L_s, T, D_s)`` features -> per stream ``(B, L_s, T_max, D_s)``
    float32 on ``device`` and ``lengths`` ``(B,)`` int64. Padding repeats each utterance's last frame (see
    ``heads.stack_context``); padded frames never reach the loss or the saved posteriors.

    Features cross to the device as stored (float16 stays 2 bytes a value; int8 caches send int8 values
    plus float32 scales ``(B, L_s, D_s)``) and become float32 there: int8 is dequantised on the device,
    with the same single float32 multiplication as ``Int8Features.dequantize``. On CUDA the batch is
    staged in pinned memory so the copy is asynchronous.
    """
    lengths = torch.tensor([a[0].shape[1] for a in arrays], dtype=torch.long)
    t_max = int(lengths.max())
    out = []
    for s in range(len(arrays[0])):
        items = [a[s] for a in arrays]
        quantized = isinstance(items[0], Int8Features)
        values = [x.values for x in items] if quantized else items
        layers, _, dim = values[0].shape
        x = np.empty((len(items), layers, t_max, dim), dtype=np.result_type(*values))
        for i, v in enumerate(values):
            n = v.shape[1]
            x[i, :, :n] = v
            x[i, :, n:] = v[:, n - 1:n] if n else 0
        batch = _to_device(torch.from_numpy(x), device).to(torch.float32)
        if quantized:
            scales = _to_device(torch.from_numpy(np.stack([x.scales for x in items])), device)  # (B, L, D)
            batch.mul_(scales[:, :, None, :])
        out.append(batch)
    return out, lengths.to(device)


def _to_device(t: torch.Tensor, device: str) -> torch.Tensor:
    if device.startswith("cuda"):
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def feature_stats(source: FeatureSource, utt_ids: list[str], batch_frames: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per stream ``(mean, std)`` each ``(layers, dim)`` float32 over every train frame (float64 sums)."""
    sums = [np.zeros((l, d)) for l, d in source.shapes]
    sq = [np.zeros((l, d)) for l, d in source.shapes]
    n = 0
    batches = length_batches([source.num_frames(u) for u in utt_ids], batch_frames, shuffle=False, seed=0)
    for _, arrays in source.iter_batches([[utt_ids[i] for i in b] for b in batches]):
        for per_utt in arrays:
            n += per_utt[0].shape[1]
            for s, a in enumerate(per_utt):
                a = as_float32(a).astype(np.float64)
                sums[s] += a.sum(axis=1)
                sq[s] += (a * a).sum(axis=1)
    stats = []
    for s1, s2 in zip(sums, sq):
        mean = s1 / max(n, 1)
        std = np.sqrt(np.maximum(s2 / max(n, 1) - mean * mean, 0.0))
        stats.append((torch.tensor(mean, dtype=torch.float32), torch.tensor(np.maximum(std, 1e-5), dtype=torch.float32)))
    return stats


def gate_stats(values: torch.Tensor) -> dict:
    """Summary of per-frame gate values in [0, 1] (1 = only the first cache)."""
    # numpy float64: torch's whole-tensor mean splits the sum by CPU thread (last bits differ with the count)
    v = values.detach().cpu().double().numpy().reshape(-1)
    return {"mean": float(v.mean()), "std": float(v.std()),
            "near_0": float((v < GATE_NEAR).mean()), "near_1": float((v > 1 - GATE_NEAR).mean())}


def collapsed_side(stats: dict) -> int | None:
    """Index of the only stream a collapsed gate still uses (0 = first cache), or None.

    Collapse = at least ``GATE_COLLAPSE`` of the frames have the gate within ``GATE_NEAR`` of 0 or 1.
    """
    if stats["near_1"] >= GATE_COLLAPSE:
        return 0
    if stats["near_0"] >= GATE_COLLAPSE:
        return 1
    return None


@torch.no_grad()
def run_split(model: ProbeHead, source: FeatureSource, utt_ids: list[str], batch_frames: int, device: str,
              targets: dict[str, list[int]] | None = None, keep: bool = False,
              scoring: list[int] | None = None) -> dict:
    """Forward ``utt_ids`` in eval mode. Returns ``loss`` (mean per-utterance CTC / target length over the
    utterances in ``targets``), ``per`` (greedy, %, both sides folded with ``scoring``:
    :func:`phonecli.ctc.scoring_ids`), ``gate`` stats (gated head), and ``posteriors``
    ``{utt_id: (frames, vocab) float32}`` in ``utt_ids`` order when ``keep``."""
    model.eval()
    frames = [source.num_frames(u) for u in utt_ids]
    batches = [[utt_ids[i] for i in b] for b in length_batches(frames, batch_frames, shuffle=False, seed=0)]
    losses, refs, hyps, gates, post = [], [], [], [], {}
    for ids, arrays in source.iter_batches(batches):
        x, lengths = collate(arrays, device)
        lp = model(x, lengths)
        if model.last_gate is not None:
            mask = torch.arange(lp.shape[1], device=lp.device)[None, :] < lengths[:, None]
            gates.append(model.last_gate[mask].cpu())
        for i, u in enumerate(ids):
            if keep:
                post[u] = lp[i, :int(lengths[i])].float().cpu().numpy()
            if targets is not None and u in targets:
                refs.append(targets[u])
                hyps.append(ctc.greedy_ids(lp[i, :int(lengths[i])]))
        if targets is not None:
            sel = [i for i, u in enumerate(ids) if u in targets]
            if sel:
                flat, tl = ctc.flatten_targets([targets[ids[i]] for i in sel])
                per_utt = ctc.ctc_loss_per_phone(lp[sel], lengths[sel].cpu(), flat, tl, zero_infinity=True)
                losses.extend(per_utt.cpu().tolist())
    out: dict = {}
    if targets is not None and refs:
        out["loss"] = float(np.mean(losses))
        out["per"] = ctc.phone_error_rate(refs, hyps, scoring)
    if gates:
        out["gate"] = gate_stats(torch.cat(gates))
    if keep:
        out["posteriors"] = {u: post[u] for u in utt_ids}
    return out


def default_batch_frames(train_frames: list[int]) -> int:
    """About 50 optimiser steps per epoch on small corpora (at least 400 padded frames per batch),
    at most 8000 padded frames per batch.

    Early stopping counts epochs, so an epoch must hold enough steps to move a CTC head off its
    all-blank start (on the sample corpus, MLP dev PER after 8 epochs: 61% with 400-frame batches,
    85% with 1000); on a large corpus (SpeechOcean762 train at 50 fps: ~0.5 M frames) this gives 8000.
    """
    return int(min(MAX_BATCH_FRAMES, max(MIN_BATCH_FRAMES, sum(train_frames) // STEPS_PER_EPOCH)))


def _targets(manifest, utt_ids: list[str], kind: str, source_name: str) -> dict[str, list[int]]:
    out = {}
    for u in utt_ids:
        if u not in manifest:
            raise ProbeError(f"{source_name}: utterance {u} is not in the manifest {manifest.root}; "
                             "pass the --data directory the cache was extracted from")
        utt = manifest[u]
        out[u] = manifest.vocab.encode(utt.canonical_phones if kind == "canonical" else utt.realized_phones)
    return out


def _default_context(source: FeatureSource, head: str) -> int:
    """Weight-free features (fbank) get +-4 frames for frame-level heads; learned features get none."""
    weight_free = any(str(d.get("fingerprint") or "").startswith("fbank") or d.get("model") == "fbank"
                      for d in source.describe())
    return DEFAULT_CONTEXT_WEIGHT_FREE if weight_free and head in ("linear", "mlp", "weighted", "gated") else 0


def save_weights(model: ProbeHead, path: Path) -> None:
    from safetensors.torch import save_file

    meta = {"format": "phonecli-probe-weights", "version": "1", "head_config": json.dumps(model.config)}
    atomic_write(path, lambda tmp: save_file(_cpu(model.state_dict()), str(tmp), metadata=meta))


def load_probe(run: Run | str | Path, device: str = "cpu") -> ProbeHead:
    """Rebuild the head of a probe/fusion run from ``run.json`` (``config.head_config``) + ``weights.safetensors``."""
    from safetensors.torch import load_file

    run = run if isinstance(run, Run) else Run.open(run)
    cfg = run.info.get("config", {}).get("head_config")
    if cfg is None:
        raise ProbeError(f"{run.path}: run.json has no head_config; it was not written by `phonecli probe`")
    if not run.weights_path.exists():
        raise ProbeError(f"{run.weights_path}: missing; re-run the probe")
    model = ProbeHead(cfg)
    model.load_state_dict(load_file(str(run.weights_path)))
    return model.to(device).eval()


def recompute_posteriors(run: Run | str | Path, split: str, features=None, *, batch_frames: int | None = None,
                         device: str = "cpu") -> dict[str, np.ndarray]:
    """Posteriors of ``split`` from the saved weights and the run's caches (or ``features``, e.g. in-memory).

    Returns ``{utt_id: (frames, vocab) float32}``; matches ``run.read_posteriors(split)`` up to float rounding.
    """
    run = run if isinstance(run, Run) else Run.open(run)
    cfg = run.info["config"]
    if features is None:
        srcs = run.info["sources"]
        if any(s.get("cache") is None for s in srcs):
            raise ProbeError(f"{run.path}: trained on in-memory features; pass them as features=")
        features = [s["cache"] for s in srcs]
        layers = [list(s["layers"]) if not s.get("weighted") else "weighted" for s in srcs]
        source = open_source(features, layers, align=cfg.get("align", "repeat"), memory="stream")
    else:
        source = open_source(features, align=cfg.get("align", "repeat"))
    model = load_probe(run, device)
    ids = source.utterance_ids(split)
    return run_split(model, source, ids, batch_frames or cfg["batch_frames"], device, keep=True)["posteriors"]


def _save_layer_weights(run: Run, model: ProbeHead, source: FeatureSource) -> None:
    weights = model.layer_weights()
    if not any(w is not None for w in weights):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [{"source": d.get("cache") or d.get("name"), "layers": d["layers"], "weights": w}
               for d, w in zip(source.describe(), weights) if w is not None]
    atomic_write_text(run.path / "layer_weights.json", json.dumps({"streams": entries}, indent=2))
    fig, axes = plt.subplots(len(entries), 1, figsize=(max(4, 0.35 * max(len(e["layers"]) for e in entries) + 2),
                                                      2.6 * len(entries)), squeeze=False)
    for ax, e in zip(axes[:, 0], entries):
        ax.bar([str(x) for x in e["layers"]], e["weights"])
        ax.axhline(1 / len(e["layers"]), color="grey", lw=0.8, ls="--", label="uniform (init)")
        ax.set_xlabel("layer (hidden-state index)")
        ax.set_ylabel("softmax weight")
        ax.set_title(Path(str(e["source"])).name, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(run.path / "layer_weights.png", lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


# -- the loop -----------------------------------------------------------------------------------

def train_probe(features, data, out, config: ProbeConfig | None = None, *, overwrite: bool = False,
                resume: bool = False, progress: bool | None = None, name: str | None = None,
                on_epoch: Callable[[dict], None] | None = None, **overrides) -> Run:
    """Train one CTC probe on cached features and write a run directory.

    Args:
        features: cache path/URL, open ``FeatureCache``, ``Stream``, ``FeatureSource``, or a list of
            them (2+ = early fusion; ``head="gated"`` needs exactly 2). Each cache holds per utterance
            ``(layers, frames, dim)`` features.
        data: the manifest directory (targets, corpus id).
        out: the run directory to write.
        config: a :class:`~phonecli.config.ProbeConfig` (default: its defaults); ``overrides`` are
            keyword options applied on top and validated by it (``head="mlp", epochs=20``). ``layers``:
            one spec for all caches or one per cache (default: ``weighted`` for the weighted head, else
            ``last``); ``context``: +-K frames (default 4 for weight-free features with frame-level heads,
            else 0); ``epochs`` is a maximum (``patience`` epochs without a better dev PER stop it);
            ``control="shuffled-labels"`` permutes the train targets across utterances.
        overwrite: replace a run already at ``out`` (see :mod:`phonecli.runs`); without it a finished
            run there is refused.
        resume: continue the interrupted run at ``out`` from its last completed epoch; the result equals
            an uninterrupted run (bit for bit on the CPU). A complete run: returned as it is.
        progress: tqdm bars (default: when stderr is a terminal). name: the run name (default: the
            directory name). on_epoch: called with each epoch's log record once it is checkpointed.

    Returns:
        The :class:`~phonecli.runs.Run`: ``weights.safetensors``, ``posteriors/{train,dev,test}.safetensors``
        (float32 ``(frames, 40)`` natural-log posteriors per utterance at the cache frame rate),
        ``train_log.jsonl`` and run.json with the resolved config and the dev selection (PER in percent).
    """
    from phonecli.data.manifest import Manifest

    cfg = ProbeConfig.build(config, **overrides)
    if cfg.is_layer_sweep:
        raise ProbeError("--layers all-single trains one probe per layer; use phonecli.probe.sweep_layers")
    start = prepare_run(out, PROBE_KINDS, overwrite=overwrite, resume=resume)
    if start.action == "done":
        log.info("%s: the run is complete; nothing to resume", start.path)
        return start.run
    head, targets, seed = cfg.head, cfg.targets, cfg.seed
    t_start = time.time()
    source = open_source(features, list(cfg.layers) or None, default="weighted" if head == "weighted" else None,
                         align=cfg.align, memory=cfg.memory)
    n_streams = len(source.streams)
    if head == "gated" and n_streams != 2:
        raise ProbeError(f"--head gated mixes exactly 2 caches; got {n_streams} --features")
    kind = "gated-fusion" if head == "gated" else ("early-fusion" if n_streams > 1 else "probe")
    src_name = " + ".join(s.name for s in source.streams)
    manifest = Manifest.load(data)
    if manifest.corpus_id != source.corpus_id:
        raise ProbeError(f"{src_name}: cache corpus_id {source.corpus_id} != manifest {manifest.corpus_id} in {data}; "
                         "pass the --data directory the cache was extracted from")

    # ---- data: ids, targets, CTC feasibility (never read test before the end) ----
    ids = {s: source.utterance_ids(s) for s in ("train", "dev", "test")}
    for s in ("train", "dev"):
        if not ids[s]:
            raise ProbeError(f"{src_name}: the {s} split is empty; the probe needs train and dev utterances "
                             "(re-run `phonecli data prepare` with a dev split)")
    tgt = _targets(manifest, ids["train"] + ids["dev"], targets, src_name)
    if cfg.control == "shuffled-labels":
        perm = np.random.default_rng(seed).permutation(len(ids["train"]))
        tgt.update({u: tgt[ids["train"][j]] for u, j in zip(ids["train"], perm)})
    frames = {u: source.num_frames(u) for s in ("train", "dev", "test") for u in ids[s]}
    infeasible = {s: [u for u in ids[s] if frames[u] < ctc.min_frames(tgt[u])] for s in ("train", "dev")}
    for s, bad in infeasible.items():
        if bad:
            log.warning("skipping %d %s utterance(s) with more phones than frames (CTC infeasible at %g fps), e.g. %s",
                        len(bad), s, source.frame_rate, ", ".join(bad[:3]))
    skip = {u for bad in infeasible.values() for u in bad}
    train_ids = [u for u in ids["train"] if u not in skip]
    dev_tgt = {u: tgt[u] for u in ids["dev"] if u not in skip}
    if not train_ids or not dev_tgt:
        raise ProbeError(f"{src_name}: every train or dev utterance is CTC-infeasible (more phones than frames); "
                         "use a cache with a higher frame rate")
    batch_frames = cfg.batch_frames or default_batch_frames([frames[u] for u in train_ids])
    # dev PER (the epoch selection) folded as the corpus is scored (TIMIT 48 -> 39); None: nothing folds
    scoring = ctc.scoring_ids(manifest.vocab.symbols, manifest.corpus.fold)

    # ---- model, optimiser, run dir ----
    device = ctc.resolve_device(cfg.device)
    torch.manual_seed(seed)
    source.preload(["train", "dev"])
    need = sum(st.nbytes(sp) for st in source.streams for sp in ("train", "dev"))
    log.info("features %s: %s (train+dev %.2f GB, %.2f GB available)", src_name,
             "in RAM" if source.in_ram else "streamed from the cache", need / 1e9,
             available_memory() / 1e9)
    context = _default_context(source, head) if cfg.context is None else cfg.context
    head_config = {"head": head, "shapes": [list(s) for s in source.shapes],
                   "weighted": [s.selection.weighted or head == "weighted" for s in source.streams],
                   "layer_norm": cfg.layer_norm, "context": int(context), "vocab": len(manifest.vocab),
                   "dropout": cfg.dropout}
    model = ProbeHead(head_config)
    # blank share of the train frames under CTC's alignment: frames not spent on one phone each
    n_phones = sum(len(tgt[u]) for u in train_ids)
    model.set_blank_prior(1.0 - n_phones / max(sum(frames[u] for u in train_ids), 1))
    if cfg.standardize:
        model.set_standardization(feature_stats(source, train_ids, batch_frames))
    model.to(device)
    # fused: one kernel for all parameters; the default per-tensor/foreach path cost more than the
    # forward+backward of a small head on CPU (measured: 28 ms vs 0.5 ms per step for the MLP head)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    # run.json records the resolved config: layer specs as the stored indices per cache, the defaults filled in
    resolved = replace(cfg, layers=tuple(",".join(map(str, st.layers)) for st in source.streams), context=int(context),
                       batch_frames=int(batch_frames), device=device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    config = {**resolved.to_dict(), "layers": [list(st.layers) for st in source.streams], "in_ram": source.in_ram,
              "head_config": head_config, "skipped_ctc_infeasible": infeasible, "params": n_params}
    sources = source.describe()
    if start.action == "resume":
        _check_resumable(start.run, kind, config, sources)
    # posteriors of every split (float32 x 40) + at the peak of a checkpoint save 8 float32 copies of the
    # head (old and new checkpoint: weights + AdamW's two moments; old and new best); what a resumed run's
    # checkpoints already hold is in use already
    held = sum(f.stat().st_size for f in (start.path / "checkpoints").rglob("*") if f.is_file()) \
        if start.action == "resume" else 0
    check_free_space(start.path, sum(frames.values()) * len(manifest.vocab) * 4 + 8 * 4 * n_params + 2**20 - held,
                     f"the {kind} run (posteriors, weights, checkpoints)")
    run = start_run(start, kind, config=config, corpus_id=source.corpus_id, data=data, frame_rate=source.frame_rate,
                    sources=sources, vocab=manifest.vocab.symbols, name=name, outputs=PROBE_OUTPUTS)

    # ---- train: one epoch over length-bucketed train batches, then dev; a checkpoint after each ----
    ckpts = Checkpoints(run.path)
    latest = ckpts.latest() if start.action == "resume" else None
    state = {"epoch": 0, "best": None, "best_epoch": None, "bad_epochs": 0, "history": [], "best_file": None}
    best_state = None
    if latest is not None:
        state, best_state = _load_checkpoint(latest, model, opt, device)
        log.info("resuming %s after epoch %d (checkpoint %s)", run.path, state["epoch"], latest.name)
    run.write_log(state["history"])   # the checkpoint holds the epoch records: the log matches it
    show = sys.stderr.isatty() if progress is None else progress
    epoch = state["epoch"]
    while epoch < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch += 1
        record = _train_epoch(model, opt, source, train_ids, tgt, frames, ids["dev"], dev_tgt, batch_frames, device,
                              seed, epoch, show, run=run, lr=cfg.lr, scoring=scoring)
        if ctc.improves(record["dev_per"], record["dev_loss"], state["best"]):
            state.update(best=list(ctc.selection_key(record["dev_per"], record["dev_loss"])), best_epoch=epoch,
                         bad_epochs=0)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        state["history"].append(record)
        _save_checkpoint(ckpts, model, opt, state, best_state if state["best_epoch"] == epoch else None)
        run.append_log(record)
        if "gate" in record:
            _log_gate(epoch, record, source)
        log.info("epoch %d: train loss %.4f, dev loss %.4f, dev PER %.2f%%", epoch, record["train_loss"],
                 record["dev_loss"], record["dev_per"])
        if on_epoch is not None:
            on_epoch(record)
    stopped = "patience" if state["bad_epochs"] >= cfg.patience else "max-epochs"

    # ---- select, save, write posteriors for every split ----
    model.load_state_dict(best_state)
    save_weights(model, run.weights_path)
    _save_layer_weights(run, model, source)
    dev_best = run_split(model, source, ids["dev"], batch_frames, device, targets=dev_tgt, keep=True, scoring=scoring)
    run.record.selection = {"metric": "dev_per", "value": dev_best["per"], "epoch": state["best_epoch"],
                            "dev_loss": dev_best["loss"], "epochs_run": epoch, "stopped": stopped,
                            "scored_on": manifest.corpus.scored_on if scoring else "the training targets"}
    if "gate" in dev_best:
        run.info["gate"] = dev_best["gate"]
    run.write_posteriors("dev", dev_best["posteriors"])
    run.write_posteriors("train", run_split(model, source, ids["train"], batch_frames, device, keep=True)["posteriors"])
    source.unload()  # test is streamed: it was never needed for training
    if ids["test"]:
        run.write_posteriors("test", run_split(model, source, ids["test"], batch_frames, device, keep=True)["posteriors"])
    run.info["seconds"] = round(time.time() - t_start, 2)
    finish_run(run)
    log.info("best dev PER %.2f%% at epoch %d (%s); run written to %s", dev_best["per"], state["best_epoch"],
             stopped, run.path)
    return run


def _train_epoch(model: ProbeHead, opt, source: FeatureSource, train_ids: list[str], tgt: dict, frames: dict,
                 dev_ids: list[str], dev_tgt: dict, batch_frames: int, device: str, seed: int, epoch: int,
                 show: bool, *, run: Run, lr: float, scoring: list[int] | None = None) -> dict:
    """One epoch over length-bucketed train batches (the order depends on seed and epoch only), then dev.

    A non-finite batch loss stops training at once (:func:`phonecli.finite.check_loss`: the run is
    marked failed, one line names the utterance and the cache).

    Returns the epoch's log record: ``epoch``, ``train_loss``, ``dev_loss`` (nats per phone), ``dev_per``
    (percent, folded with ``scoring`` as the corpus is scored), ``seconds``, and ``gate`` (+ ``gate_collapsed``) for the gated head.
    """
    from tqdm.auto import tqdm

    t0 = time.time()
    model.train()
    order = length_batches([frames[u] for u in train_ids], batch_frames, shuffle=True, seed=seed * 100003 + epoch)
    batches = [[train_ids[i] for i in b] for b in order]
    total, steps = 0.0, 0
    bar = tqdm(source.iter_batches(batches), total=len(batches), desc=f"epoch {epoch}", disable=not show,
               leave=False, unit="batch")
    for ids_b, arrays in bar:
        x, lengths = collate(arrays, device)
        lp = model(x, lengths)
        flat, tl = ctc.flatten_targets([tgt[u] for u in ids_b])
        per_utt = ctc.ctc_loss_per_phone(lp, lengths.cpu(), flat, tl, zero_infinity=True)
        loss = per_utt.mean()
        check_loss(loss, lp, lengths, ids_b, source=" + ".join(s.name for s in source.streams), run=run,
                   fix=f"lower --lr (now {lr:g})", per_utterance=per_utt.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        total, steps = total + float(loss.detach()), steps + 1
        bar.set_postfix(loss=f"{total / steps:.3f}")
    dev = run_split(model, source, dev_ids, batch_frames, device, targets=dev_tgt, scoring=scoring)
    record = {"epoch": epoch, "train_loss": total / steps, "dev_loss": dev["loss"], "dev_per": dev["per"],
              "seconds": round(time.time() - t0, 3)}
    if "gate" in dev:
        record["gate"] = dev["gate"]
        side_i = collapsed_side(dev["gate"])
        if side_i is not None:
            record["gate_collapsed"] = source.streams[side_i].name
    return record


def _log_gate(epoch: int, record: dict, source: FeatureSource) -> None:
    g = record["gate"]
    log.info("epoch %d gate (1 = %s): mean %.3f, std %.3f, near 0 %.1f%%, near 1 %.1f%% of dev frames", epoch,
             source.streams[0].name, g["mean"], g["std"], 100 * g["near_0"], 100 * g["near_1"])
    if "gate_collapsed" in record:
        log.warning("epoch %d: the gate collapsed onto one cache (%.0f%% of dev frames use only %s)",
                    epoch, 100 * max(g["near_0"], g["near_1"]), record["gate_collapsed"])


# -- resume -------------------------------------------------------------------------------------

PROBE_KINDS = ("probe", "early-fusion", "gated-fusion")
#: what a probe writes at its end (removed whenever the run changes, with the derived files)
PROBE_OUTPUTS = ("weights.safetensors", "posteriors", "layer_weights.json", "layer_weights.png")


def _check_resumable(run: Run, kind: str, config: dict, sources: list[dict]) -> None:
    """A resumed probe must be the same probe: kind, structural options and the same caches/layers."""
    if run.kind != kind:
        raise ProbeError(f"{run.path}: holds a {run.kind} run but these options make a {kind}; rerun with the "
                         "original --features/--head, or pass --overwrite to start again")
    refuse_structural_change(run, run.record.config, config, ProbeConfig.structural_fields())

    def identity(srcs):
        return [(s.get("cache"), s.get("fingerprint"), list(s.get("layers", [])), bool(s.get("weighted")))
                for s in srcs]

    if identity(run.record.sources) != identity(sources):
        raise ProbeError(f"{run.path}: --resume with other --features/--layers than the run was started with "
                         f"({', '.join(str(s.get('cache') or s.get('name')) for s in run.record.sources)}); rerun "
                         "with the original ones, or pass --overwrite to start again")


def _save_checkpoint(ckpts: Checkpoints, model: ProbeHead, opt, state: dict, best_state: dict | None) -> Path:
    """``checkpoints/epoch-NNNN/``: the head, AdamW's state, the RNG state(s) and the loop state; the best
    epoch's weights go to ``checkpoints/best-epoch-NNNN.safetensors`` when this epoch is the new best."""
    from safetensors.torch import save_file

    if best_state is not None:
        state["best_file"] = f"best-epoch-{state['epoch']:04d}.safetensors"
        ckpts.root.mkdir(parents=True, exist_ok=True)
        atomic_write(ckpts.root / state["best_file"], lambda tmp: save_file(_cpu(best_state), str(tmp)))

    def write(d: Path) -> None:
        save_file(_cpu(model.state_dict()), str(d / "model.safetensors"))
        save_optimizer(opt, d / "optimizer.safetensors")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        save_file(rng, str(d / "rng.safetensors"))
        (d / "state.json").write_text(json.dumps(state))

    ckpt = ckpts.save(f"epoch-{state['epoch']:04d}", write)
    for old in ckpts.root.glob("best-epoch-*.safetensors"):
        if old.name != state["best_file"]:
            old.unlink(missing_ok=True)
    return ckpt


def _load_checkpoint(ckpt: Path, model: ProbeHead, opt, device: str) -> tuple[dict, dict]:
    """Restore what :func:`_save_checkpoint` wrote; returns ``(loop state, best-epoch state dict)``."""
    from safetensors.torch import load_file

    state = json.loads((ckpt / "state.json").read_text())
    model.load_state_dict(load_file(str(ckpt / "model.safetensors"), device=str(device)))
    load_optimizer(opt, ckpt / "optimizer.safetensors")
    rng = load_file(str(ckpt / "rng.safetensors"))
    torch.set_rng_state(rng.pop("torch"))
    if rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng[f"cuda{i}"] for i in range(len(rng))])
    best_state = load_file(str(ckpt.parent / state["best_file"]), device=str(device))
    return state, best_state


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}
