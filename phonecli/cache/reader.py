"""Reading a feature cache: memmap fast path for local stores, ranged reads for fsspec URLs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phonecli.cache.int8 import Int8Features
from phonecli.cache.plan import Part
from phonecli.cache.store import (
    FORMAT, VERSION, CacheError, check_layer_convention, data_key, local_file, normalize_path, open_store, part_name,
    read_attrs, scales_key, split_rank, store_get_ranges, store_list_dir,
)

# The only chunk layout we write: one chunk, key "c/0/0/0", plain little-endian bytes.
CHUNK = "c/0/0/0"


def index_from_markers(markers: list[dict]) -> tuple[dict, list[dict]]:
    """Columnar index (utt_ids, splits, parts, offsets, frames, rows) + skipped, in plan order."""
    index = {"utt_ids": [], "splits": [], "parts": [], "offsets": [], "frames": [], "rows": []}
    skipped: list[dict] = []
    for m in markers:
        n = len(m["utt_ids"])
        index["utt_ids"] += m["utt_ids"]
        index["splits"] += m["splits"]
        index["parts"] += [m["index"]] * n
        index["offsets"] += m["offsets"]
        index["frames"] += m["frames"]
        index["rows"] += list(range(n))
        skipped += m.get("skipped", [])
    return index, skipped


#: at least this many threads copy a minibatch out of a local cache (see FeatureCache._io_pool)
IO_WORKERS = 2


@dataclass(frozen=True)
class _Loc:
    part: int
    offset: int
    frames: int
    split: str
    row: int       # position of the utterance inside its part (int8 scales row)


class FeatureCache:
    """A read-only view of one cache. Open with :meth:`open`.

    Attributes: ``path`` (str), ``metadata`` (root attributes, without the plan), ``layers``
    (model hidden-state indices stored, in order), ``frame_rate`` (frames/s), ``dim``, ``dtype``
    (``"float16"|"float32"|"int8"``), ``corpus_id``, ``plan`` (list of :class:`Part`).
    Reads return ``(len(layers), frames, dim)`` arrays: float16/float32 as stored, int8
    dequantized to float32; :meth:`read_many_int8` and ``load_split(..., dequantize=False)`` hand
    an int8 cache's values on undequantised, with their scales (:class:`Int8Features`).
    Thread-safe for reads.
    """

    def __init__(self, path: str, store, attrs: dict, markers: list[dict], index: dict | None,
                 verify: bool = True):
        self.path = path
        self.store = store
        self.metadata = {k: v for k, v in attrs.items() if k != "plan"}
        self.plan = [Part.from_dict(d) for d in attrs.get("plan", [])]
        self.layers: list[int] = [int(x) for x in attrs["layers"]]
        self.frame_rate = float(attrs["frame_rate"])
        self.dim = int(attrs["dim"])
        self.dtype: str = attrs["dtype"]
        self.corpus_id: str = attrs["corpus_id"]
        self._np_dtype = np.dtype(self.dtype).newbyteorder("<")
        self._markers = {int(m["index"]): m for m in markers}
        if index is None:
            index, skipped = index_from_markers([self._markers[i] for i in sorted(self._markers)])
        else:
            skipped = list(attrs.get("skipped", []))
        self._skipped = skipped
        self._loc: dict[str, _Loc] = {}
        for u, s, p, o, f, r in zip(index["utt_ids"], index["splits"], index["parts"],
                                    index["offsets"], index["frames"], index["rows"]):
            self._loc[u] = _Loc(int(p), int(o), int(f), s, int(r))
        self._order = sorted(self._loc, key=lambda u: (split_rank(self._loc[u].split), u))
        self._shapes = {i: tuple(m["shape"]) for i, m in self._markers.items()}
        self._mmaps: dict[int, np.ndarray] = {}
        self._scales: dict[int, np.ndarray] = {}
        self._local = local_file(store, "") is not None
        self._verify_reads = verify       # crc32 + finite check of each part, once per process
        self._checked: set[int] = set()   # parts this instance already passed through the check
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    # ------------------------------------------------------------------ opening
    def __getstate__(self) -> dict:
        # DataLoader workers get a copy: drop memmaps/scales (re-opened lazily), never pickle data.
        state = dict(self.__dict__)
        state["_mmaps"], state["_scales"], state["_checked"], state["_pool"] = {}, {}, set(), None
        return state

    @classmethod
    def open(cls, path: str | Path, require_complete: bool = False, verify: bool = True) -> FeatureCache:
        """Open a cache at a local path or fsspec URL (``file://``, ``memory://``, ``s3://`` ...).

        An unfinished cache opens with the utterances of its completed parts (``is_complete``
        False) unless ``require_complete=True``, which raises :class:`CacheError` instead.
        ``verify`` (default): the first read of each part in this process checks its crc32 and
        that its values are finite (:mod:`phonecli.cache.checksum`); ``False`` is for benchmarks.
        """
        p = normalize_path(path)
        if not p or (not ("://" in p) and not Path(p).exists()):
            raise CacheError(f"no cache at {p}: run `phonecli extract` first or check the path")
        store = open_store(p, read_only=True)
        attrs = read_attrs(store, "")
        if attrs is None:
            raise CacheError(f"{p} is not a phonecli cache (no readable zarr.json): run `phonecli extract` "
                             "first or check the path")
        if attrs.get("format") != FORMAT:
            raise CacheError(f"{p} is not a phonecli cache (its zarr.json lacks format={FORMAT!r})")
        if int(attrs.get("version", 0)) > VERSION:
            raise CacheError(f"cache {p} has format version {attrs['version']}; this phonecli reads "
                             f"<= {VERSION}: upgrade phonecli")
        check_layer_convention(attrs, p)
        index = read_attrs(store, "index") if attrs.get("complete") else None
        names = set(store_list_dir(store, "done"))
        markers = []
        for name in sorted(names):
            m = read_attrs(store, f"done/{name}")
            if m is not None and "index" in m:
                markers.append(m)
        cache = cls(p, store, attrs, markers, index, verify=verify)
        if require_complete and not cache.is_complete:
            raise CacheError(f"cache {p} is incomplete ({len(markers)}/{len(cache.plan)} parts written): "
                             "re-run the same `phonecli extract` command to finish it")
        return cache

    # ------------------------------------------------------------------ index
    @property
    def is_complete(self) -> bool:
        """True once ``finalize`` ran (every planned part written and indexed)."""
        return bool(self.metadata.get("complete"))

    @property
    def skipped(self) -> list[dict]:
        """Utterances the extraction skipped: ``[{"utt_id", "reason"}]``."""
        return list(self._skipped)

    @property
    def complete_parts(self) -> list[int]:
        return sorted(self._markers)

    def utterance_ids(self, split: str | None = None) -> list[str]:
        """Stored utterance ids ordered by split (train, dev, test, others) then utt id."""
        if split is None:
            return list(self._order)
        return [u for u in self._order if self._loc[u].split == split]

    def splits(self) -> list[str]:
        return sorted({loc.split for loc in self._loc.values()}, key=split_rank)

    def _where(self, utt_id: str) -> _Loc:
        try:
            return self._loc[utt_id]
        except KeyError:
            why = next((s["reason"] for s in self._skipped if s["utt_id"] == utt_id), None)
            if why is not None:
                raise CacheError(f"utterance {utt_id} was skipped during extraction ({why})") from None
            raise CacheError(f"utterance {utt_id} is not in cache {self.path} (built for corpus "
                             f"{self.corpus_id}): check --data matches the cache") from None

    def split_of(self, utt_id: str) -> str:
        return self._where(utt_id).split

    def num_frames(self, utt_id: str) -> int:
        return self._where(utt_id).frames

    def __len__(self) -> int:
        return len(self._loc)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._loc

    def __repr__(self) -> str:
        return (f"FeatureCache({self.path!r}, model={self.metadata.get('model')!r}, "
                f"utterances={len(self)}, layers={len(self.layers)}, dim={self.dim}, dtype={self.dtype})")

    def _positions(self, layers: list[int] | None) -> list[int]:
        if layers is None:
            return list(range(len(self.layers)))
        if len(layers) == 0:
            raise CacheError(f"empty layer list for cache {self.path}: pass None for all layers or some of {self.layers}")
        pos = {l: i for i, l in enumerate(self.layers)}
        out = []
        for l in layers:
            if int(l) not in pos:
                raise CacheError(f"layer {l} is not stored in cache {self.path} (stored: {self.layers})")
            out.append(pos[int(l)])
        return out

    # ------------------------------------------------------------------ raw access
    def _mmap(self, part: int, verify: bool = True) -> np.ndarray:
        """The part's chunk file as a read-only ``(layers, part_frames, dim)`` memmap (local stores),
        verified on first use (``verify=False``: the checker's own access)."""
        mm = self._mmaps.get(part)
        if mm is None:
            path = local_file(self.store, f"{data_key(part)}/{CHUNK}")
            shape = self._shapes[part]
            expected = int(np.prod(shape)) * self._np_dtype.itemsize
            size = path.stat().st_size if path.exists() else -1
            if size != expected:
                raise CacheError(f"cache {self.path}: chunk of part {part_name(part)} is "
                                 f"{'missing' if size < 0 else f'{size} bytes, expected {expected}'}: "
                                 "run `phonecli cache verify` and re-run the extraction")
            mm = np.memmap(path, dtype=self._np_dtype, mode="r", shape=shape)
            self._mmaps[part] = mm
        if verify:
            self._verify_part(part)
        return mm

    def _verify_part(self, part: int) -> None:
        """crc32 + finite values of ``part``, once per process (see :mod:`phonecli.cache.checksum`)."""
        if self._verify_reads and part not in self._checked:
            from phonecli.cache.checksum import VERIFIED

            VERIFIED.check(self, part)
            self._checked.add(part)

    def _verify_parts(self, parts: set[int]) -> None:
        """Check the not-yet-checked ``parts`` of one request side by side (zlib releases the GIL)."""
        todo = sorted(p for p in parts if p not in self._checked) if self._verify_reads else []
        if len(todo) > 1:
            from phonecli.threads import current

            with ThreadPoolExecutor(max_workers=min(len(todo), current().threads)) as pool:
                list(pool.map(self._verify_part, todo))
        for p in todo:
            self._verify_part(p)

    def _part_scales(self, part: int) -> np.ndarray:
        """int8 scales of ``part``: float32 ``(part_utterances, layers, dim)``, read once per instance.

        Local stores read the one uncompressed little-endian chunk file directly (what zarr would
        decode, without its per-array open: ~5 ms a part, a tenth of a cold epoch's int8 read time on
        the benchmark's cache); remote stores go through zarr."""
        s = self._scales.get(part)
        if s is None:
            if self._local:
                shape = (len(self._markers[part]["utt_ids"]), self._shapes[part][0], self.dim)
                path = local_file(self.store, f"{scales_key(part)}/{CHUNK}")
                s = np.fromfile(path, dtype="<f4") if path.exists() else np.empty(0, np.float32)
                if s.size != int(np.prod(shape)):
                    raise CacheError(f"cache {self.path}: int8 scales of part {part_name(part)} hold {s.size} values, "
                                     f"expected {int(np.prod(shape))}: run `phonecli cache verify` and re-run the "
                                     "extraction")
                s = s.reshape(shape)
            else:
                import zarr

                s = zarr.open_array(self.store, path=scales_key(part), mode="r")[...]
            self._scales[part] = s
        return s

    def _fetch(self, requests: list[tuple[int, list[int], int, int]]) -> list[np.ndarray]:
        """``(part, layer positions, frame start, frame end)`` -> arrays ``(len(pos), end-start, dim)``
        in the stored dtype. Local: memmap copies. Remote: one batched ranged read for all."""
        self._verify_parts({r[0] for r in requests})
        if self._local:
            if len(requests) == 1:
                return [self._copy_local(requests[0])]
            return list(self._io_pool().map(self._copy_local, requests))
        # Remote/fsspec: layer-major layout -> each (layer, frame range) is one contiguous byte range.
        ranges = []
        for part, pos, a, b in requests:
            _, t_part, d = self._shapes[part]
            row = d * self._np_dtype.itemsize
            key = f"{data_key(part)}/{CHUNK}"
            for p in pos:
                start = (p * t_part + a) * row
                ranges.append((key, start, start + (b - a) * row))
        blobs = store_get_ranges(self.store, ranges) if ranges else []
        out, k = [], 0
        for part, pos, a, b in requests:
            d = self._shapes[part][2]
            arr = np.empty((len(pos), b - a, d), dtype=self._np_dtype)
            for j in range(len(pos)):
                arr[j] = np.frombuffer(blobs[k], dtype=self._np_dtype).reshape(b - a, d)
                k += 1
            out.append(arr)
        return out

    def _copy_local(self, request: tuple[int, list[int], int, int]) -> np.ndarray:
        part, pos, a, b = request
        mm = self._mmap(part)
        if pos == list(range(pos[0], pos[0] + len(pos))):
            return np.array(mm[pos[0]:pos[0] + len(pos), a:b])   # slice: no index array
        return mm[pos, a:b].view(np.ndarray)                     # fancy index copies

    def _io_pool(self) -> ThreadPoolExecutor:
        """Threads that copy a minibatch's utterances out of the memmaps side by side (numpy releases
        the GIL while copying, so page faults of a cold cache overlap). Measured with
        bench/cache_read.py (1 thread, 2-core VM): float16 minibatches 1.16x faster from disk and
        1.6x from the page cache, int8 1.10x and 1.6x; 4 workers were slower than 2 on 2 cores.
        Re-created after a fork (a DataLoader worker gets the threads of no pool)."""
        import os

        if self._pool is None or self._pool_pid != os.getpid():
            from phonecli.threads import current

            self._pool, self._pool_pid = ThreadPoolExecutor(max(IO_WORKERS, current().threads)), os.getpid()
        return self._pool

    def _finish(self, raw: np.ndarray, loc: _Loc, pos: list[int]) -> np.ndarray:
        if self.dtype == "int8":
            s = self._part_scales(loc.part)[loc.row][pos]                   # (len(pos), D)
            return np.multiply(raw, s[:, None, :], dtype=np.float32)        # no float32 copy of raw
        return raw if raw.dtype.isnative else raw.astype(raw.dtype.newbyteorder("="))

    # ------------------------------------------------------------------ public reads
    def read(self, utt_id: str, layers: list[int] | None = None) -> np.ndarray:
        """``(len(layers), frames, dim)`` for one utterance (all stored layers if ``layers`` is None)."""
        return self.read_many([utt_id], layers)[0]

    def read_many(self, utt_ids: list[str], layers: list[int] | None = None) -> list[np.ndarray]:
        """Several utterances at once (a minibatch): one batched request on remote stores."""
        pos = self._positions(layers)
        locs = [self._where(u) for u in utt_ids]
        raws = self._fetch([(l.part, pos, l.offset, l.offset + l.frames) for l in locs])
        return [self._finish(r, l, pos) for r, l in zip(raws, locs)]

    def read_many_int8(self, utt_ids: list[str], layers: list[int] | None = None) -> list[Int8Features]:
        """int8 caches: the stored int8 values ``(len(layers), frames, dim)`` and their float32 scales
        ``(len(layers), dim)`` per utterance, not dequantised (1 byte per value instead of 4).

        ``read_many_int8(ids)[i].dequantize()`` equals ``read_many(ids)[i]`` bit for bit.
        """
        if self.dtype != "int8":
            raise CacheError(f"cache {self.path} stores {self.dtype}, not int8: use read_many")
        pos = self._positions(layers)
        locs = [self._where(u) for u in utt_ids]
        raws = self._fetch([(l.part, pos, l.offset, l.offset + l.frames) for l in locs])
        return [Int8Features(r, self._part_scales(l.part)[l.row][pos]) for r, l in zip(raws, locs)]

    def nbytes_split(self, split: str, layers: list[int] | None = None, dequantize: bool = True) -> int:
        """Bytes of RAM :meth:`load_split` needs (int8: float32 values, or int8 values + scales
        when ``dequantize=False``)."""
        n = len(self._positions(layers))
        ids = self.utterance_ids(split)
        frames = sum(self._loc[u].frames for u in ids)
        if self.dtype == "int8" and not dequantize:
            return frames * n * self.dim + len(ids) * n * self.dim * 4
        item = 4 if self.dtype == "int8" else self._np_dtype.itemsize
        return frames * n * self.dim * item

    def load_split(self, split: str, layers: list[int] | None = None,
                   dequantize: bool = True) -> dict[str, np.ndarray | Int8Features]:
        """Every utterance of ``split`` in one sequential pass over the parts (for in-RAM training).

        Returns utt_id -> ``(len(layers), frames, dim)`` in :meth:`utterance_ids` order (int8
        caches: float32, or :class:`Int8Features` when ``dequantize=False``). Per part and layer
        it reads the one frame span covering the split's utterances, then slices it.
        """
        pos = self._positions(layers)
        ids = self.utterance_ids(split)
        by_part: dict[int, list[str]] = {}
        for u in ids:
            by_part.setdefault(self._loc[u].part, []).append(u)
        raw_int8 = self.dtype == "int8" and not dequantize
        out_dtype = np.float32 if self.dtype == "int8" and dequantize else self._np_dtype.newbyteorder("=")
        out = {u: np.empty((len(pos), self._loc[u].frames, self.dim), dtype=out_dtype) for u in ids}
        for part in sorted(by_part):
            us = sorted(by_part[part], key=lambda u: self._loc[u].offset)
            a = self._loc[us[0]].offset
            b = max(self._loc[u].offset + self._loc[u].frames for u in us)
            for j, p in enumerate(pos):
                # local: a memmap view (no intermediate copy); remote: one ranged read per layer
                span = self._mmap(part)[p, a:b] if self._local else self._fetch([(part, [p], a, b)])[0][0]
                for u in us:
                    loc = self._loc[u]
                    src = span[loc.offset - a: loc.offset - a + loc.frames]
                    if self.dtype == "int8" and dequantize:
                        np.multiply(src, self._part_scales(part)[loc.row, p], out=out[u][j], dtype=np.float32)
                    else:
                        out[u][j] = src
                del span
        if raw_int8:
            return {u: Int8Features(out[u], self._part_scales(self._loc[u].part)[self._loc[u].row][pos]) for u in ids}
        return out

    def read_part_raw(self, part: int) -> np.ndarray | None:
        """The whole stored ``(layers, part_frames, dim)`` array of a complete part (verify/export)."""
        shape = self._shapes[part]
        if shape[1] == 0:
            return None
        (arr,) = self._fetch([(part, list(range(shape[0])), 0, shape[1])])
        return arr
