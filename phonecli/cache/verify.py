"""``cache verify``: re-read everything and report every inconsistency, one line each."""

from __future__ import annotations

import sys

import numpy as np

from phonecli.cache.checksum import crc32
from phonecli.cache.plan import Part
from phonecli.cache.store import (
    DTYPES, REQUIRED_KEYS, CacheError, data_key, done_key, local_file, open_store, part_name,
    read_attrs, read_json, scales_key, store_get, store_list_dir,
)

FIX_REDO = "run `phonecli cache verify --repair` then the same extraction command to redo part {p}"


def _chunk_bytes(store, key: str, expected: int) -> tuple[memoryview | bytes | None, str | None]:
    """Raw chunk bytes (memmapped when local) or (None, problem)."""
    f = local_file(store, key)
    if f is not None:
        if not f.exists():
            return None, "missing"
        size = f.stat().st_size
        if size != expected:
            return None, f"{size} bytes, expected {expected}"
        if size == 0:
            return b"", None
        return np.memmap(f, dtype=np.uint8, mode="r"), None
    raw = store_get(store, key)
    if raw is None:
        return None, "missing"
    if len(raw) != expected:
        return None, f"{len(raw)} bytes, expected {expected}"
    return raw, None


def _check_array_meta(store, key: str, shape: list[int], dtype: str) -> str | None:
    doc = read_json(store, f"{key}/zarr.json")
    if doc is None:
        return "array metadata (zarr.json) missing or unreadable"
    if doc.get("shape") != shape:
        return f"array shape {doc.get('shape')} != marker shape {shape}"
    if doc.get("data_type") != dtype:
        return f"array dtype {doc.get('data_type')} != {dtype}"
    codecs = doc.get("codecs", [])
    if len(codecs) != 1 or codecs[0].get("name") != "bytes" or \
            codecs[0].get("configuration", {}).get("endian", "little") != "little":
        return f"unexpected codecs {codecs} (phonecli writes one uncompressed little-endian chunk)"
    grid = doc.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
    if grid != shape:
        return f"chunk shape {grid} != array shape {shape} (expected one chunk per part)"
    return None


def verify_cache(path: str, progress: bool | None = None, repair: bool = False) -> list[str]:
    """Every problem found in the cache at ``path``, one line each (empty list = healthy).

    Checks: metadata keys; every planned part has a completion marker agreeing with the plan
    (ids, splits, offsets, shape, dtype); chunk present with the right size and crc32; values
    finite (int8: scales finite and >= 0); no duplicate or unplanned utterances; the
    consolidated index equals the markers; ``complete`` is set.

    ``repair=True`` deletes the completion markers of damaged parts and clears ``complete`` so
    re-running the extraction redoes exactly those parts (nothing else is touched).
    """
    from tqdm.auto import tqdm

    from phonecli.cache.reader import FeatureCache, index_from_markers

    try:
        cache = FeatureCache.open(path)
    except CacheError as e:
        return [str(e)]
    store, meta, p = cache.store, cache.metadata, cache.path
    problems: list[str] = []
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        problems.append(f"{p}: metadata lacks {', '.join(missing)}")
    if meta.get("dtype") not in DTYPES:
        problems.append(f"{p}: metadata dtype {meta.get('dtype')!r} is not one of {DTYPES}")
        return problems
    L, D, dtype = len(cache.layers), cache.dim, cache.dtype
    if meta.get("layer_info") and len(meta["layer_info"]) != L:
        problems.append(f"{p}: metadata has {len(meta['layer_info'])} layer_info entries for {L} layers")
    if not cache.plan:
        problems.append(f"{p}: the plan is empty (metadata damaged)")

    planned = {part.index for part in cache.plan}
    for kind in ("parts", "done"):
        for name in store_list_dir(store, kind):
            if name == "zarr.json":
                continue
            if not (name.startswith("p") and name[1:].isdigit() and int(name[1:]) in planned):
                problems.append(f"{p}: unexpected entry {kind}/{name} (not in the plan)")

    markers: list[dict] = []
    seen: dict[str, str] = {}
    itemsize = np.dtype(dtype).itemsize
    show = sys.stderr.isatty() if progress is None else progress
    bad: set[int] = set()
    for part in tqdm(cache.plan, desc="verify", unit="part", disable=not show):
        n_before = len(problems)
        _verify_part(cache, part, L, D, dtype, itemsize, markers, seen, problems)
        if len(problems) > n_before and (read_attrs(store, done_key(part.index)) or {}).get("index") is not None:
            bad.add(part.index)

    if not meta.get("complete"):
        problems.append(f"{p}: cache is not finalized (complete=false): re-run the extraction to finish it")
    elif len(markers) == len(cache.plan):
        expected, skipped = index_from_markers(markers)
        stored = read_attrs(store, "index")
        if stored != expected:
            problems.append(f"{p}: consolidated index disagrees with the part markers: "
                            "re-run the extraction (finalize rewrites the index)")
        if meta.get("num_utterances") != len(expected["utt_ids"]):
            problems.append(f"{p}: metadata num_utterances={meta.get('num_utterances')} but "
                            f"{len(expected['utt_ids'])} utterances are stored")
        if meta.get("skipped", []) != skipped:
            problems.append(f"{p}: metadata skipped list disagrees with the part markers")
    if repair and (bad or problems):
        _repair(open_store(cache.path, read_only=False), bad)
        problems.append(f"{p}: repaired: removed the completion marker of {len(bad)} damaged part(s) "
                        f"({', '.join(part_name(i) for i in sorted(bad)) or 'none'}) and cleared complete; "
                        "re-run the same extraction command to redo them")
    return problems


def _repair(store, bad: set[int]) -> None:
    import zarr

    from phonecli.cache.store import store_delete

    for i in sorted(bad):
        store_delete(store, f"{done_key(i)}/zarr.json")
    root = zarr.open_group(store, mode="r+", zarr_format=3)
    root.update_attributes({"complete": False})
    store_delete(store, "index/zarr.json")


def _verify_part(cache, part: Part, L: int, D: int, dtype: str, itemsize: int, markers: list[dict],
                 seen: dict[str, str], problems: list[str]) -> None:
    from phonecli.cache.reader import CHUNK

    store, p = cache.store, cache.path
    name = part_name(part.index)
    fix = FIX_REDO.format(p=name)
    m = read_attrs(store, done_key(part.index))
    if m is None or "index" not in m:
        problems.append(f"{p}: part {name} is incomplete (no completion marker): re-run the extraction to finish it")
        return
    markers.append(m)
    problems += _check_marker(p, part, m, L, D, dtype, seen)
    shape = [L, int(sum(m.get("frames", []))), D]
    if shape[1] == 0:
        return
    key = data_key(part.index)
    err = _check_array_meta(store, key, shape, dtype)
    if err:
        problems.append(f"{p}: part {name}: {err}: {fix}")
        return
    raw, err = _chunk_bytes(store, f"{key}/{CHUNK}", int(np.prod(shape)) * itemsize)
    if err:
        problems.append(f"{p}: part {name}: data chunk {err}: {fix}")
        return
    if crc32(raw) != m.get("crc32"):
        problems.append(f"{p}: part {name}: data checksum mismatch (corrupted or torn write): {fix}")
    arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
    if dtype != "int8":
        for li in range(L):  # per layer: bounded memory for big parts
            bad = ~np.isfinite(arr[li])
            if bad.any():
                t = int(np.argwhere(bad)[0][0])
                utt = _utt_at(m, t)
                problems.append(f"{p}: part {name}: non-finite values at layer {cache.layers[li]} "
                                f"(utterance {utt}): {fix}")
                break
    else:
        skey = scales_key(part.index)
        sshape = [len(m["utt_ids"]), L, D]
        err = _check_array_meta(store, skey, sshape, "float32")
        sraw = None
        if not err:
            sraw, err = _chunk_bytes(store, f"{skey}/{CHUNK}", int(np.prod(sshape)) * 4)
        if err:
            problems.append(f"{p}: part {name}: int8 scales {err}: {fix}")
            return
        if crc32(sraw) != m.get("scales_crc32"):
            problems.append(f"{p}: part {name}: scales checksum mismatch: {fix}")
        s = np.frombuffer(sraw, dtype="<f4")
        if not (np.isfinite(s).all() and (s >= 0).all()):
            problems.append(f"{p}: part {name}: int8 scales contain NaN/inf/negative values: {fix}")


def _utt_at(marker: dict, frame: int) -> str:
    for u, o, f in zip(marker["utt_ids"], marker["offsets"], marker["frames"]):
        if o <= frame < o + f:
            return u
    return "?"


def _check_marker(p: str, part: Part, m: dict, L: int, D: int, dtype: str, seen: dict[str, str]) -> list[str]:
    name = part_name(part.index)
    out = []
    ids, splits, frames, offsets = m.get("utt_ids", []), m.get("splits", []), m.get("frames", []), m.get("offsets", [])
    skipped = [s.get("utt_id") for s in m.get("skipped", [])]
    if not (len(ids) == len(splits) == len(frames) == len(offsets)):
        return [f"{p}: part {name}: marker lists have different lengths (index damaged)"]
    if sorted(ids + skipped) != sorted(part.utt_ids):
        out.append(f"{p}: part {name}: stored+skipped utterances differ from the plan")
    plan_split = dict(zip(part.utt_ids, part.splits))
    for u, s in zip(ids, splits):
        if plan_split.get(u, s) != s:
            out.append(f"{p}: part {name}: utterance {u} indexed as split {s}, planned as {plan_split[u]}")
        if u in seen:
            out.append(f"{p}: utterance {u} stored twice (parts {seen[u]} and {name})")
        seen[u] = name
    if any(f < 1 for f in frames):
        out.append(f"{p}: part {name}: an utterance has no frames in the index")
    if offsets != np.concatenate([[0], np.cumsum(frames)])[:-1].astype(int).tolist()[:len(offsets)]:
        out.append(f"{p}: part {name}: offsets are not the running sum of frame counts (index damaged)")
    if m.get("shape") != [L, int(sum(frames)), D]:
        out.append(f"{p}: part {name}: marker shape {m.get('shape')} != ({L}, {sum(frames)}, {D})")
    if m.get("dtype") != dtype:
        out.append(f"{p}: part {name}: marker dtype {m.get('dtype')} != cache dtype {dtype}")
    return out
