"""Feature cache: writer/reader round trips, refusal, overflow, resume (incl. SIGKILL), URLs, dataset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr

from phonecli.cache import (
    CacheError, CacheMismatchError, CacheOverflowError, CacheWriter, FeatureCache, plan_parts,
)

LAYERS = [0, 2, 5]
DIM = 8


def make_features(n: int = 20, seed: int = 0, L: int = len(LAYERS), D: int = DIM) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"utt{i:03d}": (rng.standard_normal((L, int(rng.integers(3, 40)), D)) * (1 + i)).astype(np.float32)
            for i in range(n)}


def split_for(i: int) -> str:
    return "train" if i % 4 in (0, 1) else ("dev" if i % 4 == 2 else "test")


def make_plan(feats, dtype="float16", part_frames=60):
    items = [(u, split_for(i), x.shape[1]) for i, (u, x) in enumerate(feats.items())]
    bpf = len(LAYERS) * DIM * np.dtype(dtype).itemsize
    return plan_parts(items, bpf, target_bytes=bpf * part_frames)


def make_meta(dtype="float16", **over):
    meta = dict(model="tiny", model_id="org/tiny", revision=None, weights_fingerprint="abc123",
                transformers_version="5.23", torch_version="2.x", frame_rate=50.0, sample_rate=16000,
                layers=LAYERS, layer_info=[{"index": i, "name": f"l{i}", "frame_rate": 50.0, "note": ""} for i in LAYERS],
                dim=DIM, dtype=dtype, corpus_id="corpus0", settings={"on_error": "fail"})
    meta.update(over)
    return meta


def build(path, feats, dtype="float16", skip=(), part_frames=60, finalize=True):
    plan = make_plan(feats, dtype, part_frames)
    w = CacheWriter.create_or_open(path, make_meta(dtype), plan)
    for part in w.pending():
        sk = [{"utt_id": u, "reason": "too short"} for u in part.utt_ids if u in skip]
        w.write_part(part, {u: feats[u] for u in part.utt_ids if u not in skip}, sk)
    return w.finalize() if finalize else w


def store_files(root: Path) -> dict[str, bytes]:
    """Every file of a store except the root metadata (whose `created` timestamp differs)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and str(p.relative_to(root)) != "zarr.json"}


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("dtype", ["float16", "float32", "int8"])
def test_roundtrip(tmp_path, dtype):
    feats = make_features()
    cache = build(tmp_path / "c.zarr", feats, dtype)
    assert cache.is_complete and len(cache.plan) > 2
    assert cache.dtype == dtype and cache.layers == LAYERS and cache.dim == DIM and cache.frame_rate == 50.0
    for key in ("format", "version", "model", "model_id", "revision", "weights_fingerprint", "transformers_version",
                "torch_version", "phonecli_version", "frame_rate", "sample_rate", "layers", "layer_info", "dim",
                "dtype", "corpus_id", "settings", "created", "complete"):
        assert key in cache.metadata, key
    assert "plan" not in cache.metadata
    ids = list(feats)
    assert cache.utterance_ids() == [u for s in ("train", "dev", "test") for u in ids
                                     if split_for(ids.index(u)) == s]
    assert cache.utterance_ids("dev") == [u for i, u in enumerate(ids) if split_for(i) == "dev"]
    for i, (u, x) in enumerate(feats.items()):
        assert cache.split_of(u) == split_for(i)
        assert cache.num_frames(u) == x.shape[1]
        y = cache.read(u)
        assert y.shape == x.shape
        if dtype == "float32":
            assert y.dtype == np.float32 and np.array_equal(y, x)
        elif dtype == "float16":
            assert y.dtype == np.float16
            np.testing.assert_allclose(y.astype(np.float32), x, rtol=1e-3, atol=1e-3 * np.abs(x).max())
            assert np.array_equal(y, x.astype(np.float16))
        else:
            assert y.dtype == np.float32
            bound = np.abs(x).max(axis=1, keepdims=True) / 127 / 2          # half a step per (layer, channel)
            assert (np.abs(y - x) <= bound * (1 + 1e-5) + 1e-7).all()
        sub = cache.read(u, [5, 0])
        assert np.array_equal(sub, y[[2, 0]])
    many = cache.read_many(ids[:7], [2])
    assert all(np.array_equal(m, cache.read(u, [2])) for m, u in zip(many, ids[:7]))
    for split in ("train", "dev", "test"):
        loaded = cache.load_split(split, [2, 5])
        assert list(loaded) == cache.utterance_ids(split)
        assert all(np.array_equal(v, cache.read(u, [2, 5])) for u, v in loaded.items())
        assert cache.nbytes_split(split, [2, 5]) == sum(v.nbytes for v in loaded.values())
    with pytest.raises(CacheError, match="layer 7 is not stored"):
        cache.read(ids[0], [7])
    with pytest.raises(CacheError, match="empty layer list"):
        cache.read(ids[0], [])
    with pytest.raises(CacheError, match="nope is not in cache"):
        cache.read("nope")


def test_memmap_path_equals_zarr_read(tmp_path):
    feats = make_features()
    cache = build(tmp_path / "c.zarr", feats, "float16")
    assert cache._local
    for part in cache.complete_parts:
        ref = zarr.open_array(str(tmp_path / "c.zarr"), path=f"parts/p{part:05d}/data", mode="r")[...]
        assert np.array_equal(cache._mmap(part), ref)
        m = json.loads((tmp_path / f"c.zarr/done/p{part:05d}/zarr.json").read_text())["attributes"]
        for u, o, f in zip(m["utt_ids"], m["offsets"], m["frames"]):
            assert np.array_equal(cache.read(u), ref[:, o:o + f])


@pytest.mark.parametrize("scheme", ["memory", "file"])
@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_fsspec_urls(tmp_path, scheme, dtype):
    feats = make_features(12, seed=3)
    url = f"memory://caches-{dtype}/c.zarr" if scheme == "memory" else f"file://{tmp_path}/c.zarr"
    cache = build(url, feats, dtype)
    local = build(tmp_path / "ref.zarr", feats, dtype)
    again = FeatureCache.open(url)
    assert again.path == url and again.is_complete
    assert again._local == (scheme == "file")            # file:// keeps the memmap fast path
    ids = list(feats)
    for a, b in zip(again.read_many(ids), local.read_many(ids)):
        assert np.array_equal(a, b)
    for a, b in zip(again.read_many(ids[::-1], [5, 0]), local.read_many(ids[::-1], [5, 0])):
        assert np.array_equal(a, b)
    assert all(np.array_equal(v, local.read(u, [0])) for u, v in again.load_split("test", [0]).items())
    assert cache.utterance_ids() == local.utterance_ids()


# ---------------------------------------------------------------- honesty

@pytest.mark.parametrize("key,value", [("model_id", "org/other"), ("weights_fingerprint", "fff"),
                                       ("corpus_id", "corpus1"), ("layers", [0, 2, 6]), ("dtype", "float32"),
                                       ("settings", {"on_error": "skip"})])
def test_refuses_mismatched_metadata(tmp_path, key, value):
    feats = make_features(8)
    build(tmp_path / "c.zarr", feats, finalize=False)
    meta = make_meta(**{key: value})
    with pytest.raises(CacheMismatchError, match=f"built with {key}=.*refusing to mix"):
        CacheWriter.create_or_open(tmp_path / "c.zarr", meta, make_plan(feats))


def test_refuses_other_plan_and_foreign_dirs(tmp_path):
    feats = make_features(8)
    build(tmp_path / "c.zarr", feats)
    other = make_plan(dict(list(feats.items())[:6]))
    with pytest.raises(CacheMismatchError, match="other utterances"):
        CacheWriter.create_or_open(tmp_path / "c.zarr", make_meta(), other)
    (tmp_path / "notacache").mkdir()
    (tmp_path / "notacache" / "x.txt").write_text("hi")
    with pytest.raises(CacheError, match="not a phonecli cache"):
        CacheWriter.create_or_open(tmp_path / "notacache", make_meta(), make_plan(feats))
    with pytest.raises(CacheError, match="not a phonecli cache"):
        FeatureCache.open(tmp_path / "notacache")
    # same identity reopens fine, nothing left to do
    w = CacheWriter.create_or_open(tmp_path / "c.zarr", make_meta(transformers_version="9.9"), make_plan(feats))
    assert w.pending() == []


def test_fp16_overflow_reported_never_inf(tmp_path):
    feats = make_features(6)
    feats["utt004"][1, 2, 3] = 70000.0
    plan = make_plan(feats)
    w = CacheWriter.create_or_open(tmp_path / "c.zarr", make_meta(), plan)
    part = next(p for p in plan if "utt004" in p.utt_ids)
    with pytest.raises(CacheOverflowError, match=r"utt004: layer 2 has \|x\| up to 70000.*--dtype float32"):
        w.write_part(part, {u: feats[u] for u in part.utt_ids})
    assert part in w.pending() and not (tmp_path / f"c.zarr/parts/p{part.index:05d}").exists()
    cache32 = build(tmp_path / "c32.zarr", feats, "float32")
    assert cache32.read("utt004")[1, 2, 3] == 70000.0


def test_nonfinite_and_bad_shapes_rejected(tmp_path):
    feats = make_features(4)
    plan = make_plan(feats, part_frames=10_000)
    w = CacheWriter.create_or_open(tmp_path / "c.zarr", make_meta(), plan)
    bad = dict(feats)
    bad["utt001"] = bad["utt001"].copy()
    bad["utt001"][2, 0, 0] = np.nan
    with pytest.raises(CacheError, match="utt001: the encoder produced NaN/inf at layer 5"):
        w.write_part(plan[0], bad)
    with pytest.raises(CacheError, match=r"utt000: features have shape \(2, "):
        w.write_part(plan[0], {**feats, "utt000": feats["utt000"][:2]})
    with pytest.raises(CacheError, match="no features and no skip record"):
        w.write_part(plan[0], {u: feats[u] for u in list(feats)[1:]})
    with pytest.raises(CacheError, match="incomplete"):
        w.finalize()


def test_skipped_recorded(tmp_path):
    feats = make_features(10)
    cache = build(tmp_path / "c.zarr", feats, skip={"utt003", "utt007"})
    assert cache.skipped == [{"utt_id": "utt003", "reason": "too short"}, {"utt_id": "utt007", "reason": "too short"}]
    assert cache.metadata["skipped"] == cache.skipped and cache.metadata["num_utterances"] == 8
    assert "utt003" not in cache.utterance_ids()
    with pytest.raises(CacheError, match="utt003 was skipped during extraction \\(too short\\)"):
        cache.read("utt003")
    # a part whose utterances were all skipped is still complete
    one = {"a": feats["utt000"], "b": feats["utt001"]}
    plan = plan_parts([("a", "train", 30), ("b", "train", 30)], 48, target_bytes=48 * 30)
    w = CacheWriter.create_or_open(tmp_path / "d.zarr", make_meta(), plan)
    w.write_part(plan[0], {}, [{"utt_id": "a", "reason": "empty audio"}])
    w.write_part(plan[1], {"b": one["b"]})
    c = w.finalize()
    assert c.utterance_ids() == ["b"] and c.skipped[0]["utt_id"] == "a"


def test_pending_by_rank_and_finalize_idempotent(tmp_path):
    feats = make_features(20)
    plan = make_plan(feats)
    w = CacheWriter.create_or_open(tmp_path / "c.zarr", make_meta(), plan)
    r0, r1 = w.pending(0, 2), w.pending(1, 2)
    assert [p.index for p in r0] == list(range(0, len(plan), 2)) and [p.index for p in r1] == list(range(1, len(plan), 2))
    for part in r1 + r0:                      # order of completion does not matter
        w.write_part(part, {u: feats[u] for u in part.utt_ids})
    before = store_files(tmp_path / "c.zarr")
    c1 = w.finalize()
    files1 = store_files(tmp_path / "c.zarr")
    c2 = CacheWriter.create_or_open(tmp_path / "c.zarr", make_meta(), plan).finalize()
    assert store_files(tmp_path / "c.zarr") == files1 and set(files1) - set(before) == {"index/zarr.json"}
    assert c1.utterance_ids() == c2.utterance_ids()


# ---------------------------------------------------------------- resume

def test_resume_after_part_left_without_marker(tmp_path, monkeypatch):
    feats = make_features(20)
    ref = tmp_path / "ref.zarr"
    build(ref, feats)
    path = tmp_path / "c.zarr"
    plan = make_plan(feats)
    w = CacheWriter.create_or_open(path, make_meta(), plan)

    import phonecli.cache.writer as writer_mod
    real = writer_mod.CacheWriter._write

    def crash_before_marker(self, index, data, scales, marker):
        if index == 2:    # data written, then "killed" before the completion marker
            writer_mod._create_single_chunk_array(self.store, writer_mod.data_key(index), data)
            raise KeyboardInterrupt
        return real(self, index, data, scales, marker)

    monkeypatch.setattr(writer_mod.CacheWriter, "_write", crash_before_marker)
    with pytest.raises(KeyboardInterrupt):
        for part in w.pending():
            w.write_part(part, {u: feats[u] for u in part.utt_ids})
    monkeypatch.setattr(writer_mod.CacheWriter, "_write", real)

    assert (path / "parts/p00002/data/c/0/0/0").exists() and not (path / "done/p00002").exists()
    partial = FeatureCache.open(path)
    assert not partial.is_complete and partial.complete_parts == [0, 1]
    assert not set(plan[2].utt_ids) & set(partial.utterance_ids())
    with pytest.raises(CacheError, match=r"parts are incomplete \(p00002"):
        w.finalize()
    w2 = CacheWriter.create_or_open(path, make_meta(), plan)
    assert [p.index for p in w2.pending()] == list(range(2, len(plan)))
    for part in w2.pending():
        w2.write_part(part, {u: feats[u] for u in part.utt_ids})
    w2.finalize()
    assert store_files(path) == store_files(ref)


KILL_SCRIPT = textwrap.dedent("""
    import sys, time, numpy as np
    sys.path.insert(0, {tests!r})
    import phonecli.cache.writer as wm
    from test_cache import make_features, make_meta, make_plan
    mode, path = sys.argv[1], sys.argv[2]
    feats = make_features(20)
    real = wm._create_single_chunk_array
    def hooked(store, key, data):
        if key == wm.data_key(2):
            if mode == "torn":             # die while the chunk is half written
                arr = real(store, key, np.zeros_like(data))
                chunk = store.root / key / "c/0/0/0"
                chunk.write_bytes(data.tobytes()[: data.nbytes // 2])
            else:                          # die after the data, before the marker
                arr = real(store, key, data)
            print("KILLME", flush=True)
            time.sleep(60)
        return real(store, key, data)
    wm._create_single_chunk_array = hooked
    w = wm.CacheWriter.create_or_open(path, make_meta("int8"), make_plan(feats, "int8"))
    for part in w.pending():
        w.write_part(part, {{u: feats[u] for u in part.utt_ids}})
    w.finalize()
""")


@pytest.mark.parametrize("mode", ["after-data", "torn"])
def test_resume_after_sigkill_mid_write_part(tmp_path, mode):
    feats = make_features(20)
    ref = tmp_path / "ref.zarr"
    build(ref, feats, "int8")
    path = tmp_path / "c.zarr"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.format(tests=str(Path(__file__).parent)))
    proc = subprocess.Popen([sys.executable, str(script), mode, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "KILLME"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    partial = FeatureCache.open(path)
    assert partial.complete_parts == [0, 1] and not partial.is_complete
    w = CacheWriter.create_or_open(path, make_meta("int8"), make_plan(feats, "int8"))
    assert w.pending()[0].index == 2
    for part in w.pending():
        w.write_part(part, {u: feats[u] for u in part.utt_ids})
    resumed = w.finalize()
    assert store_files(path) == store_files(ref)          # bit-identical data, scales, markers, index
    from phonecli.cache.verify import verify_cache
    assert verify_cache(str(path)) == []
    assert all(np.array_equal(resumed.read(u), FeatureCache.open(ref).read(u)) for u in feats)


# ---------------------------------------------------------------- plan, dataset, sampler

def test_plan_parts_deterministic_and_bounded():
    items = [(f"u{i}", "train", 100 + 37 * (i % 5)) for i in range(50)]
    a = plan_parts(items, bytes_per_frame=10, target_bytes=1000 * 10)
    assert a == plan_parts(items, bytes_per_frame=10, target_bytes=1000 * 10)
    assert [u for p in a for u in p.utt_ids] == [u for u, _, _ in items]
    assert all(sum(p.est_frames) <= 1000 for p in a) and [p.index for p in a] == list(range(len(a)))
    big = plan_parts([("x", "train", 5000), ("y", "test", 10)], 10, target_bytes=1000)
    assert [p.utt_ids for p in big] == [["x"], ["y"]] and big[1].splits == ["test"]
    with pytest.raises(ValueError, match="twice"):
        plan_parts([("x", "train", 1), ("x", "dev", 1)], 10)


def test_length_bucket_sampler():
    from phonecli.cache.dataset import LengthBucketSampler

    rng = np.random.default_rng(0)
    frames = rng.integers(20, 400, size=200).tolist() + [1500]
    s = LengthBucketSampler(frames, batch_frames=1000, shuffle=True, seed=7)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(len(frames)))
    for b in batches:
        assert len(b) * max(frames[i] for i in b) <= 1000 or len(b) == 1
    assert [200] in batches                                      # the over-long one alone, not dropped
    assert list(LengthBucketSampler(frames, 1000, True, 7)) == batches     # deterministic by seed
    assert list(LengthBucketSampler(frames, 1000, True, 8)) != batches
    s.set_epoch(1)
    assert list(s) != batches and len(s) == len(list(s))
    plain = list(LengthBucketSampler(frames, 1000, shuffle=False, seed=0))
    assert [frames[b[0]] for b in plain] == sorted(frames[b[0]] for b in plain)
    pad = sum(len(b) * max(frames[i] for i in b) for b in plain) / sum(frames)
    assert pad < 1.1                                             # sorted buckets -> little padding
    r0 = list(LengthBucketSampler(frames, 1000, True, 7, num_replicas=2, rank=0))
    r1 = list(LengthBucketSampler(frames, 1000, True, 7, num_replicas=2, rank=1))
    assert len(r0) == len(r1) and {i for b in r0 + r1 for i in b} == set(range(len(frames)))


def test_feature_dataset_with_dataloader(tmp_path):
    import torch
    from torch.utils.data import DataLoader

    from phonecli.cache.dataset import FeatureDataset, LengthBucketSampler, pad_collate

    feats = make_features(20)
    cache = build(tmp_path / "c.zarr", feats, "float32")
    for preload in (False, True):
        ds = FeatureDataset(cache, "train", layers=[5], preload=preload)
        assert len(ds) == len(cache.utterance_ids("train"))
        u, x = ds[0]
        assert u == cache.utterance_ids("train")[0] and torch.equal(x, torch.from_numpy(feats[u][[2]]))
        sampler = LengthBucketSampler(ds.frame_counts, batch_frames=80, shuffle=True, seed=0)
        seen = []
        for ids, batch, lengths in DataLoader(ds, batch_sampler=sampler, collate_fn=pad_collate):
            assert batch.shape == (len(ids), 1, int(lengths.max()), DIM)
            assert batch.shape[0] * batch.shape[2] <= 80 or len(ids) == 1
            for k, uid in enumerate(ids):
                assert torch.equal(batch[k, :, : lengths[k]], torch.from_numpy(feats[uid][[2]]))
                assert (batch[k, :, lengths[k]:] == 0).all()
            seen += ids
        assert sorted(seen) == sorted(ds.utt_ids)


def test_pickle_for_workers_and_require_complete(tmp_path):
    import pickle

    feats = make_features(10)
    cache = build(tmp_path / "c.zarr", feats)
    cache.read("utt000")                                    # memmaps now open
    blob = pickle.dumps(cache)
    assert len(blob) < 50_000                               # metadata + index, never the data
    clone = pickle.loads(blob)
    assert all(np.array_equal(clone.read(u), cache.read(u)) for u in feats)

    w = build(tmp_path / "half.zarr", feats, finalize=False)
    (tmp_path / "half.zarr/done/p00001/zarr.json").unlink()
    assert not FeatureCache.open(tmp_path / "half.zarr").is_complete
    with pytest.raises(CacheError, match=r"is incomplete \(\d+/\d+ parts written\).*re-run"):
        FeatureCache.open(tmp_path / "half.zarr", require_complete=True)
    assert [p.index for p in w.pending()] == [1]


def test_two_concurrent_writers_equal_one(tmp_path):
    """Two workers (like torchrun ranks) open a fresh store at once and write disjoint parts."""
    from concurrent.futures import ThreadPoolExecutor

    feats = make_features(24, seed=5)
    ref = tmp_path / "ref.zarr"
    build(ref, feats)
    path = tmp_path / "c.zarr"
    plan = make_plan(feats)

    def rank(r: int) -> int:
        w = CacheWriter.create_or_open(path, make_meta(), plan)
        mine = w.pending(r, 2)
        for part in mine:
            w.write_part(part, {u: feats[u] for u in part.utt_ids})
        return len(mine)

    with ThreadPoolExecutor(2) as pool:
        counts = list(pool.map(rank, [0, 1]))
    assert sum(counts) == len(plan) and min(counts) > 0
    CacheWriter.create_or_open(path, make_meta(), plan).finalize()
    assert store_files(path) == store_files(ref)
