"""The on-disk layout of a phonecli feature cache (format ``phonecli-cache`` v1, Zarr v3).

One Zarr v3 group per (corpus, encoder, extraction settings)::

    <name>.zarr/
      zarr.json                 root group; attributes = metadata (contract keys) + "plan"
      parts/pNNNNN/data         array (layers, part_frames, dim), float16|float32|int8, ONE chunk,
                                codecs = [bytes(little)] only -> the chunk file
                                parts/pNNNNN/data/c/0/0/0 is the raw C-order array
      parts/pNNNNN/scales       int8 only: float32 (part_utterances, layers, dim), one chunk
      done/pNNNNN               completion marker of part NNNNN (a group; its attributes are the
                                part's index: utt_ids, splits, offsets, frames, skipped, shape, crc32)
      index                     written by finalize(): consolidated columnar index (attributes)

Why this layout (measured in DESIGN.md and bench/cache_read.py): one uncompressed chunk per part
means a part is written whole by exactly one worker (no shared chunk, so zarr-python #3682 cannot
bite), there is no edge-chunk padding, and a local reader can ``np.memmap`` the chunk file so any
(layer subset, frame range) is a numpy view: no per-chunk Python overhead. Utterances are
concatenated along frames inside a part; layer-major order makes one layer of a whole split a
sequential read.

Completion protocol: ``write_part`` deletes the marker first, then the part's data, writes the
data, then writes the marker LAST. A SIGKILL anywhere before the marker leaves the part
incomplete and it is redone whole on resume; the marker carries a crc32 of the data bytes so
``cache verify`` also catches torn or corrupted chunks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from phonecli.errors import CacheError, CacheMismatchError, CacheOverflowError  # noqa: F401  (re-exported)

FORMAT = "phonecli-cache"
VERSION = 1
DTYPES = ("float16", "float32", "int8")
FLOAT16_MAX = 65504.0
SPLIT_ORDER = ("train", "dev", "test")

# Keys whose difference means "another model / corpus / settings": never mix into one store.
IDENTITY_KEYS = ("layer_convention", "model_id", "weights_fingerprint", "corpus_id", "layers", "dim", "dtype",
                 "frame_rate", "settings")
REQUIRED_KEYS = ("model_id", "corpus_id", "layers", "dim", "dtype", "frame_rate")


def check_layer_convention(attrs: dict, path: str) -> None:
    """Refuse a cache whose layer indices mean something else than this phonecli's (one line).

    Every cache records ``layer_convention`` (:data:`phonecli.encoders.layers.LAYER_CONVENTION`).
    Caches written before it was recorded (no attribute) stored, for pre-LN encoders, the state
    *before* the final LayerNorm at the last index ("pre final LayerNorm" in their layer_info),
    and Qwen2-Audio states computed without its padding mask: reading them next to new ones
    would mix two meanings of "layer N", so they are refused, never reinterpreted.
    """
    from phonecli.encoders.layers import LAYER_CONVENTION

    found = attrs.get("layer_convention")
    if found == LAYER_CONVENTION:
        return
    if found is not None:
        why = f"layer_convention {found!r}, this phonecli reads {LAYER_CONVENTION!r}"
    elif any("pre final LayerNorm" in str(li.get("name", "")) for li in attrs.get("layer_info") or []
             if isinstance(li, dict)):
        why = "an older phonecli, whose last layer is the state before the final LayerNorm"
    else:
        why = "an older phonecli that recorded no layer convention"
    raise CacheMismatchError(f"cache {path} was written by {why}; re-extract it (`phonecli cache rm {path}`, then "
                             "the same `phonecli extract` command)")


def part_name(index: int) -> str:
    return f"p{index:05d}"


def data_key(index: int) -> str:
    return f"parts/{part_name(index)}/data"


def scales_key(index: int) -> str:
    return f"parts/{part_name(index)}/scales"


def done_key(index: int) -> str:
    return f"done/{part_name(index)}"


def is_url(path: str | Path) -> bool:
    return isinstance(path, str) and "://" in path


def normalize_path(path: str | Path) -> str:
    """Local paths become absolute strings; fsspec URLs (``file://``, ``memory://``, ``s3://``) stay."""
    if is_url(path):
        return str(path).rstrip("/")
    return str(Path(path).expanduser().resolve())


def open_store(path: str | Path, *, read_only: bool):
    """A zarr Store for a local path (LocalStore) or an fsspec URL (FsspecStore)."""
    from zarr.storage import FsspecStore, LocalStore

    p = normalize_path(path)
    if is_url(p):
        # fsspec's local filesystem does not create parent directories unless asked to.
        opts = {"auto_mkdir": True} if p.split("://", 1)[0] in ("file", "local") else None
        return FsspecStore.from_url(p, storage_options=opts, read_only=read_only)
    return LocalStore(p, read_only=read_only)


def local_file(store, key: str) -> Path | None:
    """The local filesystem path of ``key`` if the store is on a local disk, else None.

    Enables the memmap fast path for plain paths and for ``file://`` URLs alike.
    """
    from zarr.storage import FsspecStore, LocalStore

    if isinstance(store, LocalStore):
        return Path(store.root) / key
    if isinstance(store, FsspecStore):
        fs = store.fs
        inner = getattr(fs, "sync_fs", None) or fs  # AsyncFileSystemWrapper keeps the sync fs here
        protocol = inner.protocol if isinstance(inner.protocol, tuple) else (inner.protocol,)
        if "file" in protocol or "local" in protocol:
            return Path(store.path) / key
    return None


def jsonable(obj: Any) -> Any:
    """Round-trip through JSON so tuples/lists and numpy scalars compare equal to stored values."""
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(o: Any):
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def split_rank(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split), "") if split in SPLIT_ORDER else (len(SPLIT_ORDER), split)


# --- small sync wrappers around the async zarr Store API (raw keys, used for the markers'
# deletion and for ranged reads of chunk bytes) -------------------------------------------

def store_get(store, key: str, byte_range=None) -> bytes | None:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buf = sync(store.get(key, prototype=default_buffer_prototype(), byte_range=byte_range))
    return None if buf is None else buf.to_bytes()


def store_get_ranges(store, key_ranges: list[tuple[str, int, int]]) -> list[bytes]:
    """Fetch many ``(key, start, end)`` byte ranges concurrently (one round trip on remote stores)."""
    from zarr.abc.store import RangeByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    reqs = [(k, RangeByteRequest(s, e)) for k, s, e in key_ranges]
    bufs = sync(store.get_partial_values(default_buffer_prototype(), reqs))
    out = []
    for (k, s, e), b in zip(key_ranges, bufs):
        if b is None:
            raise CacheError(f"chunk {k!r} is missing from the cache: run `phonecli cache verify` "
                             "and re-run the extraction to redo the part")
        data = b.to_bytes()
        if len(data) != e - s:
            raise CacheError(f"chunk {k!r} is truncated ({len(data)} of {e - s} bytes read): "
                             "run `phonecli cache verify` and re-run the extraction")
        out.append(data)
    return out


def store_delete(store, key: str) -> None:
    from zarr.core.sync import sync

    sync(store.delete(key))


def store_delete_dir(store, prefix: str) -> None:
    from zarr.core.sync import sync

    sync(store.delete_dir(prefix))


def store_list_dir(store, prefix: str) -> list[str]:
    from zarr.core.sync import collect_aiterator

    return sorted(collect_aiterator(store.list_dir(prefix)))


def read_json(store, key: str) -> dict | None:
    """A zarr.json document, or None if absent or unparseable (a torn write counts as absent)."""
    raw = store_get(store, key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def read_attrs(store, node: str) -> dict | None:
    """Attributes of a group/array at ``node`` ('' = root) or None if it does not exist."""
    doc = read_json(store, f"{node}/zarr.json" if node else "zarr.json")
    if doc is None:
        return None
    return doc.get("attributes", {})
