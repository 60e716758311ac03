"""Probes over cached features: heads end to end on the bundled sample corpus (real fbank cache),
learning vs a shuffled-label control, determinism, posterior re-creation, streaming, errors, CLI, sweep."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from phonecli.data.phones import VOCAB
from phonecli.probe import load_probe, recompute_posteriors, train_probe
from phonecli.probe.features import ArrayStream, FeatureSource, length_batches
from phonecli.errors import LayerSpecError
from phonecli.probe.train import ProbeError
from phonecli.runs import Run

FAST = dict(epochs=2, patience=2, progress=False)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small heads gain little from a second intra-op thread, and on a busy machine (other suites running)
    spinning OpenMP threads made these tests up to 10x slower; restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def sample_fbank(tmp_path_factory):
    """(manifest dir, fbank cache path) of the bundled espeak sample corpus, through the real prepare + extract."""
    from phonecli.data.prepare import prepare_corpus
    from phonecli.extract.runner import extract_features

    root = tmp_path_factory.mktemp("probe_sample")
    prepare_corpus("sample", root / "data")
    cache = extract_features("fbank", root / "data", root / "cache", device="cpu", progress=False)
    return root / "data", cache


def write_cache(path, feats, splits, meta, **over):
    """A real cache holding ``feats`` ``{utt: (L, T, D) float32}`` via plan_parts + CacheWriter."""
    from phonecli.cache import CacheWriter, plan_parts

    md = {**meta, **over}
    layers, dim = md["layers"], md["dim"]
    md["layer_info"] = [{"index": i, "name": f"l{i}", "frame_rate": md["frame_rate"], "note": ""} for i in layers]
    plan = plan_parts([(u, splits[u], x.shape[1]) for u, x in feats.items()], len(layers) * dim * 2)
    w = CacheWriter.create_or_open(path, md, plan)
    for part in w.pending():
        w.write_part(part, {u: feats[u] for u in part.utt_ids}, [])
    w.finalize()
    return path


SMALL = {"train": 40, "dev": 10, "test": 10}


@pytest.fixture(scope="session")
def small_fbank(sample_fbank, tmp_path_factory):
    """A 40/10/10-utterance fbank cache of the sample corpus (same corpus_id), for tests that only need
    the mechanics: ``(data dir, cache path, {utt: (1, T, 80)}, {utt: split}, metadata)``."""
    from phonecli.cache import FeatureCache

    data, cache = sample_fbank
    fc = FeatureCache.open(cache)
    ids = [u for s, n in SMALL.items() for u in fc.utterance_ids(s)[:n]]
    feats = dict(zip(ids, (x.astype(np.float32) for x in fc.read_many(ids))))
    splits = {u: fc.split_of(u) for u in ids}
    path = write_cache(tmp_path_factory.mktemp("small") / "fbank.zarr", feats, splits, dict(fc.metadata))
    return data, path, feats, splits, dict(fc.metadata)


@pytest.fixture(scope="session")
def tiny_streams(tiny_corpus):
    """In-memory fbank-like features for the tiny corpus: ``(features, splits, corpus_id)``."""
    from phonecli.data.manifest import Manifest

    m = Manifest.load(tiny_corpus)
    rng = np.random.default_rng(0)
    feats = {u.utt_id: rng.standard_normal((3, int(u.duration * 50), 16)).astype(np.float32) for u in m}
    return feats, {u.utt_id: u.split for u in m}, m.corpus_id


def test_length_batches_bounded_and_deterministic():
    frames = list(np.random.default_rng(1).integers(10, 300, size=200))
    b1 = length_batches(frames, 1000, shuffle=True, seed=3)
    assert b1 == length_batches(frames, 1000, shuffle=True, seed=3)
    assert b1 != length_batches(frames, 1000, shuffle=True, seed=4)
    assert sorted(i for b in b1 for i in b) == list(range(200))
    assert all(max(frames[i] for i in b) * len(b) <= 1000 for b in b1)


@pytest.mark.parametrize("head", ["linear", "mlp", "weighted", "transformer"])
def test_each_head_trains_and_posteriors_recreate(small_fbank, tmp_path, head, device):
    data, cache, *_ = small_fbank
    run = train_probe(cache, data, tmp_path / head, head=head, device=device, **FAST)
    info = Run.open(run.path).info
    assert info["kind"] == "probe" and info["config"]["head"] == head
    assert info["config"]["device"] == device
    assert info["sources"][0]["cache"] == str(cache) and info["sources"][0]["fingerprint"].startswith("fbank-")
    assert info["sources"][0]["corpus_id"] == info["corpus_id"]
    assert info["sources"][0]["layers"] == [0] and info["frame_rate"] == 100.0
    assert info["config"]["context"] == (0 if head == "transformer" else 4)  # weight-free default
    log = run.read_log()
    assert [r["epoch"] for r in log] == [1, 2] and all(np.isfinite(r["dev_per"]) for r in log)
    assert {"train_loss", "dev_loss", "dev_per", "seconds"} <= set(log[0])
    assert info["selection"]["epoch"] == min(log, key=lambda r: (round(r["dev_per"], 6), r["dev_loss"]))["epoch"]
    from phonecli.cache import FeatureCache

    fc = FeatureCache.open(cache)
    for split in ("train", "dev", "test"):
        post = run.read_posteriors(split)
        assert list(post) == fc.utterance_ids(split)
        u = next(iter(post))
        assert post[u].shape == (fc.num_frames(u), len(VOCAB))
        np.testing.assert_allclose(np.exp(post[u]).sum(-1), 1.0, atol=1e-4)
    again = recompute_posteriors(run.path, "test", device=device)
    saved = run.read_posteriors("test")
    assert list(again) == list(saved)
    for u in saved:
        np.testing.assert_allclose(again[u], saved[u], atol=2e-4)
    if head == "weighted":
        lw = json.loads((run.path / "layer_weights.json").read_text())["streams"][0]
        assert lw["layers"] == [0] and lw["weights"] == pytest.approx([1.0])
        assert (run.path / "layer_weights.png").stat().st_size > 1000


@pytest.mark.slow
def test_probe_beats_shuffled_label_control(sample_fbank, tmp_path):
    data, cache = sample_fbank
    from joblib import Parallel, delayed

    kw = dict(head="mlp", epochs=12, patience=12, progress=False)  # real MLP: ~48% after 11 epochs, control ~85%
    # the two runs are independent: one process each (loky gives each worker one thread on 2 cores)
    real, ctrl = Parallel(n_jobs=2)(delayed(_selected_per)(cache, data, tmp_path / name, control=c, **kw)
                                    for name, c in (("real", None), ("ctrl", "shuffled-labels")))
    assert real < ctrl - 20, (real, ctrl)
    assert json.loads((tmp_path / "ctrl" / "run.json").read_text())["config"]["control"] == "shuffled-labels"


def _selected_per(*args, **kwargs) -> float:
    return train_probe(*args, **kwargs).info["selection"]["value"]


def test_fixed_seed_identical_weights_stream_equals_ram(small_fbank, tmp_path):
    from safetensors.torch import load_file

    data, cache, *_ = small_fbank
    a = train_probe(cache, data, tmp_path / "a", head="linear", seed=3, memory="ram", **FAST)
    b = train_probe(cache, data, tmp_path / "b", head="linear", seed=3, memory="stream", **FAST)
    c = train_probe(cache, data, tmp_path / "c", head="linear", seed=4, memory="ram", **FAST)
    assert a.info["config"]["in_ram"] and not b.info["config"]["in_ram"]
    wa, wb, wc = (load_file(str(r.weights_path)) for r in (a, b, c))
    assert set(wa) == set(wb)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert [r["train_loss"] for r in a.read_log()] == [r["train_loss"] for r in b.read_log()]
    # standardisation statistics travel with the weights
    assert wa["norms.0.mean"].shape == (1, 80) and float(wa["norms.0.std"].min()) > 0


def test_weighted_head_learns_layer_weights(tiny_corpus, tiny_streams, tmp_path):
    feats, splits, cid = tiny_streams
    stream = ArrayStream(feats, splits, frame_rate=50, corpus_id=cid, stored_layers=[0, 4, 8], layers="weighted")
    run = train_probe(FeatureSource([stream]), tiny_corpus, tmp_path / "w", head="weighted", layer_norm=True, **FAST)
    lw = json.loads((run.path / "layer_weights.json").read_text())["streams"][0]
    assert lw["layers"] == [0, 4, 8] and sum(lw["weights"]) == pytest.approx(1.0)
    assert lw["weights"] != pytest.approx([1 / 3] * 3, abs=1e-7)  # moved from the uniform start
    model = load_probe(run)
    assert model.layer_weights()[0] == pytest.approx(lw["weights"])
    again = recompute_posteriors(run, "dev", features=FeatureSource([stream]))
    for u, x in run.read_posteriors("dev").items():
        np.testing.assert_allclose(again[u], x, atol=2e-4)


def test_error_empty_split(tiny_streams, tiny_corpus, tmp_path):
    feats, splits, cid = tiny_streams
    no_dev = {u: x for u, x in feats.items() if splits[u] != "dev"}
    src = FeatureSource([ArrayStream(no_dev, splits, frame_rate=50, corpus_id=cid, name="nodev.zarr")])
    with pytest.raises(ProbeError, match="nodev.zarr: the dev split is empty"):
        train_probe(src, tiny_corpus, tmp_path / "r", **FAST)
    assert not (tmp_path / "r").exists()  # nothing written for a refused run


def test_error_missing_layers(sample_fbank, tmp_path):
    data, cache = sample_fbank
    with pytest.raises(LayerSpecError, match=r"fbank.zarr: layer\(s\) 3 not available \(available: 0\)"):
        train_probe(cache, data, tmp_path / "r", layers="3", **FAST)


def test_error_wrong_manifest(sample_fbank, tiny_corpus, tmp_path):
    _, cache = sample_fbank
    with pytest.raises(ProbeError, match="corpus_id .* != manifest"):
        train_probe(cache, tiny_corpus, tmp_path / "r", **FAST)


def test_ctc_infeasible_utterances_counted_and_skipped(tiny_streams, tiny_corpus, tmp_path, caplog):
    from phonecli.data.manifest import Manifest

    feats, splits, cid = tiny_streams
    m = Manifest.load(tiny_corpus)
    short = [u.utt_id for u in m.split("train")[:2]] + [m.split("dev")[0].utt_id]
    cut = {u: (x[:, :1] if u in short else x) for u, x in feats.items()}  # 1 frame < 2+ phones
    src = FeatureSource([ArrayStream(cut, splits, frame_rate=50, corpus_id=cid)])
    with caplog.at_level(logging.WARNING, logger="phonecli.probe"):
        run = train_probe(src, tiny_corpus, tmp_path / "r", **FAST)
    assert "skipping 2 train utterance(s) with more phones than frames" in caplog.text
    assert "skipping 1 dev utterance(s)" in caplog.text
    skipped = run.info["config"]["skipped_ctc_infeasible"]
    assert sorted(skipped["train"]) == sorted(short[:2]) and skipped["dev"] == short[2:]
    assert set(short) <= set(run.read_posteriors("train")) | set(run.read_posteriors("dev"))  # still decoded


def test_cli_probe(small_fbank, tmp_path):
    from click.testing import CliRunner

    from phonecli.cli import main

    data, cache, *_ = small_fbank
    out = tmp_path / "cli"
    res = CliRunner().invoke(main, ["probe", "--features", str(cache), "--data", str(data), "--head", "linear",
                                    "--epochs", "1", "--seed", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == str(out)
    assert Run.open(out).info["config"]["seed"] == 1
    bad = CliRunner().invoke(main, ["probe", "--features", str(cache), "--data", str(data), "--layers", "5",
                                    "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0
    assert "layer(s) 5 not available" in bad.output and "Traceback" not in bad.output
    missing = CliRunner().invoke(main, ["probe", "--features", str(tmp_path / "nope.zarr"), "--data", str(data),
                                        "--out", str(tmp_path / "x")])
    assert missing.exit_code != 0 and "no such cache" in missing.output


def test_linear_head_starts_at_blank_prior():
    """The linear/weighted heads start at the CTC blank prior (no frequent-phone plateau); other heads do not."""
    from phonecli.probe.heads import ProbeHead

    cfg = {"shapes": [[1, 8]], "weighted": [False], "context": 0, "vocab": len(VOCAB)}
    torch.manual_seed(0)
    lin = ProbeHead({**cfg, "head": "linear"})
    lin.set_blank_prior(0.9)
    prior = torch.softmax(lin.body[-1].bias, 0)
    assert prior[0].item() == pytest.approx(0.9, abs=1e-6)
    assert torch.allclose(prior[1:], torch.full((len(VOCAB) - 1,), 0.1 / (len(VOCAB) - 1)))
    lp = lin([torch.zeros(1, 1, 5, 8)], torch.tensor([5]))  # standardised silence: output = the prior
    assert torch.exp(lp[0, :, 0]).mean().item() == pytest.approx(0.9, abs=0.05)
    torch.manual_seed(0)
    mlp = ProbeHead({**cfg, "head": "mlp"})
    before = mlp.body[-1].bias.clone()
    mlp.set_blank_prior(0.9)
    assert torch.equal(mlp.body[-1].bias, before)


def test_transformer_head_attention_equals_torch_multihead_attention_and_drops_out():
    """The written-out self-attention of the transformer head (thread-stable softmax backward) computes what
    torch's own ``nn.MultiheadAttention`` computes with the same weights and padding mask, and in training
    drops attention weights (the dropout the head had to give up while it called SDPA)."""
    from phonecli.probe.heads import ThreadStableEncoderLayer

    torch.manual_seed(0)
    layer = ThreadStableEncoderLayer(32, nhead=4, dim_feedforward=64, dropout=0.0, attention_dropout=0.5,
                                     batch_first=True, norm_first=True).eval()
    x = torch.randn(3, 11, 32)
    pad = torch.arange(11)[None, :] >= torch.tensor([11, 7, 2])[:, None]
    ref, _ = torch.nn.MultiheadAttention.forward(layer.self_attn, x, x, x, key_padding_mask=pad, need_weights=False)
    got = layer._sa_block(x, None, pad)
    assert torch.allclose(got, ref, atol=1e-6)
    additive = torch.zeros(pad.shape).masked_fill(pad, float("-inf"))   # the form nn.TransformerEncoder passes
    assert torch.allclose(layer._sa_block(x, None, additive), ref, atol=1e-6)
    layer.train()
    a, b = layer._sa_block(x, None, pad), layer._sa_block(x, None, pad)
    assert not torch.allclose(a, b) and not torch.allclose(a, ref)


def test_run_records_that_matrix_products_are_thread_independent():
    """MKL's strict CNR mode is on in any process that imported phonecli before its first matrix product
    (the mode that makes sgemm's bits independent of the thread count), and the thread record says so."""
    from phonecli.threads import blas_reproducible, record

    if not torch.backends.mkl.is_available():
        pytest.skip("this torch has no MKL: no CNR mode to check")
    assert blas_reproducible() is True and record()["blas_strict_cnr"] is True


# --------------------------------------------------------------------------------- int8 stays int8 until the device

@pytest.fixture(scope="session")
def int8_and_float16(small_fbank, tmp_path_factory):
    """The same features written as an int8 and as a float16 cache: ``(data dir, int8 path, float16 path)``."""
    data, _, feats, splits, meta = small_fbank
    root = tmp_path_factory.mktemp("int8")
    q = write_cache(root / "fbank.int8.zarr", feats, splits, meta, dtype="int8")
    h = write_cache(root / "fbank.float16.zarr", feats, splits, meta, dtype="float16")
    return data, q, h


def test_int8_minibatch_moves_at_most_55_percent_of_float16_bytes(int8_and_float16, device):
    from phonecli.cache import FeatureCache, Int8Features
    from phonecli.probe.features import features_nbytes
    from phonecli.probe.train import collate

    _, q, h = int8_and_float16
    for memory in ("stream", "ram"):
        s8, s16 = open_source_pair(q, h, memory)
        ids = s8.utterance_ids("train")
        assert ids == s16.utterance_ids("train")
        batches = [[ids[i] for i in b] for b in length_batches([s8.num_frames(u) for u in ids], 2000,
                                                               shuffle=True, seed=0)]
        reader = FeatureCache.open(q)
        for b in batches:
            got8, got16 = s8.read_many(b), s16.read_many(b)
            assert all(isinstance(x[0], Int8Features) and x[0].values.dtype == np.int8 for x in got8)
            assert all(x[0].dtype == np.float16 for x in got16)
            ratio = features_nbytes(got8) / features_nbytes(got16)
            assert ratio <= 0.55, (memory, len(b), ratio)
            # dequantised on the device = the reader's CPU dequantisation, bit for bit
            (x8,), lengths = collate(got8, device)
            assert x8.device.type == device and x8.dtype == torch.float32
            for i, (u, ref) in enumerate(zip(b, reader.read_many(b))):
                np.testing.assert_array_equal(x8[i, :, : int(lengths[i])].cpu().numpy(), ref)
        if memory == "ram":
            assert s8.in_ram and s8.streams[0].nbytes("train") <= 0.55 * s16.streams[0].nbytes("train")


def open_source_pair(q, h, memory: str):
    from phonecli.probe.features import open_source

    s8, s16 = open_source(q, memory=memory), open_source(h, memory=memory)
    if memory == "ram":
        s8.preload(["train"])
        s16.preload(["train"])
    return s8, s16


def test_int8_probe_on_device_equals_the_dequantised_features(int8_and_float16, tmp_path, device):
    from phonecli.cache import FeatureCache

    data, q, _ = int8_and_float16
    run = train_probe(q, data, tmp_path / "int8", head="mlp", device=device, **FAST)
    fc = FeatureCache.open(q)
    deq = ArrayStream({u: fc.read(u) for u in fc.utterance_ids()}, {u: fc.split_of(u) for u in fc.utterance_ids()},
                      frame_rate=fc.frame_rate, corpus_id=fc.corpus_id)
    on_int8 = recompute_posteriors(run.path, "test", device=device)
    on_float32 = recompute_posteriors(run.path, "test", FeatureSource([deq]), device=device)
    assert list(on_int8) == list(on_float32) == fc.utterance_ids("test")
    for u in on_int8:
        if device == "cpu":
            np.testing.assert_array_equal(on_int8[u], on_float32[u])
        else:  # same inputs; cuBLAS may still pick another reduction order between two calls
            np.testing.assert_allclose(on_int8[u], on_float32[u], rtol=0, atol=1e-5)
