"""Feature sources for probes: one or more *streams* (a cache, or an in-memory dict) aligned per frame.

A :class:`Stream` yields, per utterance, the selected layers of one encoder as
``(layers, frames, dim)`` arrays (float16 or float32 as stored; an int8 cache yields
:class:`~phonecli.cache.int8.Int8Features`, int8 values plus scales, which the probe
dequantises on its device: a minibatch moves about half the bytes of float16). A :class:`FeatureSource`
groups 1+ streams (early / gated fusion when 2+), aligns their frame rates and checks that
they describe the same corpus and the same utterances. The training loop only sees a
``FeatureSource``, so an in-memory dict (tests, notebooks) and a Zarr cache are interchangeable.

Frame-rate alignment (fusion): by default every stream is brought to the *fastest* rate by
repeating the slower stream's frames (``align="repeat"``: 50 fps -> 100 fps repeats each
frame twice). This keeps every frame of the fast stream and keeps CTC feasible for fast
speech, which a 12.5 fps stream alone may not be. ``align="pool"`` instead average-pools the
faster streams down to the slowest rate (cheaper; a partial last window is dropped). Rates must
be integer multiples of each other. After alignment the frame counts must agree within one
frame of the slowest stream (different conv/window edge rules), then all are trimmed to the
shortest.

Memory: a cache stream is loaded into RAM (``FeatureCache.load_split``, one sequential pass)
when the train+dev bytes of the selected layers (``FeatureCache.nbytes_split``) are at most
half of ``MemAvailable`` in ``/proc/meminfo`` (``os.sysconf`` where there is no /proc); the
other half is headroom for padded float32 batches, the head and the OS page cache. Otherwise
batches are streamed with ``read_many`` and a one-batch read-ahead thread.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from phonecli.cache.int8 import Int8Features
from phonecli.layers import PROBE, LayerSelection, resolve
from phonecli.errors import FeatureSourceError  # noqa: F401  (re-exported)

RAM_FRACTION = 0.5

#: What a stream yields per utterance: a float16/float32 array or int8 values + scales, ``(layers, frames, dim)``.
Features = np.ndarray | Int8Features


def as_float32(x: Features) -> np.ndarray:
    """float32 ``(layers, frames, dim)`` of either kind (dequantises int8 on the CPU)."""
    return x.dequantize() if isinstance(x, Int8Features) else x.astype(np.float32, copy=False)


def features_nbytes(batch: list[list[Features]]) -> int:
    """Bytes of one minibatch as ``FeatureSource.read_many`` yields it (int8: values + scales)."""
    return sum(int(x.nbytes) for per_utt in batch for x in per_utt)


def available_memory() -> int:
    """Bytes the kernel reports as available (``MemAvailable``), or free physical pages otherwise."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))


def select_stream_layers(spec, stored: list[int], source: str) -> LayerSelection:
    """A probe ``--layers`` spec (None: ``last``) against the layers a stream stores (see :mod:`phonecli.layers`)."""
    return resolve("last" if spec is None else spec, stored, PROBE, source=source)


class Stream(ABC):
    """One encoder's features: the selected ``layers`` of a cache or of an in-memory dict.

    Subclasses set ``name``, ``layers`` (tuple of hidden-state indices), ``weighted``, ``dim``,
    ``frame_rate`` (frames/s), ``corpus_id`` and implement the readers.
    """

    name: str
    selection: LayerSelection
    dim: int
    frame_rate: float
    corpus_id: str

    @property
    def layers(self) -> tuple[int, ...]:
        return self.selection.layers

    @abstractmethod
    def utterance_ids(self, split: str) -> list[str]:
        """Utterance ids of ``split`` in manifest order."""

    @abstractmethod
    def num_frames(self, utt_id: str) -> int:
        """Frames of one utterance at ``frame_rate``."""

    @abstractmethod
    def read_many(self, utt_ids: list[str]) -> list[Features]:
        """``(len(layers), frames, dim)`` per utterance: float16/float32, or int8 + scales."""

    def nbytes(self, split: str) -> int:
        return 0

    def preload(self, splits: list[str]) -> None:
        """Bring ``splits`` into RAM if the stream is not already in RAM (no-op by default)."""

    def unload(self) -> None:
        """Drop preloaded splits (no-op by default)."""

    @property
    def in_ram(self) -> bool:
        return True

    @abstractmethod
    def describe(self) -> dict:
        """The run.json ``sources`` entry."""


class ArrayStream(Stream):
    """Features already in RAM: ``{utt_id: (stored_layers, frames, dim)}`` plus ``{utt_id: split}``.

    ``stored_layers`` names the hidden-state index of each first-axis entry (default 0..L-1).
    """

    def __init__(self, features: dict[str, np.ndarray], splits: dict[str, str], *, frame_rate: float,
                 corpus_id: str, stored_layers: list[int] | None = None, layers=None, name: str = "memory",
                 fingerprint: str = "in-memory"):
        if not features:
            raise FeatureSourceError(f"{name}: no features given")
        first = next(iter(features.values()))
        if first.ndim != 3:
            raise FeatureSourceError(f"{name}: features must be (layers, frames, dim) arrays, got shape {first.shape}")
        self.stored_layers = list(stored_layers) if stored_layers is not None else list(range(first.shape[0]))
        self.selection = select_stream_layers(layers, self.stored_layers, name)
        self._rows = [self.stored_layers.index(x) for x in self.selection.layers]
        self.name, self.frame_rate, self.corpus_id, self.fingerprint = name, float(frame_rate), corpus_id, fingerprint
        self.dim = int(first.shape[2])
        self._feats = features
        self._splits = splits
        for u in features:
            if u not in splits:
                raise FeatureSourceError(f"{name}: utterance {u} has features but no split")

    def utterance_ids(self, split: str) -> list[str]:
        return sorted(u for u in self._feats if self._splits[u] == split)

    def num_frames(self, utt_id: str) -> int:
        return int(self._feats[utt_id].shape[1])

    def read_many(self, utt_ids: list[str]) -> list[np.ndarray]:
        return [self._feats[u][self._rows] for u in utt_ids]

    def nbytes(self, split: str) -> int:
        return sum(self._feats[u][0].nbytes * len(self._rows) for u in self.utterance_ids(split))

    def describe(self) -> dict:
        return {"cache": None, "name": self.name, "fingerprint": self.fingerprint, "model": self.name,
                "corpus_id": self.corpus_id, "layers": list(self.layers), "weighted": self.selection.weighted,
                "frame_rate": self.frame_rate, "dim": self.dim}


class CacheStream(Stream):
    """The selected layers of a :class:`phonecli.cache.FeatureCache` (path, fsspec URL or open cache)."""

    def __init__(self, cache, layers=None, *, memory: str = "auto"):
        from phonecli.cache import FeatureCache

        if not hasattr(cache, "read_many"):
            cache = FeatureCache.open(cache)
        self.cache = cache
        self.name = str(cache.path)
        if not cache.is_complete:
            raise FeatureSourceError(
                f"{cache.path}: the cache is incomplete; re-run the same `phonecli extract` command to finish it"
            )
        self.selection = select_stream_layers(layers, list(cache.layers), self.name)
        self.dim, self.frame_rate, self.corpus_id = int(cache.dim), float(cache.frame_rate), cache.corpus_id
        if memory not in ("auto", "ram", "stream"):
            raise FeatureSourceError(f"memory={memory!r}: use auto, ram or stream")
        self.memory = memory
        self._ram: dict[str, np.ndarray] = {}
        self._ram_splits: set[str] = set()

    def utterance_ids(self, split: str) -> list[str]:
        return list(self.cache.utterance_ids(split))

    def num_frames(self, utt_id: str) -> int:
        return int(self.cache.num_frames(utt_id))

    def nbytes(self, split: str) -> int:
        return int(self.cache.nbytes_split(split, list(self.layers), dequantize=False))

    def preload(self, splits: list[str]) -> None:
        todo = [s for s in splits if s not in self._ram_splits]
        if not todo or self.memory == "stream":
            return
        need = sum(self.nbytes(s) for s in todo)
        if self.memory == "auto" and need > RAM_FRACTION * available_memory():
            return
        for s in todo:
            # int8 stays int8 in RAM too (4x less than dequantised float32)
            self._ram.update(self.cache.load_split(s, list(self.layers), dequantize=False))
            self._ram_splits.add(s)

    def unload(self) -> None:
        self._ram.clear()
        self._ram_splits.clear()

    @property
    def in_ram(self) -> bool:
        return bool(self._ram_splits)

    def read_many(self, utt_ids: list[str]) -> list[Features]:
        missing = [u for u in utt_ids if u not in self._ram]
        read = self.cache.read_many_int8 if self.cache.dtype == "int8" else self.cache.read_many
        got = dict(zip(missing, read(missing, list(self.layers)))) if missing else {}
        return [self._ram[u] if u in self._ram else got[u] for u in utt_ids]

    def describe(self) -> dict:
        md = self.cache.metadata
        return {"cache": self.name, "fingerprint": md.get("weights_fingerprint"), "model": md.get("model"),
                "model_id": md.get("model_id"), "revision": md.get("revision"), "corpus_id": self.corpus_id,
                "layers": list(self.layers), "weighted": self.selection.weighted, "frame_rate": self.frame_rate,
                "dim": self.dim, "dtype": md.get("dtype")}


class FeatureSource:
    """1+ streams aligned to one frame rate; what the probe training loop reads.

    ``read_many(utt_ids)`` -> per utterance a list over streams of ``(layers_s, frames, dim_s)``
    features sharing ``frames`` (= ``num_frames(utt_id)``): arrays as stored, or
    :class:`Int8Features` for int8 caches (repeat-alignment and trimming keep them int8; pooling
    dequantises, since an average of int8 values is not int8).
    """

    def __init__(self, streams: list[Stream], *, align: str = "repeat"):
        if not streams:
            raise FeatureSourceError("no --features given; pass at least one cache")
        if align not in ("repeat", "pool"):
            raise FeatureSourceError(f"align={align!r}: use repeat or pool")
        self.streams, self.align = streams, align
        ids = {s.corpus_id for s in streams}
        if len(ids) > 1:
            raise FeatureSourceError(
                "caches from different corpora (corpus_id " + " vs ".join(f"{s.corpus_id} in {s.name}" for s in streams)
                + "); extract every cache from the same `phonecli data prepare` output"
            )
        self.corpus_id = streams[0].corpus_id
        rates = [s.frame_rate for s in streams]
        self.frame_rate = max(rates) if align == "repeat" else min(rates)
        self._factors = []
        for s in streams:
            ratio = (self.frame_rate / s.frame_rate) if align == "repeat" else (s.frame_rate / self.frame_rate)
            if abs(ratio - round(ratio)) > 1e-6:
                raise FeatureSourceError(
                    f"{s.name}: frame rate {s.frame_rate:g} fps is not an integer fraction of {self.frame_rate:g} fps; "
                    "fuse caches whose rates are multiples of each other (100/50/25/12.5)"
                )
            self._factors.append(int(round(ratio)))
        self._tolerance = max(self._factors) if align == "repeat" else 1
        self._frames: dict[str, int] = {}

    # -- identity ------------------------------------------------------------------------
    @property
    def shapes(self) -> list[tuple[int, int]]:
        """``(num_layers, dim)`` per stream."""
        return [(len(s.layers), s.dim) for s in self.streams]

    def describe(self) -> list[dict]:
        return [s.describe() for s in self.streams]

    # -- utterances ----------------------------------------------------------------------
    def utterance_ids(self, split: str) -> list[str]:
        first = self.streams[0].utterance_ids(split)
        for s in self.streams[1:]:
            other = s.utterance_ids(split)
            if set(other) != set(first):
                a, b = set(first) - set(other), set(other) - set(first)
                ex = sorted(a or b)[0]
                where = self.streams[0].name if a else s.name
                raise FeatureSourceError(
                    f"caches hold different {split} utterances ({len(a)} only in {self.streams[0].name}, {len(b)} only "
                    f"in {s.name}, e.g. {ex} only in {where}); re-extract both from the same manifest"
                )
        return first

    def _aligned_len(self, i: int, frames: int) -> int:
        k = self._factors[i]
        return frames * k if self.align == "repeat" else frames // k

    def num_frames(self, utt_id: str) -> int:
        """Aligned frame count (after trimming to the shortest stream)."""
        n = self._frames.get(utt_id)
        if n is None:
            lens = [self._aligned_len(i, s.num_frames(utt_id)) for i, s in enumerate(self.streams)]
            if max(lens) - min(lens) > self._tolerance:
                detail = ", ".join(f"{s.name}: {s.num_frames(utt_id)} @ {s.frame_rate:g} fps"
                                   for s in self.streams)
                raise FeatureSourceError(
                    f"utterance {utt_id}: frame counts disagree after alignment to {self.frame_rate:g} fps "
                    f"({detail}); these caches were not extracted from the same audio"
                )
            n = min(lens)
            self._frames[utt_id] = n
        return n

    # -- reading -------------------------------------------------------------------------
    def preload(self, splits: list[str]) -> None:
        """Load ``splits`` into RAM for every stream where they fit (each stream decides)."""
        if len(self.streams) > 1:
            # fused streams share the budget: decide on the total, then force or skip together
            need = sum(s.nbytes(sp) for s in self.streams for sp in splits)
            if need > RAM_FRACTION * available_memory() and any(getattr(s, "memory", "auto") == "auto"
                                                                  for s in self.streams):
                return
        for s in self.streams:
            s.preload(splits)

    def unload(self) -> None:
        for s in self.streams:
            s.unload()

    @property
    def in_ram(self) -> bool:
        return all(s.in_ram for s in self.streams)

    def read_many(self, utt_ids: list[str]) -> list[list[Features]]:
        per_stream = [s.read_many(utt_ids) for s in self.streams]
        out = []
        for j, u in enumerate(utt_ids):
            n = self.num_frames(u)
            arrays = []
            for i, arrs in enumerate(per_stream):
                x, k = arrs[j], self._factors[i]
                if k > 1 and self.align == "pool":
                    x = as_float32(x)
                    t = (x.shape[1] // k) * k
                    x = x[:, :t].reshape(x.shape[0], t // k, k, x.shape[2]).mean(axis=2)
                if isinstance(x, Int8Features):
                    values = np.repeat(x.values, k, axis=1) if k > 1 else x.values
                    arrays.append(x.with_values(values[:, :n]))
                else:
                    arrays.append((np.repeat(x, k, axis=1) if k > 1 and self.align == "repeat" else x)[:, :n])
            out.append(arrays)
        return out

    def iter_batches(self, batches: Iterable[list[str]]) -> Iterator[tuple[list[str], list[list[np.ndarray]]]]:
        """Yield ``(utt_ids, read_many(utt_ids))`` with the next batch read in a background thread.

        The read-ahead hides cache I/O behind the previous step when streaming; reading is
        numpy/zarr work that releases the GIL.
        """
        batches = list(batches)
        if not batches:
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            fut: Future = pool.submit(self.read_many, batches[0])
            for i, b in enumerate(batches):
                data = fut.result()
                if i + 1 < len(batches):
                    fut = pool.submit(self.read_many, batches[i + 1])
                yield b, data


def open_source(features, layers=None, *, default=None, align: str = "repeat",
                memory: str = "auto") -> FeatureSource:
    """``features``: a cache path/URL/FeatureCache, a :class:`Stream`, a :class:`FeatureSource`, or a list.

    ``layers``: one spec for every stream, or a list with one spec per stream; ``default``: the spec of
    caches when ``layers`` is None. A Stream or FeatureSource has its layers chosen when it is built, so
    an explicit ``layers`` for one is refused rather than ignored.
    """
    if isinstance(features, FeatureSource):
        if layers is not None:
            raise FeatureSourceError("--layers given for a FeatureSource, whose layers were chosen when it was "
                                     "built; choose them there")
        return features
    items = list(features) if isinstance(features, (list, tuple)) else [features]
    if isinstance(layers, (list, tuple)) and layers and not all(isinstance(x, int) for x in layers):
        specs = list(layers)
        if len(specs) == 1:
            specs = specs * len(items)
        if len(specs) != len(items):
            raise FeatureSourceError(
                f"{len(specs)} --layers values for {len(items)} --features; give one (for all) or one per cache"
            )
    else:
        specs = [layers] * len(items)
    streams = []
    for item, spec in zip(items, specs):
        if isinstance(item, Stream):
            if spec is not None:
                raise FeatureSourceError(f"{item.name}: --layers {spec} given for an in-memory stream, whose layers "
                                         "are chosen when it is built (ArrayStream(..., layers=...))")
            streams.append(item)
            continue
        spec = default if spec is None else spec
        if isinstance(item, (str, Path)) and "://" not in str(item) and not Path(item).exists():
            raise FeatureSourceError(f"{item}: no such cache; create it with `phonecli extract` or fix the path")
        streams.append(CacheStream(item, spec, memory=memory))
    return FeatureSource(streams, align=align)


def length_batches(frame_counts: list[int], batch_frames: int, *, shuffle: bool, seed: int) -> list[list[int]]:
    """Indices grouped into batches of similar length whose *padded* size ``max_len * n`` is <= ``batch_frames``.

    Sorted by length (random tie-breaking when ``shuffle``), cut greedily, then the batch order
    is shuffled. An utterance longer than ``batch_frames`` gets a batch of its own. Deterministic
    for a ``seed``. (The cache's LengthBucketSampler works on one cache; this one serves any
    FeatureSource, including fused and in-memory ones.)
    """
    rng = np.random.default_rng(seed)
    n = len(frame_counts)
    tie = rng.random(n) if shuffle else np.arange(n)
    order = np.lexsort((tie, np.asarray(frame_counts)))
    batches, cur, cur_max = [], [], 0
    for i in order:
        t = int(frame_counts[i])
        if cur and max(cur_max, t) * (len(cur) + 1) > batch_frames:
            batches.append(cur)
            cur, cur_max = [], 0
        cur.append(int(i))
        cur_max = max(cur_max, t)
    if cur:
        batches.append(cur)
    if shuffle:
        rng.shuffle(batches)
    return batches
