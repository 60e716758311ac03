"""The extraction runner, `phonecli extract` and the fbank baseline, against real audio and real stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from phonecli.cli import main
from phonecli.data.manifest import Manifest
from phonecli.errors import ConfigError, ExtractionError

FBANK_KW = dict(num_mel_bins=80, frame_length=25.0, frame_shift=10.0, dither=0.0, snip_edges=True,
                sample_frequency=16000.0)


def kaldi_fbank_reference(wav_16k: np.ndarray) -> np.ndarray:
    """torchaudio's Kaldi fbank called directly on int16-scaled samples: (frames, 80)."""
    import torch
    from torchaudio.compliance import kaldi

    x = torch.from_numpy(np.asarray(wav_16k, dtype=np.float32))[None] * 32768.0
    return kaldi.fbank(x, **FBANK_KW).numpy()


def snip_edges_frames(samples: int) -> int:
    return 0 if samples < 400 else 1 + (samples - 400) // 160


def run_cli(args: list[str]):
    return CliRunner().invoke(main, ["extract", *args], catch_exceptions=False)


# --------------------------------------------------------------------------------- fbank values


@pytest.fixture(scope="module")
def fbank_cache(tiny_corpus, tmp_path_factory):
    from phonecli.cache import FeatureCache
    from phonecli.extract.runner import extract_features

    path = extract_features("fbank", tiny_corpus, tmp_path_factory.mktemp("cache"), device="cpu")
    return FeatureCache.open(path)


def test_fbank_cache_equals_direct_kaldi_fbank(fbank_cache, tiny_corpus):
    m = Manifest.load(tiny_corpus)
    assert fbank_cache.is_complete
    assert fbank_cache.utterance_ids() == [u.utt_id for u in m]
    assert fbank_cache.metadata["corpus_id"] == m.corpus_id
    assert (fbank_cache.frame_rate, fbank_cache.dim, fbank_cache.layers, fbank_cache.dtype) == (100.0, 80, [0], "float16")
    for u in m:
        wav, sr = sf.read(m.audio_path(u), dtype="float32")  # independent of load_audio
        assert sr == 16000
        ref = kaldi_fbank_reference(wav)
        got = fbank_cache.read(u.utt_id)
        assert got.shape == (1, snip_edges_frames(len(wav)), 80) == (1, *ref.shape)
        assert fbank_cache.num_frames(u.utt_id) == snip_edges_frames(len(wav))
        np.testing.assert_allclose(got[0].astype(np.float32), ref, rtol=1e-3, atol=1e-2)


def test_fbank_adapter_frame_formula():
    from phonecli.encoders.registry import get_adapter

    a = get_adapter("fbank")
    for n in (399, 400, 401, 559, 560, 16000, 16001, 23456):
        assert a.num_frames(n) == snip_edges_frames(n)
        if n >= 400:
            out = a.forward([np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1])[0]
            assert out.shape == (1, snip_edges_frames(n), 80) and out.dtype == np.float32
    assert a.fingerprint() == get_adapter("fbank").fingerprint()  # settings are the identity


def test_float32_cache_is_exact_and_named_with_suffix(tiny_corpus, tmp_path):
    from phonecli.cache import FeatureCache
    from phonecli.extract.runner import extract_features

    m = Manifest.load(tiny_corpus)
    path = extract_features("fbank", tiny_corpus, tmp_path, dtype="float32", splits="dev,test", device="cpu")
    assert path == tmp_path / m.corpus_id / "fbank.float32.dev+test.zarr"
    c = FeatureCache.open(path)
    assert c.dtype == "float32" and c.utterance_ids("train") == []
    for u in m.split("dev") + m.split("test"):
        wav, _ = sf.read(m.audio_path(u), dtype="float32")
        np.testing.assert_allclose(c.read(u.utt_id)[0], kaldi_fbank_reference(wav), rtol=1e-5, atol=1e-4)


def test_batched_equals_one_by_one(tiny_corpus, tmp_path):
    from phonecli.cache import FeatureCache
    from phonecli.extract.runner import extract_features

    big = FeatureCache.open(extract_features("fbank", tiny_corpus, tmp_path / "a", batch_seconds=1000, device="cpu"))
    one = FeatureCache.open(extract_features("fbank", tiny_corpus, tmp_path / "b", batch_seconds=0.01, device="cpu"))
    assert big.utterance_ids() == one.utterance_ids()
    for u in big.utterance_ids():
        np.testing.assert_array_equal(big.read(u), one.read(u))


def test_make_batches_caps_padded_seconds_and_groups_unpadded():
    from phonecli.extract.batching import make_batches

    lengths = [("a", 100), ("b", 300), ("c", 300), ("d", 250), ("e", 1000), ("f", 90)]
    padded = make_batches(lengths, max_samples=600, padding_safe=True)
    assert padded == [["e"], ["b", "c"], ["d", "a"], ["f"]]  # 3 * 250 > 600
    for b in padded:
        n = {k: v for k, v in lengths}
        assert len(b) == 1 or len(b) * max(n[u] for u in b) <= 600
    unpadded = make_batches(lengths, max_samples=10_000, padding_safe=False)
    assert unpadded == [["e"], ["b", "c"], ["d"], ["a"], ["f"]]
    assert sorted(u for b in unpadded for u in b) == sorted(k for k, _ in lengths)


def test_layer_selection_and_names():
    from phonecli.encoders.base import LayerInfo
    from phonecli.errors import LayerSpecError
    from phonecli.extract.runner import cache_location, select_layers

    infos = [LayerInfo(i, f"l{i}", 50.0) for i in range(13)]
    assert select_layers("all", infos) == list(range(13))
    assert select_layers("0,9-12,4", infos) == [0, 4, 9, 10, 11, 12]
    assert select_layers("last", infos) == [12]
    with pytest.raises(LayerSpecError, match=r"layer\(s\) 13 not available \(available: 0-12\)"):
        select_layers("3,13", infos)
    with pytest.raises(LayerSpecError, match="'x' is not understood"):
        select_layers("x", infos)
    with pytest.raises(LayerSpecError, match="not accepted here"):
        select_layers("weighted", infos)
    p = cache_location("root", "cid", "hubert large", layers=[9, 10, 11, 12], all_layers=list(range(13)),
                       dtype="int8", splits=["train", "dev", "test"], all_splits=["train", "dev", "test"])
    assert p == Path("root/cid/hubert_large.L9-12.int8.zarr")
    url = cache_location("s3://bkt/cache/", "cid", "fbank", layers=[0], all_layers=[0], dtype="float16",
                         splits=["test"], all_splits=["train", "test"])
    assert url == "s3://bkt/cache/cid/fbank.test.zarr"


# --------------------------------------------------------------------------------- CLI


def test_cli_last_line_is_cache_path_and_summary(tiny_corpus, tmp_path):
    from phonecli.cache import FeatureCache

    res = run_cli(["--model", "fbank", "--data", str(tiny_corpus), "--cache", str(tmp_path), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    path = Path(lines[-1])
    assert path == tmp_path / Manifest.load(tiny_corpus).corpus_id / "fbank.zarr"
    assert FeatureCache.open(path).is_complete
    assert "real-time factor" in lines[-2] and "cache size" in lines[-2] and "24 utterances" in lines[-2]
    again = run_cli(["--model", "fbank", "--data", str(tiny_corpus), "--cache", str(tmp_path), "--device", "cpu"])
    assert again.exit_code == 0 and again.stdout.strip().splitlines()[-1] == str(path)
    assert "already complete" in again.stdout


def test_cli_unknown_model_lists_valid_names(tiny_corpus, tmp_path):
    res = run_cli(["--model", "hubert-huge", "--data", str(tiny_corpus), "--cache", str(tmp_path)])
    assert res.exit_code != 0
    msg = res.stderr.strip().splitlines()[-1]
    assert "unknown model 'hubert-huge'" in msg and "fbank" in msg and "wavlm-base-plus" in msg
    assert not (tmp_path / Manifest.load(tiny_corpus).corpus_id).exists()


def test_model_dir_whose_class_mismatches_family(tiny_corpus, tmp_path):
    d = tmp_path / "not-a-hubert"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "hubert", "architectures": ["WavLMModel"]}))
    res = run_cli(["--model", str(d), "--data", str(tiny_corpus), "--cache", str(tmp_path / "c")])
    assert res.exit_code != 0
    msg = res.stderr.strip().splitlines()[-1]
    assert "not-a-hubert" in msg and "WavLMModel" in msg and "does not hold a Hubert model" in msg
    assert "model_type 'hubert'" in msg


def test_other_corpus_into_same_store_is_refused(tiny_corpus, tmp_path):
    from conftest import make_tiny_corpus

    other = make_tiny_corpus(tmp_path / "other", n_train=3, n_dev=3, n_test=3, seed=5)
    store = tmp_path / "store.zarr"
    ok = run_cli(["--model", "fbank", "--data", str(tiny_corpus), "--out", str(store), "--device", "cpu"])
    assert ok.exit_code == 0 and ok.stdout.strip().splitlines()[-1] == str(store)
    res = run_cli(["--model", "fbank", "--data", str(tmp_path / "other"), "--out", str(store), "--device", "cpu"])
    assert res.exit_code != 0
    msg = res.stderr.strip().splitlines()[-1]
    assert "corpus_id" in msg and other.corpus_id in msg and "refusing to mix" in msg


# --------------------------------------------------------------------------------- bad input


@pytest.fixture()
def bad_corpus(tmp_path):
    """9 utterances; 0 stereo, 1 at 44.1 kHz, 4 missing, 5 empty, 7 NaN (tests use one part per utterance)."""
    import torch
    import torchaudio.functional as AF

    from conftest import make_tiny_corpus

    root = tmp_path / "bad"
    m = make_tiny_corpus(root, n_train=3, n_dev=3, n_test=3, seed=1)
    ids = [u.utt_id for u in m]
    mono = {}
    for u in m:
        mono[u.utt_id], _ = sf.read(m.audio_path(u), dtype="float32")
    # stereo: left = original, right = half of it -> downmix is 0.75 x original
    sf.write(m.audio_path(ids[0]), np.stack([mono[ids[0]], 0.5 * mono[ids[0]]], 1), 16000, subtype="FLOAT")
    # 44.1 kHz copy of the original
    hi = AF.resample(torch.from_numpy(mono[ids[1]]), 16000, 44100).numpy()
    sf.write(m.audio_path(ids[1]), hi, 44100, subtype="FLOAT")
    m[ids[1]].sample_rate, m[ids[1]].num_samples = 44100, len(hi)
    m.audio_path(ids[4]).unlink()
    sf.write(m.audio_path(ids[5]), np.zeros(0, np.float32), 16000)
    nan = mono[ids[7]].copy()
    nan[100] = np.nan
    sf.write(m.audio_path(ids[7]), nan, 16000, subtype="FLOAT")
    # the manifest describes the files as they now are (as `data prepare` would), except the missing one
    _reprepare(m, [ids[i] for i in (0, 1, 5, 7)])
    m.save(root)
    return root, ids, mono, hi


def _reprepare(m: Manifest, utt_ids: list[str]) -> None:
    """What `data prepare` records for these files now: content hash and sample count."""
    from phonecli.data.audio import file_hash

    for u in utt_ids:
        m[u].audio_sha256 = file_hash(m.audio_path(u))
        m[u].num_samples = sf.info(str(m.audio_path(u))).frames


def test_bad_inputs_skip_records_reasons_and_fixes_the_rest(bad_corpus, tmp_path, monkeypatch):
    from phonecli.cache import FeatureCache

    root, ids, mono, hi = bad_corpus
    res = run_cli(["--model", "fbank", "--data", str(root), "--cache", str(tmp_path), "--on-error", "skip",
                   "--device", "cpu", "--part-bytes", "1"])
    assert res.exit_code == 0, res.output
    c = FeatureCache.open(res.stdout.strip().splitlines()[-1])
    assert c.is_complete and "3 skipped" in res.stdout
    reasons = {s["utt_id"]: s["reason"] for s in c.skipped}
    assert set(reasons) == {ids[4], ids[5], ids[7]}
    assert "audio file not found" in reasons[ids[4]]
    assert "empty audio" in reasons[ids[5]]
    assert "NaN" in reasons[ids[7]]
    assert c.utterance_ids() == [u for u in ids if u not in reasons]
    assert f"skipping utterance {ids[4]}" in res.stderr
    # stereo is downmixed (channel mean) and 44.1 kHz is resampled to 16 kHz
    np.testing.assert_allclose(c.read(ids[0])[0].astype(np.float32), kaldi_fbank_reference(0.75 * mono[ids[0]]),
                               rtol=1e-3, atol=2e-2)
    import torch
    import torchaudio.functional as AF

    back = AF.resample(torch.from_numpy(hi), 44100, 16000).numpy()
    assert c.num_frames(ids[1]) == snip_edges_frames(len(back))
    np.testing.assert_allclose(c.read(ids[1])[0].astype(np.float32), kaldi_fbank_reference(back), rtol=1e-3, atol=2e-2)


@pytest.mark.parametrize("which, expected", [(4, "audio file not found"), (5, "empty audio"),
                                             (7, "NaN/inf samples")])
def test_bad_input_fail_names_utterance_and_keeps_complete_parts(bad_corpus, tmp_path, monkeypatch, which, expected):
    root, ids, mono, hi = bad_corpus
    m = Manifest.load(root)
    bad = {4, 5, 7} - {which}
    for i in bad:  # leave only the utterance under test broken (and re-prepare the restored files)
        sf.write(m.audio_path(ids[i]), mono[ids[i]], 16000)
    _reprepare(m, [ids[i] for i in bad])
    m.save(root)
    args = ["--model", "fbank", "--data", str(root), "--cache", str(tmp_path), "--device", "cpu", "--part-bytes", "1"]
    res = run_cli(args)
    assert res.exit_code != 0
    msg = res.stderr.strip().splitlines()[-1]
    assert msg.startswith(f"Error: utterance {ids[which]}: ") and expected in msg and "rerun" in msg
    assert str(m.audio_path(ids[which])) in msg
    # the user restores the file
    sf.write(m.audio_path(ids[which]), mono[ids[which]], 16000)
    again = run_cli(args)
    if which == 4:   # the file the manifest was made from is back: the rerun only does the missing parts
        assert again.exit_code == 0, again.output
        assert "resuming" in again.stderr and "parts already complete" in again.stderr
    else:            # new content: refused until `data prepare` runs again (then a new corpus_id, a new cache)
        assert again.exit_code != 0
        line = again.stderr.strip().splitlines()[-1]
        assert str(m.audio_path(ids[which])) in line and "re-run `phonecli data prepare`" in line


def test_too_short_for_the_model_is_one_line(tmp_path):
    from conftest import make_tiny_corpus

    root = tmp_path / "short"
    m = make_tiny_corpus(root, n_train=3, n_dev=0, n_test=0, seed=2)
    u = m.utterances[0]
    sf.write(m.audio_path(u), np.full(1700, 0.01, np.float32), 16000)  # > load_audio's 0.1 s
    _reprepare(m, [u.utt_id])
    m.save(root)
    from phonecli.extract.runner import UtteranceError, extract_features

    # 0.106 s is above load_audio's 0.1 s floor and gives fbank frames
    path = extract_features("fbank", root, tmp_path / "c", device="cpu")
    from phonecli.cache import FeatureCache

    assert FeatureCache.open(path).num_frames(u.utt_id) == snip_edges_frames(1700)
    sf.write(m.audio_path(u), np.full(1500, 0.01, np.float32), 16000)  # < 0.1 s
    _reprepare(m, [u.utt_id])
    m.save(root)
    with pytest.raises(UtteranceError, match=rf"utterance {u.utt_id}: .*too short"):
        extract_features("fbank", root, tmp_path / "d", device="cpu")


# --------------------------------------------------------------------------------- a real transformers encoder


@pytest.fixture(scope="module")
def tiny_hubert_dir(tmp_path_factory):
    """A tiny random layer-norm HubertModel (padding-safe) saved with save_pretrained."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    d = tmp_path_factory.mktemp("models") / "tiny-hubert"
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                       feat_extract_norm="layer", do_stable_layer_norm=True)
    torch.manual_seed(0)
    HubertModel(cfg).eval().save_pretrained(d)
    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True).save_pretrained(d)
    return d


def test_hubert_layers_equal_direct_forward_batched_and_one_by_one(tiny_corpus, tiny_hubert_dir, tmp_path, device):
    import torch
    from transformers import HubertModel

    from phonecli.cache import FeatureCache
    from phonecli.extract.runner import extract_features

    m = Manifest.load(tiny_corpus)
    kw = dict(layers="0,2", splits="dev,test", device=device)
    batched = extract_features(str(tiny_hubert_dir), tiny_corpus, tmp_path / "a", batch_seconds=30, **kw)
    assert batched == tmp_path / "a" / m.corpus_id / "tiny-hubert.L0_2.dev+test.zarr"
    single = extract_features(str(tiny_hubert_dir), tiny_corpus, tmp_path / "b", batch_seconds=0.01, **kw)
    a, b = FeatureCache.open(batched), FeatureCache.open(single)
    assert a.layers == [0, 2] and a.dim == 32 and a.frame_rate == 50.0
    model = HubertModel.from_pretrained(tiny_hubert_dir, dtype=torch.float32).eval().to(device)
    assert a.utterance_ids() == [u.utt_id for u in m.split("dev") + m.split("test")]
    for u in m.split("dev") + m.split("test"):
        wav, _ = sf.read(m.audio_path(u), dtype="float32")
        with torch.inference_mode():
            out = model(torch.from_numpy(wav)[None].to(device), output_hidden_states=True)
        # layer 2 = N: the encoder output after its final LayerNorm (pre-LN model), as in transformers 4.x
        ref = np.stack([out.hidden_states[0][0].cpu().numpy(), out.last_hidden_state[0].cpu().numpy()])
        expected_frames = int(model._get_feat_extract_output_lengths(torch.tensor(len(wav))))
        assert a.read(u.utt_id).shape == (2, expected_frames, 32) == ref.shape
        np.testing.assert_allclose(a.read(u.utt_id).astype(np.float32), ref, rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(a.read(u.utt_id).astype(np.float32), b.read(u.utt_id).astype(np.float32),
                                   rtol=2e-3, atol=2e-3)


def rel_rms(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Relative RMS error per layer of ``(layers, frames, dim)`` arrays: ||x - ref|| / ||ref||."""
    return np.sqrt(((x - ref) ** 2).sum(axis=(1, 2)) / (ref ** 2).sum(axis=(1, 2)))


@pytest.mark.parametrize("precision, bound", [("float16", 0.01), ("bfloat16", 0.05)])
def test_half_precision_extraction_is_autocast_and_agrees_with_float32(tiny_corpus, tiny_hubert_dir, tmp_path,
                                                                       device, precision, bound):
    """--precision runs the forward under torch.autocast (the model's own mixed-precision path): the cache
    equals a direct autocast forward up to float16 storage, and each layer stays within ``bound`` relative
    RMS error of the float32 extraction; the precision is part of the cache's identity and name."""
    import torch
    from transformers import HubertModel

    from phonecli.cache import FeatureCache
    from phonecli.extract.runner import extract_features

    m = Manifest.load(tiny_corpus)
    kw = dict(layers="all", splits="test", device=device, dtype="float32")
    full = FeatureCache.open(extract_features(str(tiny_hubert_dir), tiny_corpus, tmp_path, **kw))
    half_path = extract_features(str(tiny_hubert_dir), tiny_corpus, tmp_path, precision=precision, **kw)
    assert half_path.name == f"tiny-hubert.float32.amp-{precision}.test.zarr"
    half = FeatureCache.open(half_path)
    assert half.metadata["settings"]["precision"] == f"{precision} (torch.autocast)"
    assert full.metadata["settings"]["precision"] == "float32"
    model = HubertModel.from_pretrained(tiny_hubert_dir, dtype=torch.float32).eval().to(device)
    for u in m.split("test"):
        x, ref32 = half.read(u.utt_id), full.read(u.utt_id)
        err = rel_rms(x, ref32)
        assert (err < bound).all() and (err > 0).all(), err
        wav, _ = sf.read(m.audio_path(u), dtype="float32")
        with torch.inference_mode(), torch.autocast(device_type=device, dtype=getattr(torch, precision)):
            out = model(torch.from_numpy(wav)[None].to(device), output_hidden_states=True)
        # the last layer is the encoder output after its final LayerNorm (pre-LN model)
        hs = [*out.hidden_states[:-1], out.last_hidden_state]
        direct = np.stack([h[0].float().cpu().numpy() for h in hs])
        # batching (padding + mask) moves half-precision roundings a little: 10x closer than to float32
        assert (rel_rms(x, direct) < err / 10).all(), (rel_rms(x, direct), err)
    with pytest.raises(ConfigError, match=r"precision \(--precision\): 'half' is not one of float32, float16, bfloat16"):
        extract_features(str(tiny_hubert_dir), tiny_corpus, tmp_path, precision="half", **kw)


# --------------------------------------------------------------------------------- values, locations


def test_float16_overflow_is_one_line_or_a_recorded_skip(tiny_corpus, tmp_path, monkeypatch):
    from phonecli.cache import FeatureCache
    from phonecli.encoders.adapters import fbank
    from phonecli.extract.runner import UtteranceError, extract_features

    m = Manifest.load(tiny_corpus)
    loud = m.split("test")[1]
    loud_len = len(sf.read(m.audio_path(loud), dtype="float32")[0])
    orig = fbank.Adapter.forward

    def forward(self, waves):  # an encoder whose activations blow past float16 on one utterance
        return [o * 1e4 if len(w) == loud_len else o for w, o in zip(waves, orig(self, waves))]

    monkeypatch.setattr(fbank.Adapter, "forward", forward)
    kw = dict(splits="test", device="cpu")
    with pytest.raises(UtteranceError, match=rf"utterance {loud.utt_id}: hidden state 0 reaches .* > 65504 "
                                             r"\(float16 max\); rerun with --dtype float32"):
        extract_features("fbank", tiny_corpus, tmp_path / "a", **kw)
    c = FeatureCache.open(extract_features("fbank", tiny_corpus, tmp_path / "b", on_error="skip", **kw))
    assert [s["utt_id"] for s in c.skipped] == [loud.utt_id] and "float16" in c.skipped[0]["reason"]
    assert loud.utt_id not in c.utterance_ids() and len(c.utterance_ids()) == 5
    c32 = FeatureCache.open(extract_features("fbank", tiny_corpus, tmp_path / "c", dtype="float32", **kw))
    assert np.abs(c32.read(loud.utt_id)).max() > 65504 and not c32.skipped


def test_fsspec_url_cache_root(tiny_corpus, tmp_path):
    from phonecli.cache import FeatureCache
    from phonecli.extract import extract_features

    m = Manifest.load(tiny_corpus)
    url = extract_features("fbank", tiny_corpus, f"file://{tmp_path}", splits="test", device="cpu")
    assert url == f"file://{tmp_path}/{m.corpus_id}/fbank.test.zarr"
    local = FeatureCache.open(tmp_path / m.corpus_id / "fbank.test.zarr")
    mem = FeatureCache.open(extract_features("fbank", tiny_corpus, "memory://phonecli-test", splits="test",
                                             device="cpu"))
    assert mem.utterance_ids() == local.utterance_ids() == [u.utt_id for u in m.split("test")]
    for u in local.utterance_ids():
        np.testing.assert_array_equal(mem.read(u), local.read(u))


def test_cli_missing_manifest_and_bad_options(tmp_path):
    res = run_cli(["--model", "fbank", "--data", str(tmp_path / "nope"), "--cache", str(tmp_path)])
    assert res.exit_code != 0 and "no manifest here" in res.stderr and "phonecli data prepare" in res.stderr
    from conftest import make_tiny_corpus

    make_tiny_corpus(tmp_path / "c", n_train=3, n_dev=0, n_test=0)
    res = run_cli(["--model", "fbank", "--data", str(tmp_path / "c"), "--cache", str(tmp_path), "--splits", "dev"])
    assert res.exit_code != 0 and "the manifest has splits train" in res.stderr
    res = run_cli(["--model", "fbank", "--data", str(tmp_path / "c"), "--cache", str(tmp_path), "--layers", "3"])
    assert res.exit_code != 0 and "fbank (hidden states): layer(s) 3 not available (available: 0)" in res.stderr


def test_int8_cache_within_half_a_quantization_step(tiny_corpus, tmp_path):
    from phonecli.cache import FeatureCache
    from phonecli.extract.runner import extract_features

    m = Manifest.load(tiny_corpus)
    path = extract_features("fbank", tiny_corpus, tmp_path, dtype="int8", splits="test", device="cpu")
    assert path.name == "fbank.int8.test.zarr"
    c = FeatureCache.open(path)
    for u in m.split("test"):
        ref = kaldi_fbank_reference(sf.read(m.audio_path(u), dtype="float32")[0])
        got = c.read(u.utt_id)[0]
        assert got.dtype == np.float32
        step = np.abs(ref).max(axis=0) / 127  # per channel
        assert (np.abs(got - ref) <= step / 2 + 1e-3).all()
