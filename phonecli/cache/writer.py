"""Writing a feature cache: parts written whole by one worker, marked complete last, resumable.

Typical use by the extraction runner (every torchrun rank runs the same code)::

    plan = plan_parts([(u.utt_id, u.split, est_frames(u)) for u in utts], bytes_per_frame)
    writer = CacheWriter.create_or_open(path, metadata, plan)
    for part in writer.pending(rank, world_size):
        feats = {utt_id: float32 (layers, frames, dim)}   # encoder output, layers already selected
        writer.write_part(part, feats, skipped=[{"utt_id": ..., "reason": ...}])
    # after a barrier, on one rank:
    cache = writer.finalize()
"""

from __future__ import annotations

import datetime as _dt
import zlib
from pathlib import Path

import numpy as np

from phonecli.cache.plan import Part
from phonecli.cache.store import (
    DTYPES, FLOAT16_MAX, FORMAT, IDENTITY_KEYS, REQUIRED_KEYS, VERSION, CacheError,
    CacheMismatchError, CacheOverflowError, data_key, done_key, jsonable, normalize_path,
    open_store, part_name, read_attrs, scales_key, store_delete, store_delete_dir, store_list_dir,
)

INT8_MAX = 127


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per (layer, channel) of one utterance.

    ``x``: float32 ``(layers, frames, dim)`` -> (int8 ``(layers, frames, dim)``, float32 scales
    ``(layers, dim)``) with ``x ~= q * scales[:, None, :]`` and ``|x - q*s| <= s/2`` where
    ``s = max_frames |x| / 127``. Per-utterance scales keep quiet utterances precise (a loud one
    elsewhere in the part cannot coarsen them) and make values independent of part grouping.
    """
    scales = (np.abs(x).max(axis=1) / INT8_MAX).astype(np.float32)           # (L, D)
    safe = np.where(scales > 0, scales, np.float32(1.0))
    q = np.clip(np.rint(x / safe[:, None, :]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scales


def _crc32(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1)) & 0xFFFFFFFF


def _create_single_chunk_array(store, key: str, data: np.ndarray):
    """One uncompressed chunk holding the whole array: plain little-endian C-order bytes on disk."""
    import zarr
    from zarr.codecs import BytesCodec

    arr = zarr.create_array(
        store=store, name=key, shape=data.shape, chunks=data.shape, dtype=data.dtype,
        compressors=None, filters=None, serializer=BytesCodec(endian="little"), fill_value=0,
        zarr_format=3, overwrite=True, config={"write_empty_chunks": True},
    )
    arr[...] = data
    return arr


class CacheWriter:
    """Writes one cache. Create with :meth:`create_or_open`."""

    def __init__(self, path: str, store, metadata: dict, plan: list[Part]):
        self.path = path
        self.store = store
        self.metadata = metadata
        self.plan = plan
        self._by_index = {p.index: p for p in plan}
        self.layers: list[int] = [int(x) for x in metadata["layers"]]
        self.dim = int(metadata["dim"])
        self.dtype: str = metadata["dtype"]

    # ------------------------------------------------------------------ opening
    @classmethod
    def create_or_open(cls, path: str | Path, metadata: dict, plan: list[Part]) -> CacheWriter:
        """New store: writes metadata + plan. Existing store: checks it was built from the same
        model, corpus, settings and plan, else raises :class:`CacheMismatchError`."""
        import zarr
        from zarr.errors import ContainsGroupError

        p = normalize_path(path)
        missing = [k for k in REQUIRED_KEYS if k not in metadata]
        if missing:
            raise CacheError(f"cache metadata for {p} lacks {', '.join(missing)} (bug in the caller)")
        if metadata["dtype"] not in DTYPES:
            raise CacheError(f"unsupported cache dtype {metadata['dtype']!r}: use one of {', '.join(DTYPES)}")
        if not plan:
            raise CacheError(f"empty extraction plan for {p}: no utterances to extract")
        indices = [part.index for part in plan]
        if indices != list(range(len(plan))):
            raise CacheError(f"plan part indices must be 0..{len(plan) - 1} in order (use plan_parts)")

        from phonecli import __version__

        from phonecli.encoders.layers import LAYER_CONVENTION

        meta = {"format": FORMAT, "version": VERSION, "phonecli_version": __version__,
                "layer_convention": LAYER_CONVENTION,  # what this phonecli's layer indices mean
                "sample_rate": 16000, "settings": {}, "layer_info": [], "revision": None,
                "weights_fingerprint": None, "model": metadata.get("model_id", "")}
        meta.update(jsonable(metadata))
        meta.update({"format": FORMAT, "version": VERSION, "complete": False})
        meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        plan_json = [part.to_dict() for part in plan]

        store = open_store(p, read_only=False)
        existing = read_attrs(store, "")
        if existing is None:
            if store_list_dir(store, ""):
                raise CacheError(f"{p} exists and is not a phonecli cache: choose another --cache location")
            try:
                zarr.create_group(store, attributes={**meta, "plan": plan_json}, overwrite=False,
                                  zarr_format=3)
            except ContainsGroupError:  # another rank created it first: check it like any existing store
                existing = read_attrs(store, "")
        if existing is not None:
            cls._check_same(p, existing, meta, plan)
            meta = {k: v for k, v in existing.items() if k != "plan"}
        return cls(p, store, meta, plan)

    @staticmethod
    def _check_same(path: str, existing: dict, meta: dict, plan: list[Part]) -> None:
        if existing.get("format") != FORMAT:
            raise CacheError(f"{path} exists and is not a phonecli cache: choose another --cache location")
        if int(existing.get("version", 0)) != VERSION:
            raise CacheMismatchError(
                f"cache {path} has format version {existing.get('version')}, this phonecli writes "
                f"{VERSION}: remove it (`phonecli cache rm {path}`) or use another --cache location")
        for key in IDENTITY_KEYS:
            old, new = existing.get(key), meta.get(key)
            if old != new:
                raise CacheMismatchError(
                    f"cache {path} was built with {key}={old!r}, this run has {key}={new!r}: refusing to "
                    f"mix them; use another --cache location or remove it (`phonecli cache rm {path}`)")
        old_plan = [Part.from_dict(d) for d in existing.get("plan", [])]
        if [q.identity() for q in old_plan] != [q.identity() for q in plan]:
            raise CacheMismatchError(
                f"cache {path} was planned for other utterances or another part grouping "
                f"({len(old_plan)} parts stored, {len(plan)} now): refusing to mix them; use another "
                f"--cache location or remove it (`phonecli cache rm {path}`)")

    # ------------------------------------------------------------------ progress
    def completed(self) -> set[int]:
        """Indices of parts whose completion marker exists and parses."""
        names = {n for n in store_list_dir(self.store, "done")}
        done = set()
        for part in self.plan:
            if part_name(part.index) in names and "index" in (read_attrs(self.store, done_key(part.index)) or {}):
                done.add(part.index)
        return done

    def pending(self, rank: int = 0, world_size: int = 1) -> list[Part]:
        """Incomplete parts assigned to ``rank`` (``part.index % world_size == rank``)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        done = self.completed()
        return [p for p in self.plan if p.index % world_size == rank and p.index not in done]

    # ------------------------------------------------------------------ writing
    def write_part(self, part: Part, features: dict[str, np.ndarray], skipped: list[dict] | None = None) -> None:
        """Convert, write ``part`` whole, then mark it complete (marker written LAST).

        ``features``: utt_id -> float32 ``(len(layers), frames, dim)`` for every utterance of the
        part not listed in ``skipped`` (``[{"utt_id", "reason"}]``). Raises
        :class:`CacheOverflowError` (float16, |x| > 65504) or :class:`CacheError` before
        touching the store, so a failed call leaves no partial data behind that looks complete.
        """
        skipped = list(skipped or [])
        planned = self._by_index.get(part.index)
        if planned is None or planned.identity() != part.identity():
            raise CacheError(f"part {part.index} is not part of the plan of cache {self.path}")
        skip_ids = {s["utt_id"] for s in skipped}
        unknown = (set(features) | skip_ids) - set(part.utt_ids)
        if unknown:
            raise CacheError(f"utterances {sorted(unknown)[:5]} are not in part {part.index} of {self.path}")
        both = set(features) & skip_ids
        if both:
            raise CacheError(f"utterances {sorted(both)[:5]} are both written and skipped in part {part.index}")
        stored = [u for u in part.utt_ids if u not in skip_ids]
        missing = [u for u in stored if u not in features]
        if missing:
            raise CacheError(f"part {part.index} of {self.path}: no features and no skip record for "
                             f"utterance(s) {missing[:5]}")

        L, D = len(self.layers), self.dim
        arrays = []
        for u in stored:
            x = np.asarray(features[u])
            if x.ndim != 3 or x.shape[0] != L or x.shape[2] != D or x.shape[1] < 1:
                raise CacheError(f"utterance {u}: features have shape {x.shape}, the cache stores "
                                 f"({L}, frames>=1, {D}) (layers {self.layers})")
            x = x.astype(np.float32, copy=False)
            self._check_values(u, x)
            arrays.append(x)
        frames = [a.shape[1] for a in arrays]
        offsets = np.concatenate([[0], np.cumsum(frames)])[:-1].astype(int).tolist() if frames else []
        total = int(sum(frames))

        data = scales = None
        if total:
            data = np.empty((L, total, D), dtype=np.dtype(self.dtype))
            if self.dtype == "int8":
                scales = np.empty((len(arrays), L, D), dtype=np.float32)
            for i, (x, off) in enumerate(zip(arrays, offsets)):
                if self.dtype == "int8":
                    data[:, off:off + x.shape[1]], scales[i] = quantize_int8(x)
                else:
                    data[:, off:off + x.shape[1]] = x
        arrays.clear()

        marker = {
            "index": part.index, "utt_ids": stored,
            "splits": [part.splits[part.utt_ids.index(u)] for u in stored],
            "offsets": offsets, "frames": frames, "skipped": jsonable(skipped),
            "shape": [L, total, D], "dtype": self.dtype,
            "crc32": _crc32(data) if data is not None else 0,
            "scales_crc32": _crc32(scales) if scales is not None else None,
        }
        self._write(part.index, data, scales, marker)

    def _check_values(self, utt_id: str, x: np.ndarray) -> None:
        absmax = np.abs(x).max(axis=(1, 2))                     # (L,)
        bad = ~np.isfinite(absmax)
        if bad.any():
            layer = self.layers[int(np.argmax(bad))]
            raise CacheError(f"utterance {utt_id}: the encoder produced NaN/inf at layer {layer}; "
                             "check the audio, or pass --on-error skip to record it as skipped")
        if self.dtype == "float16" and (absmax > FLOAT16_MAX).any():
            i = int(np.argmax(absmax))
            raise CacheOverflowError(
                f"utterance {utt_id}: layer {self.layers[i]} has |x| up to {float(absmax[i]):.6g}, "
                f"beyond float16's {FLOAT16_MAX:.0f} (it would be stored as inf): re-run with --dtype float32")

    def _write(self, index: int, data: np.ndarray | None, scales: np.ndarray | None, marker: dict) -> None:
        import zarr

        # Order matters for crash safety: marker gone -> old data gone -> new data -> marker.
        store_delete(self.store, f"{done_key(index)}/zarr.json")
        store_delete_dir(self.store, f"parts/{part_name(index)}")
        if data is not None:
            _create_single_chunk_array(self.store, data_key(index), data)
        if scales is not None:
            _create_single_chunk_array(self.store, scales_key(index), scales)
        zarr.create_group(self.store, path=done_key(index), attributes=marker, overwrite=True,
                          zarr_format=3)

    # ------------------------------------------------------------------ finishing
    def finalize(self):
        """Consolidate the index and mark the cache complete. Idempotent; call on one rank after all
        parts are written. Returns the opened :class:`FeatureCache`."""
        import zarr

        from phonecli.cache.reader import FeatureCache, index_from_markers

        done = self.completed()
        todo = [p.index for p in self.plan if p.index not in done]
        if todo:
            names = ", ".join(part_name(i) for i in todo[:8]) + (" ..." if len(todo) > 8 else "")
            raise CacheError(f"cache {self.path}: {len(todo)} of {len(self.plan)} parts are incomplete "
                             f"({names}): re-run the same extraction command to finish them")
        markers = [read_attrs(self.store, done_key(p.index)) for p in self.plan]
        index, skipped = index_from_markers(markers)
        zarr.create_group(self.store, path="index", attributes=index, overwrite=True, zarr_format=3)
        root = zarr.open_group(self.store, mode="r+", zarr_format=3)
        root.update_attributes({"complete": True, "num_utterances": len(index["utt_ids"]),
                                "num_frames": int(sum(index["frames"])), "skipped": skipped})
        return FeatureCache.open(self.path)
