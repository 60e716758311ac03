"""The extraction runner: manifest + encoder -> a complete, resumable Zarr feature cache.

One call of :func:`extract_features` (or ``phonecli extract``)

1. loads the manifest and the encoder adapter (registry name or ``save_pretrained`` dir),
2. plans the cache in parts (``phonecli.cache.plan_parts``, deterministic from the manifest),
3. for every part still incomplete (this rank's share under torchrun): decodes the audio
   (``load_audio``: 16 kHz mono, one clear error per bad file), runs length-sorted batches
   through the adapter, keeps the chosen layers and hands the part to ``CacheWriter.write_part``
   (written whole, marked complete last),
4. finalizes the store (rank 0, after a barrier) and returns its path.

A crash or ``kill -9`` loses at most the parts in flight; the same command resumes.
"""

from __future__ import annotations

import logging
import os
import random
import re
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from phonecli.config import EXTRACT_PRECISIONS, ExtractConfig
from phonecli.ctc import resolve_device
from phonecli.encoders.base import EncoderAdapter, ExtractionError, LayerInfo, ModelSpec
from phonecli.errors import PhonecliError, UtteranceError
from phonecli.storage import check_free_space, os_errors

log = logging.getLogger("phonecli.extract")

DEFAULT_DTYPE = ExtractConfig.dtype
#: Compute precision of the encoder forward: float32, or torch.autocast to float16 / bfloat16
#: (matmuls and convolutions in half precision, reductions such as LayerNorm/softmax in float32).
PRECISIONS = EXTRACT_PRECISIONS
DEFAULT_PRECISION = ExtractConfig.precision
FLOAT16_MAX = 65504.0
SAMPLE_RATE = 16_000


@dataclass
class ExtractionReport:
    """What one run did. ``utterances``/``audio_seconds`` cover this run's work on all ranks."""

    path: str | Path
    model: str
    utterances: int
    audio_seconds: float
    elapsed: float                 # wall seconds from model loaded to cache finalized
    parts_done: int                # parts written by this run (all ranks)
    parts_total: int
    skipped: list[dict] = field(default_factory=list)  # skipped by this run on this rank
    nbytes: int = 0                # size of the store on disk

    @property
    def rtf(self) -> float:
        """Real-time factor: wall seconds per second of audio (< 1 is faster than real time)."""
        return self.elapsed / self.audio_seconds if self.audio_seconds > 0 else 0.0

    def summary(self) -> str:
        if self.parts_done == 0:
            head = f"cache already complete ({self.parts_total} parts); nothing extracted"
        else:
            speed = f", {1 / self.rtf:.1f}x real time" if self.rtf > 0 else ""
            head = (f"extracted {self.utterances} utterances ({self.audio_seconds:.1f} s audio) in "
                    f"{self.elapsed:.1f} s: real-time factor {self.rtf:.4f}{speed}; "
                    f"{self.parts_done}/{self.parts_total} parts")
        skipped = f"; {len(self.skipped)} skipped (see cache metadata)" if self.skipped else ""
        return f"{head}; cache size {_human_bytes(self.nbytes)}{skipped}"


# ---------------------------------------------------------------------------------------------
# option parsing


def parse_splits(splits: str | list[str] | None, available: list[str]) -> list[str]:
    """``None``/``"all"`` -> every split of the manifest; else a comma list, kept in manifest order."""
    if splits is None or splits == "all" or splits == []:
        return list(available)
    wanted = [s.strip() for s in splits.split(",")] if isinstance(splits, str) else list(splits)
    wanted = [s for s in wanted if s]
    unknown = [s for s in wanted if s not in available]
    if unknown or not wanted:
        raise ExtractionError(f"--splits {','.join(wanted) or '(empty)'}: the manifest has splits "
                              f"{','.join(available)}; pass a comma list of those")
    return [s for s in available if s in wanted]


def select_layers(layers, infos: list[LayerInfo], source: str = "the model") -> list[int]:
    """An extraction ``--layers`` spec (``all``/None, ``last``, ``0,4,9-12``, a list; see :mod:`phonecli.layers`)
    -> the model's hidden-state indices, ascending."""
    from phonecli.layers import EXTRACT, resolve

    return list(resolve("all" if layers is None else layers, [li.index for li in infos], EXTRACT,
                        source=source).layers)


def cache_location(cache_root: str | Path, corpus_id: str, model_name: str, *, layers: list[int],
                   all_layers: list[int], dtype: str, splits: list[str], all_splits: list[str],
                   precision: str = DEFAULT_PRECISION) -> str | Path:
    """``ROOT/<corpus_id>/<model>[.L<layers>][.<dtype>][.amp-<precision>][.<splits>].zarr``.

    The default extraction (all layers, float16, float32 compute, every split) is ``<model>.zarr``;
    each non-default choice adds a suffix so differently-made caches never collide, e.g.
    ``hubert-large.L9-12.int8.zarr``, ``hubert-large.amp-bfloat16.zarr`` or ``fbank.test.zarr``.
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("._") or "model"
    if layers != all_layers:
        from phonecli.layers import compact

        name += f".L{compact(layers, sep='_')}"
    if dtype != DEFAULT_DTYPE:
        name += f".{dtype}"
    if precision != DEFAULT_PRECISION:
        name += f".amp-{precision}"
    if splits != all_splits:
        name += "." + "+".join(splits)
    name += ".zarr"
    root = str(cache_root)
    if "://" in root:  # fsspec URL: keep it a string, join with "/"
        return f"{root.rstrip('/')}/{corpus_id}/{name}"
    return Path(root) / corpus_id / name


# ---------------------------------------------------------------------------------------------
# model loading


_CLASS_SUFFIX = re.compile(r"(PreTrainedModel|Model|Encoder|For[A-Za-z]+)$")


def _class_stem(cls_name: str) -> str:
    """``"HubertForCTC"`` / ``"WhisperModel.encoder"`` -> ``"Hubert"`` / ``"Whisper"``."""
    return _CLASS_SUFFIX.sub("", cls_name.split(".")[0])


def check_model_dir(source: str, spec: ModelSpec) -> None:
    """A ``save_pretrained`` directory's ``architectures`` must belong to the registry family.

    ``model_type`` picks the family; a config whose ``architectures`` name another model
    class (an edited or mixed-up directory) would otherwise load with random weights.
    """
    import json

    path = Path(source)
    if not path.is_dir() or not (path / "config.json").exists():
        return
    cfg = json.loads((path / "config.json").read_text())
    archs = cfg.get("architectures") or []
    expected = _class_stem(spec.cls)
    wrong = [a for a in archs if _class_stem(a) != expected]
    if wrong:
        raise ExtractionError(
            f"{path}: config.json has model_type {cfg.get('model_type')!r} ({spec.family} family, {spec.cls}) "
            f"but architectures={wrong}: the directory does not hold a {expected} model; re-save it with "
            f"save_pretrained from the right class"
        )


def load_adapter(model: str, *, revision: str | None, device: str, trust_remote_code: bool) -> EncoderAdapter:
    """Registry name or local directory -> loaded adapter; every failure is one clear line."""
    from phonecli.extract.models import load_encoder, resolve_model

    spec, source = resolve_model(model)  # unknown names list the valid ones
    check_model_dir(source, spec)
    try:
        return load_encoder(model, revision=revision, device=device, trust_remote_code=trust_remote_code)
    except ExtractionError:
        raise
    except ModuleNotFoundError as e:
        raise ExtractionError(f"{model}: the adapter for family {spec.family!r} cannot be imported "
                              f"({e}); install the matching extra or pick another model") from e
    except Exception as e:  # transformers/OS errors span many lines; the user needs one
        msg = " ".join(str(e).split())[:400]
        raise ExtractionError(f"{model}: could not load {spec.cls} ({type(e).__name__}: {msg}); check the "
                              f"name or that the directory was written by save_pretrained") from e


# ---------------------------------------------------------------------------------------------
# the run


def extract_features(model: str, data: str | Path, cache_root: str | Path | None = None,
                     config: ExtractConfig | None = None, *, out: str | Path | None = None,
                     progress: bool | None = None, on_part_written: Callable | None = None,
                     **overrides) -> str | Path:
    """Extract the hidden states of ``model`` for the manifest in ``data`` into the feature cache.

    Args:
        model: registry name (``phonecli models``), local ``save_pretrained`` directory or ``NAME=DIR``.
        data: directory with ``manifest.json``.
        cache_root: cache root; the store goes to ``cache_root/<corpus_id>/<model>[suffixes].zarr``
            (see :func:`cache_location`). ``out``: this exact store path/URL instead.
        config: an :class:`~phonecli.config.ExtractConfig` (splits, layers, dtype, device,
            precision, batch_seconds, on_error, revision, trust_remote_code, part_bytes); ``overrides`` are
            keyword options on top of it, validated by it.
        progress: tqdm bar (default: when stderr is a terminal).
        on_part_written: called with each written part (after it is marked complete), in the
            thread that wrote it.

    Returns:
        The store path (a ``Path``, or a ``str`` for an fsspec URL). The store holds per utterance
        ``(len(layers), frames, dim)`` at the encoder's frames/s in the chosen dtype. Rerunning the
        same call resumes an interrupted one.
    """
    return run_extraction(model, data, cache_root, config, out=out, progress=progress,
                          on_part_written=on_part_written, **overrides).path


def run_extraction(model: str, data: str | Path, cache_root: str | Path | None = None,
                   config: ExtractConfig | None = None, *, out: str | Path | None = None,
                   progress: bool | None = None, on_part_written: Callable | None = None,
                   **overrides) -> ExtractionReport:
    """:func:`extract_features`, returning an :class:`ExtractionReport` (path, real-time factor,
    size, skipped ids) instead of the bare path."""
    from phonecli.cache import CacheWriter, plan_parts
    from phonecli.data.manifest import Manifest
    from phonecli.encoders.distributed import init_distributed

    cfg = ExtractConfig.build(config, **overrides)
    splits, layers, dtype, on_error, precision = cfg.splits, cfg.layers, cfg.dtype, cfg.on_error, cfg.precision
    if cache_root is None and out is None:
        raise ExtractionError("give a cache root (--cache ROOT) or an explicit store path (--out)")

    manifest = Manifest.load(data)
    manifest.require_audio_hashes(data)
    all_splits = manifest.splits()
    chosen_splits = parse_splits(splits, all_splits)
    utts = [u for u in manifest if u.split in chosen_splits]
    if not utts:
        raise ExtractionError(f"{data}: the manifest has no utterances in splits {chosen_splits}")

    device = resolve_device(cfg.device)
    ctx = init_distributed(device, backend="gloo")  # control-plane collectives only (see distributed.py)
    try:
        if ctx.active and device == "cuda":
            device = f"cuda:{ctx.local_rank}"
        adapter = load_adapter(model, revision=cfg.revision, device=device, trust_remote_code=cfg.trust_remote_code)
        infos = adapter.layers()
        all_idx = [li.index for li in infos]
        sel = select_layers(layers, infos, source=f"{model} (hidden states)")
        positions = [all_idx.index(i) for i in sel]
        name = adapter.spec.name
        path = Path(out) if out is not None and "://" not in str(out) else out
        if path is None:
            path = cache_location(cache_root, manifest.corpus_id, name, layers=sel, all_layers=all_idx,
                                  dtype=dtype, splits=chosen_splits, all_splits=all_splits, precision=precision)
        metadata = build_metadata(adapter, sel, infos, dtype, manifest.corpus_id, chosen_splits, precision)
        materialize_model_parametrizations(adapter)  # after the fingerprint: same features for any --threads

        bytes_per_frame = len(sel) * adapter.hidden_size * (1 if dtype == "int8" else np.dtype(dtype).itemsize)
        items = [(u.utt_id, u.split, max(1, adapter.num_frames(_samples_16k(u)))) for u in utts]
        plan = plan_parts(items, bytes_per_frame, cfg.part_bytes)

        # rank 0 creates (or checks) the store before anyone else opens it; its error reaches all ranks
        writer, exc, err = None, None, None
        if ctx.rank == 0:
            try:
                with os_errors(path):
                    writer = CacheWriter.create_or_open(str(path), metadata, plan)
            except Exception as e:
                exc, err = e, str(e)
        err = ctx.broadcast_error(err)
        if exc is not None:
            raise exc
        if err is not None:
            raise ExtractionError(f"rank 0 could not open the cache: {err}")
        if writer is None:
            with os_errors(path):
                writer = CacheWriter.create_or_open(str(path), metadata, plan)

        pending = writer.pending(ctx.rank, ctx.world_size)
        if ctx.rank == 0:
            check_completed_audio(writer, plan, pending if not ctx.active else writer.pending(0, 1), manifest)
            todo = writer.pending(0, 1)
            frames = sum(sum(p.est_frames) for p in todo)
            scales = sum(len(p.utt_ids) for p in todo) * len(sel) * adapter.hidden_size * 4 if dtype == "int8" else 0
            check_free_space(path, frames * bytes_per_frame + scales, f"the {name} cache ({len(todo)} parts to write)")
        remaining = len(writer.pending(0, 1)) if ctx.active else len(pending)
        if ctx.rank == 0 and 0 < remaining < len(plan):
            log.info("resuming %s: %d of %d parts already complete, %d to do", path,
                     len(plan) - remaining, len(plan), remaining)
        by_id = {u.utt_id: u for u in utts}
        t0 = time.perf_counter()
        stats = _process_parts(pending, writer, adapter, manifest, by_id, positions, sel, dtype,
                               cfg.batch_seconds, on_error, ctx.rank, progress, on_part_written, precision, device)

        ctx.barrier()
        n_utts, seconds, n_parts = ctx.sum([stats["utterances"], stats["seconds"], stats["parts"]])
        nbytes = 0
        if ctx.rank == 0:
            with os_errors(path):
                writer.finalize()
            nbytes = _store_size(path)
        elapsed = time.perf_counter() - t0
        ctx.barrier()
        return ExtractionReport(path=path, model=name, utterances=int(n_utts), audio_seconds=seconds,
                                elapsed=elapsed, parts_done=int(n_parts), parts_total=len(plan),
                                skipped=stats["skipped"], nbytes=nbytes)
    finally:
        ctx.close()


def compute_precision(precision: str, device: str):
    """The context the encoder forwards run in: nothing for float32, else ``torch.autocast`` on the
    device's type (``cuda`` or ``cpu``; both support float16 and bfloat16 autocast in torch >= 2.4)."""
    import contextlib

    import torch

    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=getattr(torch, precision))


def check_completed_audio(writer, plan, pending, manifest) -> None:
    """Re-hash the audio of the parts a previous run already wrote (the rest is checked as it decodes):
    a file changed since ``data prepare`` stops with one line instead of reusing its old features."""
    from phonecli.data.audio import check_unchanged

    todo = {p.index for p in pending}
    for part in plan:
        if part.index in todo:
            continue
        for utt_id in part.utt_ids:
            u = manifest[utt_id]
            check_unchanged(manifest.audio_path(u), utt_id, u.audio_sha256)


def materialize_model_parametrizations(adapter: EncoderAdapter) -> None:
    """Weight-norm etc. computed once (see :func:`phonecli.threads.materialize_parametrizations`) in every
    torch module the adapter holds (adapters name their model attribute differently)."""
    import torch

    from phonecli.threads import materialize_parametrizations

    for value in list(vars(adapter).values()):
        if isinstance(value, torch.nn.Module):
            materialize_parametrizations(value)


def build_metadata(adapter: EncoderAdapter, sel: list[int], infos: list[LayerInfo], dtype: str,
                   corpus_id: str, splits: list[str], precision: str = DEFAULT_PRECISION) -> dict:
    """Root metadata per the cache contract (everything needed to trust and reuse the cache)."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from phonecli import __version__

    try:
        tf_version = version("transformers")
    except PackageNotFoundError:
        tf_version = ""
    spec = adapter.spec
    settings = {
        "splits": list(splits),
        "family": spec.family,
        "input": spec.input,
        "audio": "load_audio: mono (channel mean), 16 kHz (torchaudio sinc resample)",
        "precision": precision if precision == "float32" else f"{precision} (torch.autocast)",
    }
    adapter_settings = getattr(adapter, "settings", None)
    if isinstance(adapter_settings, dict):
        settings["adapter"] = adapter_settings
    chosen = [li for li in infos if li.index in set(sel)]
    from phonecli.encoders.layers import LAYER_CONVENTION

    return {
        "format": "phonecli-cache",
        "version": 1,
        "model": spec.name,
        "model_id": adapter.model_id,
        "revision": adapter.revision,
        "weights_fingerprint": adapter.fingerprint(),
        "transformers_version": tf_version,
        "torch_version": torch.__version__,
        "phonecli_version": __version__,
        "frame_rate": float(adapter.frame_rate),
        "sample_rate": SAMPLE_RATE,
        "layers": list(sel),
        "layer_convention": LAYER_CONVENTION,
        "layer_info": [asdict(li) for li in chosen],
        "dim": int(adapter.hidden_size),
        "dtype": dtype,
        "corpus_id": corpus_id,
        "settings": settings,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "complete": False,
    }


def _process_parts(pending, writer, adapter: EncoderAdapter, manifest, by_id: dict, positions: list[int],
                   sel: list[int], dtype: str, batch_seconds: float, on_error: str, rank: int,
                   progress: bool | None, on_part_written: Callable | None = None,
                   precision: str = DEFAULT_PRECISION, device: str = "cpu") -> dict:
    """Extract and write ``pending`` parts.

    Batches are formed per part from the manifest's lengths. Audio decodes in a background thread
    (``_load_audio``: lengths and content hashes checked against the manifest), forwards run in
    :func:`forward_workers` threads, and the previous part writes in another thread (soundfile,
    torch and the Zarr codecs release the GIL). At most ``workers + 1`` batches are in flight,
    never a whole part's audio, which bounds RAM even for fbank parts holding hours of audio.

    On the CPU each forward runs with ONE intra-op thread and ``--threads`` batches run side by
    side: torch's multi-threaded kernels give results that differ in the last bits with the thread
    count (GELU's vectorised tail, weight norm, reductions: measured on HuBERT), one thread per batch
    does not, so the cache is the same whatever ``--threads`` is. ``precision`` (autocast) is
    thread-local, so each forward enters it in its own worker thread.

    Several independent processes may extract into one store at once (two jobs started alike,
    a rerun while the first still runs): each takes its parts in its own random order and skips
    a part another process completed meanwhile, so they share the work instead of racing part
    by part; a part finished by both is kept as first written (``CacheWriter.write_part``).
    Values do not depend on the order. Under torchrun the ranks' parts are disjoint anyway.
    """
    from collections import Counter, deque

    import torch
    from tqdm.auto import tqdm

    from phonecli.extract.batching import make_batches

    order = list(pending)
    random.Random(int.from_bytes(os.urandom(8), "little")).shuffle(order)
    max_samples = int(batch_seconds * SAMPLE_RATE)
    jobs: list[tuple[int, list[str]]] = []  # (position in order, utterance ids of one batch)
    for k, part in enumerate(order):
        lengths = [(u, _samples_16k(by_id[u])) for u in part.utt_ids]
        jobs.extend((k, b) for b in make_batches(lengths, max_samples, adapter.padding_safe))

    total = sum(_seconds(by_id[i]) for p in order for i in p.utt_ids)
    show = (sys.stderr.isatty() if progress is None else progress) and rank == 0
    bar = tqdm(total=round(total, 2), unit="audio-s", disable=not show, desc=f"extract {adapter.spec.name}",
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}, {rate_fmt}]")
    stats = {"utterances": 0, "seconds": 0.0, "parts": 0, "skipped": []}
    workers = forward_workers(adapter)
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phonecli-audio")
    forward_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="phonecli-forward")
    writer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phonecli-write")
    intra_op = torch.get_num_threads()
    if _on_cpu(adapter):
        torch.set_num_threads(1)

    def forward(batch: list[str], audio: Future) -> tuple[dict, dict]:
        features: dict[str, np.ndarray] = {}
        failures: dict[str, str] = {}
        with compute_precision(precision, device):
            _run_batch(batch, audio.result(), adapter, positions, sel, dtype, features,
                       _failure_handler(on_error, failures))
        return features, failures

    def account(fut: Future) -> None:
        written, utt_ids, skipped = fut.result()
        if written:
            stats["parts"] += 1
            stats["utterances"] += len(utt_ids)
            stats["seconds"] += sum(_seconds(by_id[u]) for u in utt_ids)
            stats["skipped"].extend(skipped)

    in_flight: Future | None = None
    window: deque = deque()     # (batch, forward future), in job order
    batches_of = Counter(k for k, _ in jobs)
    next_job = 0

    def next_batch() -> tuple[list[str], Future | None]:
        """The next job's (batch, forward future), keeping up to ``workers + 1`` jobs in flight."""
        nonlocal next_job
        while next_job < len(jobs) and len(window) < workers + 1:
            batch = jobs[next_job][1]
            next_job += 1
            audio = loader.submit(_load_audio, batch, manifest, by_id, on_error == "skip")
            window.append((batch, forward_pool.submit(forward, batch, audio)))
        return window.popleft()

    try:
        for k, part in enumerate(order):
            if writer.part_complete(part.index):
                log.debug("rank %d: part %d was completed by another process; skipped", rank, part.index)
                for _ in range(batches_of[k]):
                    next_batch()[1].cancel()
                bar.update(sum(_seconds(by_id[u]) for u in part.utt_ids))
                continue
            part_feats: dict[str, np.ndarray] = {}
            part_fail: dict[str, str] = {}
            for _ in range(batches_of[k]):
                batch, fut = next_batch()
                feats, fails = fut.result()
                part_feats.update(feats)
                part_fail.update(fails)
                bar.update(sum(_seconds(by_id[u]) for u in batch))
            skipped = [{"utt_id": u, "reason": part_fail[u]} for u in part.utt_ids if u in part_fail]
            features = {u: part_feats[u] for u in part.utt_ids if u in part_feats}  # manifest order
            if in_flight is not None:
                account(in_flight)  # at most one finished part waits in memory to be written
            in_flight = writer_pool.submit(_write, writer, part, features, skipped, on_part_written, rank)
        if in_flight is not None:
            account(in_flight)
    except BaseException:
        for _, fut in window:
            fut.cancel()
        # keep what is complete: let the part already handed to the writer finish
        if in_flight is not None:
            try:
                in_flight.result()
            except Exception:
                pass
        raise
    finally:
        loader.shutdown(wait=True, cancel_futures=True)
        forward_pool.shutdown(wait=True, cancel_futures=True)
        writer_pool.shutdown(wait=True)
        torch.set_num_threads(intra_op)
        bar.close()
    return stats


def _on_cpu(adapter: EncoderAdapter) -> bool:
    return not str(getattr(adapter, "device", "cpu")).startswith("cuda")


def forward_workers(adapter: EncoderAdapter) -> int:
    """Batches forwarded side by side: ``--threads`` on the CPU (one intra-op thread each), 1 on a GPU."""
    from phonecli.threads import current

    return max(1, current().threads) if _on_cpu(adapter) else 1


def _failure_handler(on_error: str, failures: dict[str, str]):
    def fail(utt_id: str, reason: str) -> None:
        if on_error == "fail":
            raise UtteranceError(utt_id, f"{reason} (completed cache parts are kept; "
                                         "rerun the same command to resume)")
        failures[utt_id] = reason
        log.warning("skipping utterance %s: %s", utt_id, reason)

    fail.skips = on_error == "skip"
    return fail


def _write(writer, part, features: dict, skipped: list[dict], on_part_written: Callable | None,
           rank: int) -> tuple[bool, list[str], list[dict]]:
    """Write one part; returns ``(written, utt_ids, skipped)`` (not written: another process had completed it)."""
    with os_errors(f"{writer.path}/parts/p{part.index:05d}"):     # a full disk names the store, in one line
        written = writer.write_part(part, features, skipped)
    if written:
        log.debug("rank %d: part %d written (%d utterances, %d skipped)", rank, part.index, len(features),
                  len(skipped))
    else:
        log.debug("rank %d: part %d was completed by another process meanwhile; its copy is kept", rank,
                  part.index)
    if on_part_written is not None:
        on_part_written(part)
    return written, list(features), skipped


def _load_audio(utt_ids: list[str], manifest, by_id: dict, skip: bool) -> dict[str, np.ndarray | str]:
    """utt_id -> float32 waveform at 16 kHz, or the error line for that utterance.

    ``load_audio`` turns every bad-file case it knows into an AudioError; anything else is recorded only
    under ``--on-error skip`` (the user asked to go on past failing utterances), else it keeps its traceback.
    A file changed since ``data prepare`` (AudioChangedError) always stops: the manifest itself is stale.
    """
    from phonecli.data.audio import AudioChangedError, AudioError, load_audio

    out: dict[str, np.ndarray | str] = {}
    for utt_id in utt_ids:
        u = by_id[utt_id]
        try:
            # a changed file (content hash / sample count) raises AudioChangedError: never skipped
            out[utt_id] = load_audio(manifest.audio_path(u), expected=(utt_id, u.num_samples, u.audio_sha256))
        except AudioError as e:
            out[utt_id] = str(e)
        except AudioChangedError:
            raise
        except Exception as e:
            if not skip:
                raise
            out[utt_id] = f"{manifest.audio_path(by_id[utt_id])}: {type(e).__name__}: {e}"
    return out


def _run_batch(batch: list[str], audio: dict, adapter: EncoderAdapter, positions: list[int], sel: list[int],
               dtype: str, features: dict[str, np.ndarray], fail) -> None:
    """Forward one batch; fills ``features[utt_id]`` = float32 ``(len(sel), frames, dim)``."""
    waves: dict[str, np.ndarray] = {}
    for utt_id in batch:
        w = audio[utt_id]
        if isinstance(w, str):
            fail(utt_id, w)
        elif adapter.num_frames(len(w)) < 1:
            fail(utt_id, f"audio too short for {adapter.spec.name} ({len(w) / SAMPLE_RATE:.3f} s gives no "
                         f"frame); remove it or use --on-error skip")
        else:
            waves[utt_id] = w
    if adapter.padding_safe:
        groups = [list(waves)]
    else:  # batches were formed from manifest lengths; resampling may shift a length by a sample
        by_len: dict[int, list[str]] = {}
        for u, w in waves.items():
            by_len.setdefault(len(w), []).append(u)
        groups = list(by_len.values())
    for group in groups:
        if not group:
            continue
        for utt_id, states in _forward(adapter, group, waves, fail):
            x = _select(states, positions, adapter, utt_id, len(waves[utt_id]))
            problem = _value_problem(x, sel, dtype)
            if problem:
                fail(utt_id, problem)
                continue
            features[utt_id] = x


def _forward(adapter: EncoderAdapter, batch: list[str], waves: dict, fail):
    """Yield ``(utt_id, states)``; a failing batch is retried one by one to isolate the culprit.

    The culprit's problem is an utterance error when the adapter says so (a PhonecliError), or when
    ``--on-error skip`` asked to go on past failing utterances (recorded with the exception's type and
    message). Otherwise the input passed every check before the forward, so the exception is a bug
    (phonecli's or the model's) and keeps its traceback.
    """
    try:
        outs = adapter.forward([waves[u] for u in batch])
        yield from zip(batch, outs)
        return
    except PhonecliError as e:
        if len(batch) == 1:
            fail(batch[0], f"{adapter.spec.name}: {e}")
            return
    except Exception as e:
        if len(batch) == 1:
            if not fail.skips:
                raise
            msg = " ".join(str(e).split())[:300]
            fail(batch[0], f"{adapter.spec.name} forward failed ({type(e).__name__}: {msg})")
            return
    for utt_id in batch:
        yield from _forward(adapter, [utt_id], waves, fail)


def _select(states: np.ndarray, positions: list[int], adapter: EncoderAdapter, utt_id: str,
            samples: int) -> np.ndarray:
    """Check the adapter's output shape against its own contract and keep the chosen layers."""
    expected = (len(adapter.layers()), adapter.num_frames(samples), adapter.hidden_size)
    if tuple(states.shape) != expected:
        raise ExtractionError(f"{adapter.spec.name}: adapter returned shape {tuple(states.shape)} for utterance "
                              f"{utt_id} but its contract says {expected} (layers, frames, dim); "
                              f"this is a phonecli bug, please report it")
    if len(positions) == states.shape[0]:
        return np.ascontiguousarray(states, dtype=np.float32)
    return np.ascontiguousarray(states[positions], dtype=np.float32)


def _value_problem(x: np.ndarray, sel: list[int], dtype: str) -> str | None:
    """NaN/inf or float16 overflow -> a reason naming the layer; None when the values are storable."""
    peak = np.abs(x).max(axis=(1, 2))  # one pass; NaN propagates into the peak
    for layer, m in zip(sel, peak):
        if not np.isfinite(m):
            return f"hidden state {layer} contains NaN/inf; check the audio or the model weights"
        if dtype == "float16" and m > FLOAT16_MAX:
            return (f"hidden state {layer} reaches |x| = {m:.4g} > {FLOAT16_MAX:.0f} (float16 max); "
                    f"rerun with --dtype float32 or --dtype int8")
    return None


def _samples_16k(u) -> int:
    return int(round(u.num_samples * SAMPLE_RATE / u.sample_rate)) if u.sample_rate else int(u.num_samples)


def _seconds(u) -> float:
    return u.num_samples / u.sample_rate if u.sample_rate else 0.0


def _store_size(path: str | Path) -> int:
    """Bytes on disk of the store (fsspec ``du``; works for local paths and URLs)."""
    try:
        import fsspec

        fs, p = fsspec.core.url_to_fs(str(path))
        return int(fs.du(p))
    except Exception:  # size is informative only; never fail a finished extraction over it
        return 0


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
