"""``cache ls / info / rm``: find caches under a root, summarize one, delete one safely."""

from __future__ import annotations

import json
from pathlib import Path

from phonecli.cache.store import FORMAT, CacheError, is_url, normalize_path, storage_options


def _fs(path: str):
    import fsspec

    opts = storage_options(path) if is_url(path) else {}
    fs, p = fsspec.core.url_to_fs(path, **opts)
    return fs, p


def _root_attrs(fs, p: str) -> dict | None:
    try:
        with fs.open(f"{p.rstrip('/')}/zarr.json", "rb") as f:
            doc = json.load(f)
    except (FileNotFoundError, ValueError, IsADirectoryError, NotADirectoryError):
        return None
    attrs = doc.get("attributes", {}) if isinstance(doc, dict) else {}
    return attrs if attrs.get("format") == FORMAT else None


def _join(path: str, sub: str) -> str:
    if is_url(path):
        proto = path.split("://", 1)[0]
        return f"{proto}://{sub}" if not sub.startswith(f"{proto}://") else sub
    return sub


def _size(fs, p: str) -> int:
    try:
        return int(fs.du(p, total=True))
    except FileNotFoundError:
        return 0


def _summary(path: str, fs, p: str, attrs: dict) -> dict:
    plan = attrs.get("plan", [])
    n_planned = sum(len(part.get("utt_ids", [])) for part in plan)
    return {
        "path": path, "model": attrs.get("model"), "model_id": attrs.get("model_id"),
        "corpus_id": attrs.get("corpus_id"),
        "utterances": attrs.get("num_utterances") if attrs.get("complete") else None,
        "planned_utterances": n_planned, "layers": len(attrs.get("layers", [])),
        "dim": attrs.get("dim"), "dtype": attrs.get("dtype"), "frame_rate": attrs.get("frame_rate"),
        "size_bytes": _size(fs, p), "complete": bool(attrs.get("complete")),
    }


def list_caches(root: str | Path, max_depth: int = 4) -> list[dict]:
    """Every phonecli cache under ``root`` (local path or fsspec URL), sorted by path.

    Walks at most ``max_depth`` directory levels and never descends into a cache.
    """
    path = normalize_path(root)
    fs, p = _fs(path)
    if not fs.exists(p):
        raise CacheError(f"{path} does not exist: pass the --cache root used by `phonecli extract`")
    found: list[dict] = []
    frontier = [(p, 0)]
    while frontier:
        d, depth = frontier.pop()
        attrs = _root_attrs(fs, d)
        if attrs is not None:
            found.append(_summary(_join(path, d), fs, d, attrs))
            continue
        if depth >= max_depth:
            continue
        try:
            entries = fs.ls(d, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            continue
        frontier += [(e["name"], depth + 1) for e in entries if e.get("type") == "directory"]
    return sorted(found, key=lambda r: r["path"])


def cache_info(path: str | Path) -> dict:
    """Metadata + per-split counts (utterances, frames, seconds) + skipped + parts done/total + size."""
    from phonecli.cache.reader import FeatureCache

    cache = FeatureCache.open(path)
    fs, p = _fs(cache.path)
    splits = {}
    for s in cache.splits():
        ids = cache.utterance_ids(s)
        frames = sum(cache.num_frames(u) for u in ids)
        splits[s] = {"utterances": len(ids), "frames": frames,
                     "seconds": round(frames / cache.frame_rate, 2),
                     "bytes": cache.nbytes_split(s)}
    return {
        "path": cache.path, "metadata": cache.metadata, "complete": cache.is_complete,
        "parts": {"complete": len(cache.complete_parts), "planned": len(cache.plan)},
        "splits": splits, "skipped": cache.skipped, "size_bytes": _size(fs, p),
    }


def remove_cache(path: str | Path) -> str:
    """Delete a cache directory; refuses anything whose root zarr.json is not a phonecli cache."""
    full = normalize_path(path)
    fs, p = _fs(full)
    if _root_attrs(fs, p) is None:
        raise CacheError(f"{full} is not a phonecli cache (no zarr.json with format={FORMAT!r}): refusing to delete it")
    fs.rm(p, recursive=True)
    return full


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
