"""The fine-tuning loop: :func:`finetune` (what ``phonecli finetune`` runs).

Machinery: a plain PyTorch loop, chosen over ``transformers.Trainer`` because batches are
sized in seconds of padded audio (``LengthBucketSampler`` from the cache API, variable
utterance counts per batch), every batch is guarded (infinite/NaN loss names the step and the
utterances), the dev criterion is greedy PER, and the output is a phonecli run directory, not
a Trainer checkpoint folder. What Trainer would give is here explicitly: AdamW + linear
warmup/decay (``transformers.get_linear_schedule_with_warmup``), gradient accumulation,
gradient clipping (1.0), mixed precision (``torch.autocast`` bf16/fp16, ``GradScaler`` for
fp16), gradient checkpointing, resumable checkpoints, and DDP under ``torchrun``
(``torchrun --nproc-per-node N -m phonecli finetune ...``: each rank takes every N-th batch;
gradients are all-reduced; rank 0 evaluates nothing alone — dev statistics are summed over
ranks — and writes checkpoints, weights and posteriors).

Model selection: after every epoch the dev split is decoded greedily; the epoch with the
lowest dev PER wins, ties broken by lower dev CTC loss (so the early all-blank plateau still
counts as progress). The test split is never looked at during training.

Checkpoints (``RUN/checkpoints/step-NNNNNNN/``: trainable parameters as safetensors, AdamW
state as safetensors (:func:`phonecli.runs.save_optimizer`), ``state.json`` with epoch,
batches done, scheduler/scaler/RNG states, best so far; ``RUN/checkpoints/LATEST`` names the
newest complete one and is replaced atomically last) are written every ``save_steps``
optimizer steps and at the end of every epoch. ``--resume`` continues from LATEST with the same
batches, RNG streams and schedule, so a resumed run equals an uninterrupted one on the CPU.
The checkpoints are deleted when the run completes (the best epoch's weights are in
``weights.safetensors``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from phonecli import ctc
from phonecli.config import FinetuneConfig
from phonecli.finite import check_loss
from phonecli.runs import (
    Checkpoints,
    Run,
    RunStart,
    finish_run,
    load_optimizer,
    prepare_run,
    save_optimizer,
    start_run,
)
from phonecli.storage import atomic_write, check_free_space
from phonecli.finetune.data import (
    Collator,
    Example,
    SAMPLE_RATE,
    inference_batches,
    load_waves,
    make_examples,
    samples_16k,
    to_device,
)
from phonecli.finetune.model import (
    CTCModel,
    FinetuneError,
    LoraSettings,
    build_model,
    count_parameters,
    export_weights,
    load_adapter,
    load_trainable_state,
    lora_config_dict,
    parse_mode,
    trainable_state,
)

log = logging.getLogger("phonecli.finetune")

MAX_GRAD_NORM = 1.0
#: what a fine-tuning run writes at its end (removed whenever the run changes, with the derived files)
FINETUNE_OUTPUTS = ("weights.safetensors", "posteriors")
CORPUS_MEAN_SECONDS = 4.0   # SpeechOcean762: 5.6 h / 5,000 utterances; converts the seed's batch sizes


@dataclass(frozen=True)
class _Job:
    """What one :func:`finetune` call works on besides its config (inputs, output, how it runs)."""

    model: str                       # registry name, absolute save_pretrained dir, or NAME=/abs/dir
    data: str
    out: Path
    start: RunStart                  # what the run lifecycle decided (phonecli.runs.prepare_run)
    progress: bool | None
    on_checkpoint: Callable[[Path], None] | None


@dataclass
class FinetuneResult:
    run: object                      # phonecli.runs.Run
    model: CTCModel | None           # the trained model (best epoch) in this process; None if already complete
    selection: dict = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)


def family_defaults(spec, hidden_size: int) -> dict:
    """Seed training-config table (experiments-log.md) -> ``{"lr", "batch_seconds", "epochs", "from"}``.

    Seed batch sizes are utterances; they become seconds of audio at the corpus mean of 4 s.
    """
    fam, name = spec.family, spec.name
    if fam == "whisper":
        lr, batch, src = 1e-4, 4, "seed: Whisper Enc"
    elif fam == "w2v-bert":
        lr, batch, src = 5e-5, 4, "seed: Wav2Vec2-BERT"
    elif hidden_size >= 1280:
        lr, batch, src = 3e-5, 1, "seed: XLS-R 1B / MMS-1B"
    elif fam == "wav2vec2" and hidden_size < 1024:
        lr, batch, src = 3e-4, 4, "seed: Wav2Vec2 (base)"
    elif "distil" in name:
        lr, batch, src = 3e-5, 4, "seed: DistilHuBERT"
    else:
        lr, batch, src = 3e-5, 4, "seed: HuBERT Large / Data2Vec2 / Wav2Vec2 Phoneme (large models)"
    return {"lr": lr, "batch_seconds": batch * CORPUS_MEAN_SECONDS, "epochs": 10, "from": src}


# -- small helpers -----------------------------------------------------------------------------

def ctc_loss(log_probs: torch.Tensor, lengths: torch.Tensor, batch: dict) -> torch.Tensor:
    """Per-utterance CTC loss ``(B,)`` float32, each divided by its target length (:mod:`phonecli.ctc`)."""
    labels, tl = batch["labels"], batch["target_lengths"]
    return ctc.ctc_loss_per_phone(log_probs, lengths, labels[labels >= 0], tl)


def autocast(precision: str, device: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


def _absolute_model(model: str) -> str:
    """Local directories (also in NAME=DIR) become absolute: run.json must work from any directory."""
    if Path(model).is_dir():
        return str(Path(model).resolve())
    name, sep, local = model.partition("=")
    if sep and Path(local).is_dir():
        return f"{name}={Path(local).resolve()}"
    return model


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                                             metadata=metadata))


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


# -- checkpoints -------------------------------------------------------------------------------

def _save_checkpoint(run_dir: Path, model, optimizer, scheduler, scaler, state: dict,
                     on_checkpoint: Callable[[Path], None] | None = None) -> Path:
    """``checkpoints/step-NNNNNNN/`` (written whole, then LATEST moves: :class:`phonecli.runs.Checkpoints`)."""
    def write(ckpt: Path) -> None:
        _save_safetensors(trainable_state(model), ckpt / "trainable.safetensors")
        save_optimizer(optimizer, ckpt / "optimizer.safetensors")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state()  # dropout on a GPU draws from the GPU's generator
        _save_safetensors(rng, ckpt / "rng.safetensors")
        np_state = np.random.get_state()
        full = {**state, "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                "numpy_rng": [np_state[0], np_state[1].tolist(), *[float(x) if isinstance(x, float) else int(x)
                                                                  for x in np_state[2:]]],
                "python_rng": repr(random.getstate())}
        (ckpt / "state.json").write_text(json.dumps(full, default=float))

    ckpt = Checkpoints(run_dir).save(f"step-{state['global_step']:07d}", write)
    if on_checkpoint is not None:
        on_checkpoint(ckpt)
    return ckpt


def _load_checkpoint(ckpt: Path, model, optimizer, scheduler, scaler) -> dict:
    import ast

    load_trainable_state(model, _load_safetensors(ckpt / "trainable.safetensors"))
    load_optimizer(optimizer, ckpt / "optimizer.safetensors")
    state = json.loads((ckpt / "state.json").read_text())
    scheduler.load_state_dict(state.pop("scheduler"))
    sc = state.pop("scaler")
    if scaler is not None and sc:
        scaler.load_state_dict(sc)
    rng = _load_safetensors(ckpt / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    kind, keys, pos, has_gauss, cached = state.pop("numpy_rng")
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    random.setstate(ast.literal_eval(state.pop("python_rng")))
    return state


def _prefetched(batches: list[list[Example]], collator: Collator):
    """Collated batches, the next one decoded (audio + features) in a background thread while the
    model trains on the current one (soundfile and numpy release the GIL); deterministic order."""
    from concurrent.futures import ThreadPoolExecutor

    def make(exs):
        return collator(list(zip(exs, load_waves(exs))))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="phonecli-ft-data") as pool:
        nxt = pool.submit(make, batches[0]) if batches else None
        for k in range(len(batches)):
            cur = nxt.result()
            nxt = pool.submit(make, batches[k + 1]) if k + 1 < len(batches) else None
            yield cur


# -- evaluation --------------------------------------------------------------------------------

@torch.no_grad()
def predict(model: CTCModel, examples: list[Example], collator: Collator, *, batch_seconds: float,
            padding_safe: bool, device: str, precision: str = "fp32", progress: bool = False,
            desc: str = "posteriors") -> dict[str, np.ndarray]:
    """``{utt_id: (frames, 40) float32 log-posteriors}`` in ``examples`` order (eval mode)."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    out: dict[str, np.ndarray] = {}
    from phonecli.encoders.adapters.whisper import WINDOWS_PER_FORWARD

    # Whisper pads every utterance to a 30 s window: bound windows per forward as extraction does
    max_utts = WINDOWS_PER_FORWARD if model.family == "whisper" else None
    batches = inference_batches(examples, batch_seconds, padding_safe, max_utts)
    bar = tqdm(total=round(sum(e.samples for e in examples) / SAMPLE_RATE, 1), unit="audio-s", disable=not progress,
               desc=desc, dynamic_ncols=True)
    try:
        for idx in batches:
            exs = [examples[i] for i in idx]
            batch = to_device(collator(list(zip(exs, load_waves(exs)))), device)
            with autocast(precision, device):
                lp, lengths = model(batch)
            lp = lp.float().cpu().numpy()
            for b, e in enumerate(exs):
                out[e.utt_id] = np.ascontiguousarray(lp[b, : int(lengths[b])])
            bar.update(sum(e.samples for e in exs) / SAMPLE_RATE)
    finally:
        bar.close()
        model.train(was_training)
    return {e.utt_id: out[e.utt_id] for e in examples}


def dev_statistics(post: dict[str, np.ndarray], examples: list[Example],
                   scoring: list[int] | None = None) -> tuple[float, float, float, float]:
    """``(edits, ref_phones, loss_sum, loss_count)`` of greedy decoding / CTC loss on ``examples``; edits and
    reference phones counted after folding both sides with ``scoring`` (:func:`phonecli.ctc.scoring_ids`).

    Summable over ranks; PER = :func:`phonecli.ctc.corpus_per` of the sums. Utterances whose
    target cannot fit their frames count for PER but not for the loss (it would be infinite).
    """
    edits = refs = loss_sum = count = 0.0
    for e in examples:
        lp = post[e.utt_id]
        ref = ctc.fold_ids(e.target, scoring)
        edits += ctc.edit_distance(ref, ctc.fold_ids(ctc.greedy_ids(lp), scoring))
        refs += len(ref)
        loss = ctc.posterior_ctc_loss(lp, e.target)
        if loss is not None:
            loss_sum += loss
            count += 1
    return edits, refs, loss_sum, count


# -- the run -----------------------------------------------------------------------------------

def _resolved_config(cfg: FinetuneConfig, job: _Job, adapter, defaults: dict) -> dict:
    """run.json's ``config``: the config with the family defaults filled in, plus where the model came from."""
    c = cfg.to_dict()
    # "model" is what reports show (the registry row / directory name); "model_source" is what loads it
    c = {"model": adapter.spec.name, **c, "data": job.data, "model_source": job.model}
    c["defaults_from"] = defaults["from"]
    c["base_model"] = {"name": adapter.spec.name, "family": adapter.spec.family, "model_id": adapter.model_id,
                       "revision": adapter.revision, "class": type(adapter.model).__name__,
                       "hidden_size": int(adapter.hidden_size), "frame_rate": float(adapter.frame_rate),
                       "settings": getattr(adapter, "settings", {}) or {}}
    return c


def _resume_config(stored: dict, cfg: FinetuneConfig, job: _Job) -> FinetuneConfig:
    """``cfg`` with the recorded family defaults for options left at None; refuses a structural change."""
    cfg = replace(cfg, **{k: stored[k] for k in ("lr", "batch_seconds", "epochs")
                          if getattr(cfg, k) is None and stored.get(k) is not None})
    changes = cfg.structural_changes(stored)
    if stored.get("model_source", job.model) != job.model:
        changes.insert(0, ("model", stored["model_source"], job.model))
    if changes:
        k, was, now = changes[0]
        raise FinetuneError(f"{job.out}: --resume with {k}={now!r} but the run was started with {was!r}; "
                            f"rerun with the original options or choose a new --out")
    return cfg


def finetune(model: str, data: str | Path, out: str | Path, config: FinetuneConfig | None = None, *,
             overwrite: bool = False, resume: bool = False, progress: bool | None = None,
             on_checkpoint: Callable[[Path], None] | None = None, **overrides) -> FinetuneResult:
    """Fine-tune ``model`` with a fresh CTC head (39 phones + blank) on ``data``; write the run ``out``.

    Args:
        model: registry name, local ``save_pretrained`` directory, or ``NAME=DIR``.
        data: directory holding manifest.json (needs train and dev).
        out: the run directory.
        config: a :class:`~phonecli.config.FinetuneConfig` (``mode`` is required); ``overrides`` are
            keyword options on top of it (``mode="lora", epochs=3``), validated by it. ``None`` for
            ``epochs``/``lr``/``batch_seconds`` means the family default (:func:`family_defaults`).
        overwrite: replace a run already at ``out`` (see :mod:`phonecli.runs`); without it a run there is
            refused.
        resume: continue an interrupted run from its last checkpoint (same batches, RNG streams and
            schedule: equal to an uninterrupted run on the CPU); a complete run is returned as it is.
        progress: tqdm bars (default: when stderr is a terminal).
        on_checkpoint: called with each checkpoint directory once it is complete.

    Returns:
        :class:`FinetuneResult`: the run (``weights.safetensors``; ``posteriors/{train,dev,test}``: float32
        ``(frames, 40)`` log-posteriors at the encoder's frame rate), the trained model (best epoch), the dev
        selection (PER in percent) and the skipped training utterances.
    """
    from phonecli.data.manifest import Manifest
    from phonecli.encoders.distributed import init_distributed

    cfg = FinetuneConfig.build(config, **overrides)
    device = ctc.resolve_device(cfg.device)
    if cfg.precision == "fp16" and not device.startswith("cuda"):
        raise FinetuneError("--precision fp16 needs a CUDA device (CPU autocast is bf16 only); use bf16 or fp32")
    mode = parse_mode(cfg.mode)
    start = RunStart(Path(out), "new")
    # under torchrun rank 0 alone creates, replaces or refuses the run; the others follow it (a resume is
    # read-only until then, so every rank may look)
    if int(os.environ.get("RANK", "0")) == 0 or resume:
        start = prepare_run(out, ("finetune",), overwrite=overwrite, resume=resume)
    job = _Job(_absolute_model(model), str(data), Path(out), start, progress, on_checkpoint)
    if start.action in ("resume", "done"):
        cfg = _resume_config(start.run.record.config, cfg, job)
    if start.action == "done":
        log.info("%s: run already complete; nothing to do", job.out)
        return FinetuneResult(start.run, None, start.run.record.selection or {}, start.run.info.get("skipped", []))
    manifest = Manifest.load(job.data)
    for split in ("train", "dev"):
        if not manifest.split(split):
            raise FinetuneError(f"{job.data}: the manifest has no {split} utterances; fine-tuning needs train and dev "
                                "(re-run `phonecli data prepare` with a dev fraction > 0)")

    ctx = init_distributed(device)
    try:
        if ctx.active and device.startswith("cuda"):
            device = f"cuda:{ctx.local_rank}"
        return _run(cfg, job, mode, manifest, device, ctx)
    finally:
        ctx.close()


def _run(cfg: FinetuneConfig, job: _Job, mode, manifest, device: str, ctx) -> FinetuneResult:
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from phonecli.cache.dataset import LengthBucketSampler

    show = (sys.stderr.isatty() if job.progress is None else job.progress) and ctx.rank == 0
    run_dir = job.out
    # QLoRA: the float32 base only serves the checks and the fingerprint; it stays on the CPU
    adapter = load_adapter(job.model, device="cpu" if mode.name == "qlora" else device, revision=cfg.revision,
                           trust_remote_code=cfg.trust_remote_code)
    base_fingerprint = adapter.fingerprint()
    defaults = family_defaults(adapter.spec, int(adapter.hidden_size))
    resolved = _resolved_config(cfg, job, adapter, defaults)
    lr, batch_seconds, epochs = resolved["lr"], resolved["batch_seconds"], resolved["epochs"]
    compute_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
    lora = LoraSettings(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout)
    model = build_model(adapter, mode, lora=lora, gradient_checkpointing=cfg.gradient_checkpointing,
                        compute_dtype=compute_dtype, device=device, seed=cfg.seed, vocab_size=len(manifest.vocab))
    if mode.lora:
        resolved["lora"] = lora_config_dict(model.encoder)
    if mode.name == "qlora":
        resolved["quantization"] = {"bits": 4, "quant_type": "nf4", "double_quant": False,
                                    "compute_dtype": str(compute_dtype).replace("torch.", ""), "library": "bitsandbytes"}
    n_train, n_total = count_parameters(model)
    resolved["parameters"] = {"trainable": n_train, "total": n_total}
    collator = Collator(adapter)

    train, skipped = make_examples(manifest, "train", cfg.targets, adapter.num_frames,
                                   max_audio_seconds=cfg.max_audio_seconds)
    dev, _ = make_examples(manifest, "dev", cfg.targets, adapter.num_frames, training=False)
    scoring = ctc.scoring_ids(manifest.vocab.symbols, manifest.corpus.fold)   # dev PER as the corpus is scored
    for s in skipped:
        log.warning("skipping training utterance %s: %s", s["utt_id"], s["reason"])
    if skipped:
        log.warning("%d of %d training utterances skipped (see run.json 'skipped')", len(skipped),
                    len(skipped) + len(train))
    if not train:
        raise FinetuneError(f"{job.data}: no usable training utterance ({len(skipped)} skipped, first: "
                            f"{skipped[0]['utt_id'] if skipped else '-'}: {skipped[0]['reason'] if skipped else ''})")

    if ctx.rank == 0:
        if job.start.action == "new":
            # at the peak of a checkpoint save: old and new checkpoint (trainable weights + AdamW's two moments),
            # old and new best weights; then every posterior
            frames = sum(adapter.num_frames(samples_16k(u)) for u in manifest)
            check_free_space(run_dir, 8 * 4 * n_train + frames * len(manifest.vocab.symbols) * 4 + 2**20,
                             "the fine-tuning run (checkpoints, weights, posteriors)")
        run = start_run(job.start, "finetune", config=resolved, corpus_id=manifest.corpus_id, data=job.data,
                        vocab=manifest.vocab.symbols, frame_rate=adapter.frame_rate, outputs=FINETUNE_OUTPUTS,
                        sources=[{
                            "model": adapter.spec.name, "model_id": adapter.model_id,
                            "revision": adapter.revision, "fingerprint": base_fingerprint}])
        run.info["skipped"] = skipped
        run.save_info()
    ctx.barrier()
    if ctx.rank != 0:
        run = Run.open(run_dir, require_complete=False)

    # the data order / dropout / SpecAugment streams start from the seed (restored on resume)
    torch.manual_seed(cfg.seed + 1)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)

    sampler = LengthBucketSampler([e.samples for e in train], int(batch_seconds * SAMPLE_RATE), shuffle=True,
                                  seed=cfg.seed, num_replicas=ctx.world_size, rank=ctx.rank)
    steps_per_epoch = []
    for ep in range(epochs):
        sampler.set_epoch(ep)
        steps_per_epoch.append(math.ceil(len(list(iter(sampler))) / cfg.grad_accum))
    total_steps = sum(steps_per_epoch)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None

    state = {"epoch": 0, "batches_done": 0, "global_step": 0, "best": None, "train_loss_sum": 0.0,
             "train_loss_count": 0, "history": []}
    ckpt = Checkpoints(run_dir).latest() if job.start.action == "resume" else None
    if ckpt is None and ctx.rank == 0:  # a fresh start (also --resume of a run killed before its first checkpoint)
        (run_dir / "train_log.jsonl").unlink(missing_ok=True)
        Checkpoints(run_dir).clear()
    ctx.barrier()
    if ckpt is not None:
        state = _load_checkpoint(ckpt, model, optimizer, scheduler, scaler)
        log.info("resuming %s from %s (epoch %d, %d batches done, step %d)", run_dir, ckpt.name,
                 state["epoch"] + 1, state["batches_done"], state["global_step"])
        if ctx.rank == 0:  # the checkpoint carries the epoch records: the log matches it whatever was killed
            run.write_log(state["history"])

    train_model = model
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # layerdrop / SpecAugment make some parameters unused in some steps
        train_model = DDP(model, device_ids=[ctx.local_rank] if device.startswith("cuda") else None,
                          find_unused_parameters=True)
    ckpt_root = run_dir / "checkpoints"
    model.train()
    for epoch in range(state["epoch"], epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        batches = list(iter(sampler))
        start = state["batches_done"] if epoch == state["epoch"] else 0
        bar = tqdm(total=len(batches), initial=start, disable=not show, desc=f"epoch {epoch + 1}/{epochs}",
                   unit="batch", dynamic_ncols=True)
        batch_exs = [[train[i] for i in batches[b]] for b in range(start, len(batches))]
        for b, batch in enumerate(_prefetched(batch_exs, collator), start=start):
            batch = to_device(batch, device)
            micro = b % cfg.grad_accum
            last_micro = micro == cfg.grad_accum - 1 or b == len(batches) - 1
            sync = nullcontext() if (last_micro or not ctx.active) else train_model.no_sync()
            with sync:
                with autocast(cfg.precision, device):
                    lp, lengths = train_model(batch)
                per = ctc_loss(lp, lengths, batch)
                loss = per.mean()
                check_loss(loss, lp, lengths, batch["utt_ids"], per_utterance=per, run=run if ctx.rank == 0 else None,
                           source=lambda u: str(manifest.audio_path(u)), what=f"CTC loss at step "
                           f"{state['global_step'] + 1} (epoch {epoch + 1}, batch {b + 1}/{len(batches)})",
                           fix="lower --lr, use --precision fp32, or remove that utterance (the last checkpoint "
                               "is kept)")
                scaled = loss / cfg.grad_accum
                (scaler.scale(scaled) if scaler else scaled).backward()
            state["train_loss_sum"] += loss.item()
            state["train_loss_count"] += 1
            if last_micro:
                if scaler:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["global_step"] += 1
                state["batches_done"] = b + 1
                if cfg.save_steps and state["global_step"] % cfg.save_steps == 0 and b + 1 < len(batches):
                    if ctx.rank == 0:
                        _save_checkpoint(run_dir, model, optimizer, scheduler, scaler, state, job.on_checkpoint)
                    ctx.barrier()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()

        # dev: every rank decodes its share; sums are all-reduced
        post = predict(model, dev[ctx.rank::ctx.world_size], collator, batch_seconds=cfg.eval_batch_seconds,
                       padding_safe=adapter.padding_safe, device=device, precision=cfg.precision)
        edits, refs, loss_sum, count = ctx.sum(list(dev_statistics(post, dev[ctx.rank::ctx.world_size], scoring)))
        tl_sum, tl_count = ctx.sum([state["train_loss_sum"], float(state["train_loss_count"])])
        dev_per = ctc.corpus_per([edits], [refs])
        dev_loss = loss_sum / count if count else float("nan")
        record = {"epoch": epoch + 1, "step": state["global_step"], "train_loss": tl_sum / max(tl_count, 1),
                  "dev_loss": dev_loss, "dev_per": dev_per, "lr": scheduler.get_last_lr()[0],
                  "seconds": round(time.perf_counter() - t0, 3)}
        best = state["best"]
        improved = ctc.improves(dev_per, dev_loss, best and ctc.selection_key(best["value"], best["dev_loss"]))
        if improved:
            state["best"] = {"metric": "dev_per", "value": dev_per, "dev_loss": dev_loss, "epoch": epoch + 1,
                             "step": state["global_step"], "file": f"best-epoch-{epoch + 1:03d}.safetensors"}
        log.info("epoch %d/%d: train loss %.4f, dev loss %.4f, dev PER %.2f%%%s", epoch + 1, epochs,
                 record["train_loss"], dev_loss, dev_per, " (best)" if improved else "")
        state.update(epoch=epoch + 1, batches_done=0, train_loss_sum=0.0, train_loss_count=0)
        state["history"].append(record)
        if ctx.rank == 0:
            # order matters for a kill at any point: best weights (new name), checkpoint (LATEST moves:
            # the epoch is done; it holds the log records too), log line, then stale best files go
            if improved:
                ckpt_root.mkdir(parents=True, exist_ok=True)
                _save_safetensors(trainable_state(model), ckpt_root / state["best"]["file"],
                                  metadata={"epoch": str(epoch + 1)})
            _save_checkpoint(run_dir, model, optimizer, scheduler, scaler, state, job.on_checkpoint)
            run.append_log(record)
            for old in ckpt_root.glob("best-epoch-*.safetensors"):
                if old.name != state["best"]["file"]:
                    old.unlink(missing_ok=True)
        ctx.barrier()

    # the selected epoch's weights -> weights.safetensors, posteriors for every split (rank 0)
    selection = dict(state["best"])
    load_trainable_state(model, _load_safetensors(ckpt_root / selection.pop("file")))
    if ctx.rank == 0:
        _save_safetensors(export_weights(model, mode), run.weights_path,
                          metadata={"format": "phonecli-finetune-weights", "mode": str(mode),
                                    "base_model_id": str(adapter.model_id), "base_revision": str(adapter.revision)})
        for split in manifest.splits():
            exs, _ = make_examples(manifest, split, cfg.targets, adapter.num_frames, training=False)
            run.write_posteriors(split, predict(model, exs, collator, batch_seconds=cfg.eval_batch_seconds,
                                                padding_safe=adapter.padding_safe, device=device,
                                                precision=cfg.precision, progress=show, desc=f"posteriors {split}"))
        run.record.selection = selection
        finish_run(run)
    ctx.barrier()
    model.eval()
    return FinetuneResult(run, model, selection, skipped)

