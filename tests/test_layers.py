"""One --layers grammar (phonecli.layers) for extract, probe and presets: ranges and lists mixed, `last`,
`all`, `weighted`, `all-single` where meaningful; `6,1` is `1,6` and `6,6` is refused in every entry point."""

from __future__ import annotations

import numpy as np
import pytest

from phonecli import layers as L
from phonecli.errors import LayerSpecError

AVAIL = list(range(25))


def test_grammar():
    assert L.resolve("0,6,12-24", AVAIL).layers == (0, 6, *range(12, 25))   # the README's example
    assert L.resolve("all", AVAIL) == L.LayerSelection(tuple(AVAIL), False)
    assert L.resolve("weighted", AVAIL) == L.LayerSelection(tuple(AVAIL), True)
    assert L.resolve("last", AVAIL).layers == (24,)
    assert L.resolve("0, last", AVAIL).layers == (0, 24)
    assert L.resolve(7, AVAIL).layers == (7,) and L.resolve([9, 3], AVAIL).layers == (3, 9)
    assert L.resolve(" 3 - 5 ", AVAIL).layers == (3, 4, 5)
    with pytest.raises(LayerSpecError, match="empty range 12-6 .*write 6-12"):
        L.resolve("12-6", AVAIL)
    with pytest.raises(LayerSpecError, match=r"x\.zarr: layer\(s\) 25,30 not available \(available: 0-24\)"):
        L.resolve("25,30", AVAIL, source="x.zarr")
    with pytest.raises(LayerSpecError, match="'first' is not understood"):
        L.resolve("first", AVAIL)
    with pytest.raises(LayerSpecError, match="all-single runs one probe per layer"):
        L.resolve("all-single", AVAIL)
    with pytest.raises(LayerSpecError, match="not accepted here"):
        L.resolve("weighted", AVAIL, L.EXTRACT)
    assert L.compact([0, 1, 2, 3, 7, 9, 10]) == "0-3,7,9-10" and L.compact([0, 1, 2, 7], sep="_") == "0-2_7"


@pytest.mark.parametrize("spec", ["6,6", "0-6,6", "24,last"])
def test_a_layer_named_twice_is_refused(spec):
    with pytest.raises(LayerSpecError, match="is named twice"):
        L.resolve(spec, AVAIL)


# -- the same answers from every entry point ---------------------------------------------------

def test_extract_entry_point():
    from phonecli.encoders.base import LayerInfo
    from phonecli.extract.runner import select_layers

    infos = [LayerInfo(i, f"l{i}", 50.0) for i in range(13)]
    assert select_layers("6,1", infos) == select_layers("1,6", infos) == [1, 6]
    with pytest.raises(LayerSpecError, match="named twice"):
        select_layers("6,6", infos)


def test_planner_entry_point():
    from phonecli.pipeline.experiment import layer_indices

    assert layer_indices("6,1", 13) == layer_indices("1,6", 13) == [1, 6]
    assert layer_indices("0,6,10-12", 13) == [0, 6, 10, 11, 12]
    with pytest.raises(LayerSpecError, match="named twice"):
        layer_indices("6,6", 13)       # the planner must not count layer 6's size twice


def test_probe_entry_point(tiny_corpus):
    from phonecli.data.manifest import Manifest
    from phonecli.probe.features import ArrayStream, FeatureSource

    m = Manifest.load(tiny_corpus)
    rng = np.random.default_rng(0)
    feats = {u.utt_id: rng.standard_normal((8, 5, 4)).astype(np.float32) for u in m}
    splits = {u.utt_id: u.split for u in m}

    def stream(spec):
        return ArrayStream(feats, splits, frame_rate=50.0, corpus_id=m.corpus_id, layers=spec)

    a, b = stream("6,1"), stream("1,6")
    assert a.layers == b.layers == (1, 6)
    u = next(iter(feats))
    np.testing.assert_array_equal(FeatureSource([a]).read_many([u])[0][0], feats[u][[1, 6]])
    assert stream("0,2,5-7").layers == (0, 2, 5, 6, 7)
    assert stream("weighted").selection.weighted
    with pytest.raises(LayerSpecError, match="named twice"):
        stream("6,6")


def test_probe_run_records_the_same_selection_for_6_1_and_1_6(tiny_corpus, tmp_path):
    from phonecli.data.manifest import Manifest
    from phonecli.probe import train_probe
    from phonecli.probe.features import ArrayStream

    from phonecli.errors import FeatureSourceError

    m = Manifest.load(tiny_corpus)
    rng = np.random.default_rng(0)
    feats = {u.utt_id: rng.standard_normal((8, int(u.duration * 50), 4)).astype(np.float32) for u in m}
    splits = {u.utt_id: u.split for u in m}
    cache = write_cache(tmp_path / "c8.zarr", feats, splits, m.corpus_id)
    fast = dict(epochs=1, patience=1, device="cpu", progress=False)
    a = train_probe(cache, tiny_corpus, tmp_path / "a", layers="6,1", **fast)
    b = train_probe(cache, tiny_corpus, tmp_path / "b", layers="1,6", **fast)
    assert a.record.config["layers"] == b.record.config["layers"] == [[1, 6]]
    with pytest.raises(LayerSpecError, match="named twice"):
        train_probe(cache, tiny_corpus, tmp_path / "c", layers="6,6", **fast)
    assert not (tmp_path / "c").exists()
    # an in-memory stream chose its layers when it was built: a --layers for it is refused, never ignored
    stream = ArrayStream(feats, splits, frame_rate=50.0, corpus_id=m.corpus_id)
    with pytest.raises(FeatureSourceError, match="in-memory stream, whose layers are chosen when it is built"):
        train_probe(stream, tiny_corpus, tmp_path / "d", layers="6,1", **fast)


def write_cache(path, feats, splits, corpus_id):
    """A real 8-layer cache (plan_parts + CacheWriter) holding ``feats``."""
    from phonecli.cache import CacheWriter, plan_parts

    layers = list(range(8))
    md = {"format": "phonecli-cache", "version": 1, "model": "random8", "model_id": "random8", "revision": None,
          "weights_fingerprint": "none", "frame_rate": 50.0, "sample_rate": 16000, "layers": layers,
          "layer_info": [{"index": i, "name": f"l{i}", "frame_rate": 50.0, "note": ""} for i in layers],
          "dim": 4, "dtype": "float32", "corpus_id": corpus_id, "settings": {}, "complete": False}
    w = CacheWriter.create_or_open(str(path), md, plan_parts([(u, splits[u], x.shape[1]) for u, x in feats.items()],
                                                             8 * 4 * 4))
    for part in w.pending():
        w.write_part(part, {u: feats[u] for u in part.utt_ids}, [])
    w.finalize()
    return path


def test_stage_boundaries():
    """report reads caches only through FeatureCache (nobody but phonecli.cache opens zarr.json); the pipeline
    calls the stage APIs, never the command line."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "phonecli"
    outside_cache = [f for f in root.rglob("*.py") if "zarr.json" in f.read_text() and f.parent.name != "cache"]
    assert outside_cache == []
    pipeline = [f for f in (root / "pipeline").glob("*.py")
                if re.search(r"phonecli\.cli|import click|phonecli\.commands", f.read_text())]
    assert pipeline == []


def test_cache_export_entry_point(tiny_corpus, tmp_path):
    import h5py

    from phonecli.cache.export import export_hdf5
    from phonecli.data.manifest import Manifest

    m = Manifest.load(tiny_corpus)
    rng = np.random.default_rng(1)
    feats = {u.utt_id: rng.standard_normal((8, 5, 4)).astype(np.float32) for u in m}
    cache = write_cache(tmp_path / "c.zarr", feats, {u.utt_id: u.split for u in m}, m.corpus_id)
    with h5py.File(export_hdf5(cache, tmp_path / "a.h5", layers="6,1"), "r") as f:
        assert list(f.attrs["layers"]) == [1, 6]
    with pytest.raises(LayerSpecError, match="named twice"):
        export_hdf5(cache, tmp_path / "b.h5", layers="6,6")
