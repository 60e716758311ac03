"""Verified reads: every cache part a process reads is checked once, before its first value is used.

A part's completion marker records the crc32 of its data chunk (and of its int8 scales). The
first time a process touches a part, :class:`VerifiedParts` streams the chunk once, in blocks,
computing the crc32 and checking that every value is finite, and remembers the part
(process-wide: every ``FeatureCache`` of the same store shares it) so later reads cost nothing.
Local stores are read through the part's memory map, fsspec URLs through ranged reads of the
chunk. A mismatch raises :class:`~phonecli.errors.CacheError` naming the part and file; a NaN/inf
raises :class:`~phonecli.errors.NonFiniteError` naming the utterance, layer and file. ``phonecli
cache verify`` checks the same things (and more) for a whole cache on demand.

Cost (``bench/cache_read.py``): one pass over each part at ~7 GB/s (zlib crc32) per process; the
finite test reads the same cache-sized blocks as integers (exponent bits all ones = NaN/inf),
which costs far less than numpy's float16 ``isfinite``.
"""

from __future__ import annotations

import threading
import zlib
from pathlib import Path

import numpy as np

from phonecli.errors import CacheError, NonFiniteError

#: Bytes per block of the streamed check: large enough for zlib to run at full speed, small enough
#: to stay in the CPU cache for the finite test that follows on the same block.
BLOCK_BYTES = 4 * 2**20

# (integer view, exponent mask) of the float dtypes: a value is NaN/inf iff all exponent bits are set
_EXPONENT = {"float16": (np.uint16, 0x7C00), "float32": (np.uint32, 0x7F800000)}


def crc32(a) -> int:
    """crc32 of an array's bytes (C order) or of a bytes-like object, as stored in part markers."""
    if isinstance(a, np.ndarray):
        a = np.ascontiguousarray(a).view(np.uint8).reshape(-1)
    return zlib.crc32(a) & 0xFFFFFFFF


def first_nonfinite(block: np.ndarray, dtype: str) -> int | None:
    """Index of the first NaN/inf in a 1-D ``block`` of ``dtype`` values, or None (int8: None)."""
    if dtype not in _EXPONENT:
        return None
    int_type, mask = _EXPONENT[dtype]
    bits = np.bitwise_and(block.view(int_type), mask)
    if bits.size == 0 or bits.max() != mask:
        return None
    return int(np.argmax(bits == mask))


class VerifiedParts:
    """The parts this process has checked: ``(store, part, crc, file identity)`` keys, thread-safe."""

    def __init__(self):
        self._done: set[tuple] = set()
        self._lock = threading.Lock()
        self._part_locks: dict[tuple, threading.Lock] = {}

    def clear(self) -> None:
        """Forget every check (benchmarks use it to time the first pass of a fresh process)."""
        with self._lock:
            self._done.clear()

    def check(self, cache, part: int) -> None:
        """Verify ``part`` of ``cache`` (a ``FeatureCache``) unless this process already did."""
        marker = cache._markers[part]
        key = (cache.path, part, marker.get("crc32"), marker.get("scales_crc32"), _file_identity(cache, part))
        if key in self._done:
            return
        with self._lock:
            lock = self._part_locks.setdefault(key, threading.Lock())
        with lock:                      # two reader threads touching a new part verify it once
            if key in self._done:
                return
            _verify_data(cache, part, marker)
            if cache.dtype == "int8":
                _verify_scales(cache, part, marker)
            with self._lock:
                self._done.add(key)


#: The process-wide registry every ``FeatureCache`` uses.
VERIFIED = VerifiedParts()


def _file_identity(cache, part: int):
    """Size and mtime of a local chunk file (a rewritten file is checked again); None for URLs."""
    path = _local_chunk(cache, part)
    if path is None:
        return None
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _local_chunk(cache, part: int) -> Path | None:
    from phonecli.cache.reader import CHUNK
    from phonecli.cache.store import data_key, local_file

    return local_file(cache.store, f"{data_key(part)}/{CHUNK}")


def _chunk_label(cache, part: int) -> str:
    from phonecli.cache.reader import CHUNK
    from phonecli.cache.store import data_key

    local = _local_chunk(cache, part)
    return str(local) if local is not None else f"{cache.path}/{data_key(part)}/{CHUNK}"


def _fix(cache) -> str:
    return (f"run `phonecli cache verify --repair {cache.path}`, then the same `phonecli extract` command "
            "to redo the damaged part")


def _blocks(cache, part: int, nbytes: int):
    """The part's data chunk as consecutive ``bytes``/uint8 blocks of ``BLOCK_BYTES``."""
    from phonecli.cache.reader import CHUNK
    from phonecli.cache.store import data_key, store_get
    from zarr.abc.store import RangeByteRequest

    if cache._local:
        flat = cache._mmap(part, verify=False).reshape(-1).view(np.uint8)
        for start in range(0, nbytes, BLOCK_BYTES):
            yield flat[start:start + BLOCK_BYTES]
        return
    key = f"{data_key(part)}/{CHUNK}"
    for start in range(0, nbytes, BLOCK_BYTES):
        end = min(start + BLOCK_BYTES, nbytes)
        raw = store_get(cache.store, key, RangeByteRequest(start, end))
        if raw is None or len(raw) != end - start:
            raise CacheError(f"cache {cache.path}: part {_name(part)}: chunk {key} is missing or truncated; "
                             f"{_fix(cache)}")
        yield np.frombuffer(raw, dtype=np.uint8)


def _name(part: int) -> str:
    from phonecli.cache.store import part_name

    return part_name(part)


def _verify_data(cache, part: int, marker: dict) -> None:
    shape = cache._shapes[part]
    itemsize = np.dtype(cache.dtype).itemsize
    nbytes = int(np.prod(shape)) * itemsize
    if nbytes == 0:
        return
    crc = 0
    offset = 0                      # in values
    for block in _blocks(cache, part, nbytes):
        crc = zlib.crc32(block, crc)
        bad = first_nonfinite(block, cache.dtype)
        if bad is not None:
            _raise_nonfinite(cache, part, marker, offset + bad, shape)
        offset += block.size // itemsize
    crc &= 0xFFFFFFFF
    if crc != marker.get("crc32"):
        raise CacheError(
            f"cache {cache.path}: part {_name(part)} fails its crc32 check ({_chunk_label(cache, part)}: "
            f"recorded {marker.get('crc32', 0):08x}, read {crc:08x}): the file changed after extraction; "
            f"{_fix(cache)}")


def _raise_nonfinite(cache, part: int, marker: dict, index: int, shape) -> None:
    _, frames, dim = shape
    layer_pos, frame = divmod(index // dim, frames)
    utt = next((u for u, o, f in zip(marker["utt_ids"], marker["offsets"], marker["frames"])
                if o <= frame < o + f), "?")
    raise NonFiniteError(
        f"utterance {utt}: NaN/inf features at layer {cache.layers[layer_pos]} of cache {cache.path} "
        f"({_chunk_label(cache, part)}, part {_name(part)}); the cache is damaged: {_fix(cache)}")


def _verify_scales(cache, part: int, marker: dict) -> None:
    from phonecli.cache.reader import CHUNK
    from phonecli.cache.store import scales_key, store_get

    n = len(marker.get("utt_ids", []))
    if n == 0:
        return
    key = f"{scales_key(part)}/{CHUNK}"
    raw = store_get(cache.store, key)
    expected = n * len(cache.layers) * cache.dim * 4
    if raw is None or len(raw) != expected:
        raise CacheError(f"cache {cache.path}: part {_name(part)}: int8 scales {key} are missing or truncated; "
                         f"{_fix(cache)}")
    if crc32(raw) != marker.get("scales_crc32"):
        raise CacheError(f"cache {cache.path}: part {_name(part)} int8 scales fail their crc32 check ({key}); "
                         f"{_fix(cache)}")
    s = np.frombuffer(raw, dtype="<f4").reshape(n, len(cache.layers), cache.dim)
    bad = ~(np.isfinite(s) & (s >= 0))
    if bad.any():
        row, layer_pos, _ = (int(v) for v in np.argwhere(bad)[0])
        raise NonFiniteError(f"utterance {marker['utt_ids'][row]}: NaN/inf/negative int8 scales at layer "
                             f"{cache.layers[layer_pos]} of cache {cache.path} ({key}); the cache is damaged: "
                             f"{_fix(cache)}")
    cache._scales[part] = s
