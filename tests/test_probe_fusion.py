"""Early fusion (2 caches concatenated per frame, frame rates aligned), gated fusion and the all-single layer
sweep, on real Zarr caches derived from the sample corpus' fbank cache and written through the real CacheWriter."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from phonecli.probe import recompute_posteriors, train_probe
from phonecli.probe.features import FeatureSourceError, open_source
from phonecli.probe.train import collapsed_side
from phonecli.runs import Run
from test_probe import one_torch_thread, sample_fbank, small_fbank, write_cache  # noqa: F401  (shared fixtures)

FAST = dict(epochs=2, patience=2, progress=False)


@pytest.fixture(scope="module")
def base(small_fbank):
    """(root with ``data`` = the manifest dir, {utt: (1, T, 80)} fbank at 100 fps, {utt: split}, cache metadata)."""
    data, _, feats, splits, meta = small_fbank
    return data.parent, feats, splits, meta


def pool2(x: np.ndarray) -> np.ndarray:
    t = x.shape[1] // 2
    return x[:, :2 * t].reshape(x.shape[0], t, 2, x.shape[2]).mean(axis=2)


@pytest.fixture(scope="module")
def caches(base, tmp_path_factory):
    """a: fbank 100 fps; b: a 2-layer 50 fps stream (pooled fbank, pooled fbank squared) of the same corpus."""
    _, feats, splits, meta = base
    root = tmp_path_factory.mktemp("fusion")
    a = write_cache(root / "a.zarr", feats, splits, meta)
    fb = {u: np.concatenate([pool2(x), pool2(x) ** 2 / 100], axis=0) for u, x in feats.items()}
    b = write_cache(root / "b.zarr", fb, splits, meta, model="pooled", model_id="pooled", frame_rate=50.0,
                    layers=[0, 1], weights_fingerprint="pooled-1")
    return a, b


def test_early_fusion_concatenates_aligned_frames(base, caches, tmp_path, device):
    root, feats, _, _ = base
    a, b = caches
    run = train_probe([a, b], root / "data", tmp_path / "early", head="linear", layers=["0", "1"], device=device,
                      **FAST)
    info = run.info
    assert info["kind"] == "early-fusion" and info["frame_rate"] == 100.0
    assert [s["cache"] for s in info["sources"]] == [str(a), str(b)]
    assert [s["layers"] for s in info["sources"]] == [[0], [1]]
    assert info["config"]["head_config"]["shapes"] == [[1, 80], [1, 80]]
    post = run.read_posteriors("dev")
    for u, lp in post.items():  # 50 fps frames repeated twice, then trimmed to the shorter stream
        assert lp.shape[0] == min(feats[u].shape[1], 2 * (feats[u].shape[1] // 2))
    again = recompute_posteriors(run, "dev", device=device)
    for u in post:
        np.testing.assert_allclose(again[u], post[u], atol=2e-4)


def test_alignment_repeat_and_pool_values(caches):
    a, b = caches
    rep = open_source([a, b], ["0", "0"], align="repeat")
    pool = open_source([a, b], ["0", "0"], align="pool")
    assert rep.frame_rate == 100.0 and pool.frame_rate == 50.0
    u = rep.utterance_ids("dev")[0]
    (xa, xb), = rep.read_many([u])
    np.testing.assert_array_equal(xb[:, 0], xb[:, 1])          # each 50 fps frame used twice
    (pa, pb), = pool.read_many([u])
    assert pa.shape[1] == pb.shape[1] == pool.num_frames(u)
    np.testing.assert_allclose(pa[0, 0], xa[0, :2].astype(np.float32).mean(0), rtol=1e-3, atol=1e-2)


def test_alignment_keeps_int8_until_the_device(base, caches, tmp_path):
    from phonecli.cache import FeatureCache, Int8Features

    _, feats, splits, meta = base
    a, _ = caches
    fb = {u: np.concatenate([pool2(x), pool2(x) ** 2 / 100], axis=0) for u, x in feats.items()}
    b8 = write_cache(tmp_path / "b8.zarr", fb, splits, meta, model="pooled", model_id="pooled", frame_rate=50.0,
                     layers=[0, 1], weights_fingerprint="pooled-1", dtype="int8")
    ref = FeatureCache.open(b8)
    u = ref.utterance_ids("dev")[0]
    (xa, xb), = open_source([a, b8], ["0", "1"], align="repeat").read_many([u])
    assert isinstance(xb, Int8Features) and xb.values.dtype == np.int8 and xb.shape == xa.shape == (1, xa.shape[1], 80)
    np.testing.assert_array_equal(xb.dequantize(), np.repeat(ref.read(u, [1]), 2, axis=1)[:, : xa.shape[1]])
    # pooling the faster int8 stream dequantises (a mean is not int8); the slower one stays int8
    a8 = write_cache(tmp_path / "a8.zarr", feats, splits, meta, dtype="int8")
    (pa, pb), = open_source([a8, b8], ["0", "1"], align="pool").read_many([u])
    assert pa.dtype == np.float32 and isinstance(pb, Int8Features)
    np.testing.assert_allclose(pa, pool2(FeatureCache.open(a8).read(u))[:, : pb.shape[1]], rtol=1e-6)


def test_early_fusion_refuses_mismatched_caches(base, caches, tmp_path):
    root, feats, splits, meta = base
    a, _ = caches
    other = write_cache(tmp_path / "other.zarr", feats, splits, meta, corpus_id="ffffffffffffffff")
    with pytest.raises(FeatureSourceError, match=r"caches from different corpora .*ffffffffffffffff"):
        train_probe([a, other], root / "data", tmp_path / "r1", **FAST)
    drop = sorted(u for u in feats if splits[u] == "dev")[0]
    fewer = write_cache(tmp_path / "fewer.zarr", {u: x for u, x in feats.items() if u != drop}, splits, meta)
    with pytest.raises(FeatureSourceError, match=f"caches hold different dev utterances .*{drop}"):
        train_probe([a, fewer], root / "data", tmp_path / "r2", **FAST)
    longer = write_cache(tmp_path / "longer.zarr", {u: np.concatenate([x, x], 1) for u, x in feats.items()}, splits,
                         meta)
    with pytest.raises(FeatureSourceError, match="frame counts disagree after alignment"):
        train_probe([a, longer], root / "data", tmp_path / "r3", **FAST)
    assert not any((tmp_path / r).exists() for r in ("r1", "r2", "r3"))


def test_gated_fusion_logs_gate_stats(base, caches, tmp_path, caplog, device):
    root, *_ = base
    a, b = caches
    with caplog.at_level(logging.INFO, logger="phonecli.probe"):
        run = train_probe([a, b], root / "data", tmp_path / "gated", head="gated", layers=["0", "0"], device=device,
                          **FAST)
    assert run.info["kind"] == "gated-fusion"
    log = run.read_log()
    for rec in log:
        g = rec["gate"]
        assert 0 <= g["mean"] <= 1 and g["std"] >= 0 and 0 <= g["near_0"] <= 1 and 0 <= g["near_1"] <= 1
    assert caplog.text.count("gate (1 = ") == len(log)
    assert set(run.info["gate"]) == {"mean", "std", "near_0", "near_1"}
    with pytest.raises(Exception, match="exactly 2 caches"):
        train_probe([a], root / "data", tmp_path / "g1", head="gated", **FAST)


def test_gate_collapse_detected_and_warned(base, caches, tmp_path, caplog, monkeypatch):
    assert collapsed_side({"mean": 0.99, "std": 0.01, "near_0": 0.0, "near_1": 0.97}) == 0
    assert collapsed_side({"mean": 0.01, "std": 0.01, "near_0": 0.93, "near_1": 0.0}) == 1
    assert collapsed_side({"mean": 0.5, "std": 0.3, "near_0": 0.4, "near_1": 0.4}) is None
    root, *_ = base
    a, b = caches
    import phonecli.probe.heads as heads

    orig = heads.ProbeHead.__init__

    def stuck_gate(self, config):  # the seed's failure: the gate saturates on the second encoder
        orig(self, config)
        if config["head"] == "gated":
            self.gate.weight.data.zero_()
            self.gate.bias.data.fill_(-30.0)

    monkeypatch.setattr(heads.ProbeHead, "__init__", stuck_gate)
    with caplog.at_level(logging.WARNING, logger="phonecli.probe"):
        run = train_probe([a, b], root / "data", tmp_path / "stuck", head="gated", layers=["0", "0"], lr=1e-5,
                          **FAST)
    assert "the gate collapsed onto one cache (100% of dev frames use only " + str(b) in caplog.text
    assert all(r["gate_collapsed"] == str(b) for r in run.read_log())
    assert Run.open(run.path).info["gate"]["near_0"] == 1.0


def test_all_single_sweep_table_and_plot(base, caches, tmp_path):
    """One probe per stored layer of a 2-layer cache: per-layer runs, CSV + Markdown table, PNG plot."""
    import csv

    from click.testing import CliRunner

    from phonecli.cli import main

    root, *_ = base
    _, b = caches
    out = tmp_path / "sweep"
    res = CliRunner().invoke(main, ["probe", "--features", str(b), "--data", str(root / "data"), "--layers",
                                    "all-single", "--epochs", "2", "--patience", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == str(out)
    rows = list(csv.DictReader(open(out / "layers.csv")))
    assert [int(r["layer"]) for r in rows] == [0, 1]
    for r in rows:
        run = Run.open(out / r["run"])
        assert run.info["sources"][0]["layers"] == [int(r["layer"])]
        assert float(r["dev_per"]) == pytest.approx(run.info["selection"]["value"], abs=1e-3)
    md = (out / "layers.md").read_text()
    assert md.count("\n") == 4 and "**(best)**" in md
    assert (out / "layers.png").stat().st_size > 1000
