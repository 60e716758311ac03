"""`phonecli cache ls|info|verify|export|rm` via CliRunner, and verify catching real corruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from phonecli.cache import CacheWriter, FeatureCache, plan_parts
from phonecli.cli import main

LAYERS = [0, 3]
DIM = 6


def build(path, dtype="float16", n=12, seed=0, skip=()):
    rng = np.random.default_rng(seed)
    feats = {f"u{i:02d}": rng.standard_normal((len(LAYERS), int(rng.integers(4, 30)), DIM)).astype(np.float32)
             for i in range(n)}
    splits = {u: ("train", "dev", "test")[i % 3] for i, u in enumerate(feats)}
    bpf = len(LAYERS) * DIM * np.dtype(dtype).itemsize
    plan = plan_parts([(u, splits[u], x.shape[1]) for u, x in feats.items()], bpf, target_bytes=bpf * 50)
    meta = dict(model="tiny-model", model_id="org/tiny", weights_fingerprint="w1", frame_rate=50.0,
                layers=LAYERS, dim=DIM, dtype=dtype, corpus_id="corpusX", settings={})
    w = CacheWriter.create_or_open(path, meta, plan)
    for part in w.pending():
        sk = [{"utt_id": u, "reason": "empty audio"} for u in part.utt_ids if u in skip]
        w.write_part(part, {u: feats[u] for u in part.utt_ids if u not in skip}, sk)
    return w.finalize(), feats


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def chunk(path: Path, part: int = 1) -> Path:
    return path / f"parts/p{part:05d}/data/c/0/0/0"


def test_verify_ok_then_catches_corruption(tmp_path):
    path = tmp_path / "c.zarr"
    build(path)
    r = run("cache", "verify", str(path))
    assert r.exit_code == 0 and "ok:" in r.output

    # NaN injected into part 1 (the crc is recomputed so only the finiteness check can catch it)
    import zlib
    m_file = path / "done/p00001/zarr.json"
    doc = json.loads(m_file.read_text())
    raw = bytearray(chunk(path).read_bytes())
    raw[0:2] = np.array([np.nan], dtype="<f2").tobytes()
    chunk(path).write_bytes(bytes(raw))
    doc["attributes"]["crc32"] = zlib.crc32(bytes(raw)) & 0xFFFFFFFF
    m_file.write_text(json.dumps(doc))
    r = run("cache", "verify", str(path))
    assert r.exit_code == 1
    first_utt = doc["attributes"]["utt_ids"][0]
    assert f"part p00001: non-finite values at layer 0 (utterance {first_utt})" in r.output

    # a deleted chunk in part 0
    chunk(path, 0).unlink()
    r = run("cache", "verify", str(path))
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert r.exit_code == 1 and len(lines) == 2
    assert any("part p00000: data chunk missing" in l for l in lines)
    with pytest.raises(Exception, match="chunk of part p00000 is missing"):
        FeatureCache.open(path).read(json.loads((path / "done/p00000/zarr.json").read_text())["attributes"]["utt_ids"][0])


def test_verify_catches_bitflip_index_mismatch_and_incomplete(tmp_path):
    path = tmp_path / "c.zarr"
    build(path, "int8")
    raw = bytearray(chunk(path, 2).read_bytes())
    raw[5] ^= 0x01                                      # silent bit flip: only the checksum sees it
    chunk(path, 2).write_bytes(bytes(raw))
    idx = path / "index/zarr.json"
    doc = json.loads(idx.read_text())
    doc["attributes"]["frames"][3] += 1                 # index disagrees with the part markers
    idx.write_text(json.dumps(doc))
    (path / "done/p00003/zarr.json").unlink()           # a part that never completed
    r = run("cache", "verify", str(path))
    assert r.exit_code == 1
    assert "part p00002: data checksum mismatch" in r.output
    assert "part p00003 is incomplete (no completion marker)" in r.output
    # fix the index alone; the other two remain
    doc["attributes"]["frames"][3] -= 1
    idx.write_text(json.dumps(doc))
    (path / "done/p00003/zarr.json").write_text("{}")
    r = run("cache", "verify", str(path))
    assert "p00003" in r.output


def test_verify_index_mismatch_and_repair_then_resume(tmp_path):
    path = tmp_path / "c.zarr"
    cache, feats = build(path)
    idx = path / "index/zarr.json"
    doc = json.loads(idx.read_text())
    doc["attributes"]["offsets"][1] += 2
    idx.write_text(json.dumps(doc))
    r = run("cache", "verify", str(path))
    assert r.exit_code == 1 and "consolidated index disagrees with the part markers" in r.output

    raw = bytearray(chunk(path, 1).read_bytes())
    raw[7] ^= 0x40
    chunk(path, 1).write_bytes(bytes(raw))
    r = run("cache", "verify", "--repair", str(path))
    assert r.exit_code == 1 and "removed the completion marker of 1 damaged part(s) (p00001)" in r.output
    again, _ = build(path)                              # the same extraction, resumed: redoes p00001 only
    assert run("cache", "verify", str(path)).exit_code == 0
    assert all(np.array_equal(again.read(u), feats[u].astype(np.float16)) for u in feats)


def test_export_hdf5_roundtrip(tmp_path):
    import h5py

    for dtype in ("float16", "int8"):
        path = tmp_path / f"{dtype}.zarr"
        cache, _ = build(path, dtype, skip={"u04"})
        out = tmp_path / f"{dtype}.h5"
        r = run("cache", "export", str(path), "--format", "hdf5", "--out", str(out))
        assert r.exit_code == 0 and r.output.strip().endswith(str(out))
        with h5py.File(out, "r") as f:
            assert f.attrs["format"] == "phonecli-cache-hdf5" and list(f.attrs["layers"]) == LAYERS
            assert json.loads(f.attrs["metadata"])["corpus_id"] == "corpusX"
            assert json.loads(f.attrs["skipped"]) == [{"utt_id": "u04", "reason": "empty audio"}]
            n = 0
            for split in ("train", "dev", "test"):
                for u in cache.utterance_ids(split):
                    ds = f[f"{split}/{u}"]
                    assert ds.attrs["num_frames"] == cache.num_frames(u)
                    assert ds.dtype == (np.float32 if dtype == "int8" else np.float16)
                    assert np.array_equal(ds[...], cache.read(u))
                    n += 1
            assert n == len(cache.utterance_ids()) == 11 and "u04" not in f["train"] and "u04" not in f["dev"]
        r = CliRunner().invoke(main, ["cache", "export", str(path), "--out", str(out)])
        assert r.exit_code != 0 and "already exists" in r.output
    r = run("cache", "export", str(tmp_path / "int8.zarr"), "--out", str(tmp_path / "l.h5"), "--splits", "test",
            "--layers", "3")
    with h5py.File(tmp_path / "l.h5", "r") as f:
        assert list(f) == ["test"] and f["test/u02"].shape[0] == 1


def test_ls_info_rm(tmp_path):
    root = tmp_path / "cache"
    build(root / "corpusX" / "tiny-model.zarr")
    build(root / "corpusX" / "tiny-model-int8.zarr", "int8", skip={"u01"})
    w = CacheWriter.create_or_open(root / "corpusY" / "half.zarr",
                                   dict(model="half", model_id="m", frame_rate=50.0, layers=[0], dim=2,
                                        dtype="float32", corpus_id="corpusY"),
                                   plan_parts([("a", "train", 5)], 8))
    (root / "unrelated").mkdir()
    (root / "unrelated" / "notes.txt").write_text("x")

    r = run("cache", "ls", str(root), "--json")
    rows = json.loads(r.output)
    assert [Path(x["path"]).name for x in rows] == ["tiny-model-int8.zarr", "tiny-model.zarr", "half.zarr"]
    by = {Path(x["path"]).name: x for x in rows}
    assert by["tiny-model.zarr"]["utterances"] == 12 and by["tiny-model-int8.zarr"]["utterances"] == 11
    assert by["tiny-model.zarr"]["complete"] and not by["half.zarr"]["complete"]
    assert by["tiny-model.zarr"]["dtype"] == "float16" and by["tiny-model.zarr"]["layers"] == 2
    assert by["tiny-model.zarr"]["size_bytes"] > 12 * 4 * 2 * DIM * 2
    r = run("cache", "ls", str(root))
    assert r.exit_code == 0 and "tiny-model" in r.output and "NO" in r.output

    r = run("cache", "info", str(root / "corpusX" / "tiny-model-int8.zarr"), "--json")
    info = json.loads(r.output)
    assert info["metadata"]["dtype"] == "int8" and info["complete"]
    assert {s: c["utterances"] for s, c in info["splits"].items()} == {"train": 4, "dev": 3, "test": 4}
    assert info["skipped"] == [{"utt_id": "u01", "reason": "empty audio"}]
    r = run("cache", "info", str(root / "corpusX" / "tiny-model.zarr"))
    assert "split train" in r.output and "complete    yes" in r.output
    r = CliRunner().invoke(main, ["cache", "info", str(root / "unrelated")])
    assert r.exit_code != 0 and "not a phonecli cache" in r.output

    r = CliRunner().invoke(main, ["cache", "rm", "--yes", str(root / "unrelated")])
    assert r.exit_code != 0 and "refusing to delete" in r.output and (root / "unrelated" / "notes.txt").exists()
    r = CliRunner().invoke(main, ["cache", "rm", str(root / "corpusX" / "tiny-model.zarr")], input="n\n")
    assert r.exit_code != 0 and (root / "corpusX" / "tiny-model.zarr").exists()
    r = run("cache", "rm", "--yes", str(root / "corpusX" / "tiny-model.zarr"))
    assert r.exit_code == 0 and not (root / "corpusX" / "tiny-model.zarr").exists()
    assert [Path(x["path"]).name for x in json.loads(run("cache", "ls", str(root), "--json").output)] == \
        ["tiny-model-int8.zarr", "half.zarr"]
    assert w.pending()


def test_cli_on_memory_url():
    url = "memory://cli-test/corp/m.zarr"
    build(url)
    r = run("cache", "verify", url)
    assert r.exit_code == 0, r.output
    info = json.loads(run("cache", "info", url, "--json").output)
    assert info["splits"]["dev"]["utterances"] == 4
    rows = json.loads(run("cache", "ls", "memory://cli-test", "--json").output)
    assert len(rows) == 1 and rows[0]["complete"] and rows[0]["path"].endswith("corp/m.zarr")
    assert FeatureCache.open(rows[0]["path"]).utterance_ids() == FeatureCache.open(url).utterance_ids()
