"""``cache export --format hdf5``: the cache as one HDF5 file readable without phonecli.

Layout (h5py)::

    /                      attrs: format="phonecli-cache-hdf5", version=1, metadata (JSON string of
                                  the cache metadata), layers (int array), frame_rate (frames/s),
                                  dim, stored_dtype (cache dtype), skipped (JSON string)
    /<split>/<utt_id>      dataset (layers, frames, dim); float16/float32 as stored, int8 caches
                           dequantized to float32 (exactly what FeatureCache.read returns);
                           attrs: num_frames, split

The file is written to ``<out>.partial`` and renamed at the end, so an interrupted export never
leaves a file that looks complete.
"""

from __future__ import annotations

from phonecli.layers import EXTRACT
from phonecli.layers import resolve as resolve_layers

import json
import os
import sys
from pathlib import Path

from phonecli.cache.reader import FeatureCache
from phonecli.cache.store import CacheError

HDF5_FORMAT = "phonecli-cache-hdf5"


def export_hdf5(path: str, out: str | Path, *, splits: list[str] | None = None,
                layers: list[int] | None = None, overwrite: bool = False,
                progress: bool | None = None) -> Path:
    """Write the cache (optionally only some splits/layers) to ``out``; returns ``out``."""
    import h5py
    import numpy as np
    from tqdm.auto import tqdm

    cache = FeatureCache.open(path)
    if not cache.is_complete:
        raise CacheError(f"cache {cache.path} is incomplete: finish the extraction before exporting it")
    out = Path(out)
    if out.exists() and not overwrite:
        raise CacheError(f"{out} already exists: pass --overwrite or choose another --out")
    chosen = splits or cache.splits()
    unknown = [s for s in chosen if s not in cache.splits()]
    if unknown:
        raise CacheError(f"split(s) {unknown} not in cache {cache.path} (it has {cache.splits()})")
    # the one --layers grammar (phonecli.layers): "0,6,12-24", "last", "all", or a list of indices
    stored_layers = list(resolve_layers("all" if layers is None else layers, cache.layers, EXTRACT,
                                        source=str(cache.path)).layers)
    ids = [u for s in chosen for u in cache.utterance_ids(s)]
    tmp = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if progress is None else progress
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = HDF5_FORMAT
        f.attrs["version"] = 1
        f.attrs["metadata"] = json.dumps(cache.metadata)
        f.attrs["layers"] = np.asarray(stored_layers, dtype=np.int64)
        f.attrs["frame_rate"] = cache.frame_rate
        f.attrs["dim"] = cache.dim
        f.attrs["stored_dtype"] = cache.dtype
        f.attrs["skipped"] = json.dumps(cache.skipped)
        for s in chosen:
            f.require_group(s)
        batch = 16
        with tqdm(total=len(ids), desc="export", unit="utt", disable=not show) as bar:
            for i in range(0, len(ids), batch):
                chunk = ids[i:i + batch]
                for u, x in zip(chunk, cache.read_many(chunk, layers=stored_layers)):
                    ds = f[cache.split_of(u)].create_dataset(u, data=x)
                    ds.attrs["num_frames"] = x.shape[1]
                    ds.attrs["split"] = cache.split_of(u)
                bar.update(len(chunk))
    os.replace(tmp, out)
    return out
