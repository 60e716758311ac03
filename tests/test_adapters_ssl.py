"""The raw-waveform SSL adapter (HuBERT, DistilHuBERT, WavLM, wav2vec 2.0, data2vec-audio).

Every model is a tiny random config of the real transformers class, saved with
``save_pretrained`` and loaded back by path (the Hub code path). The reference is always an
independent ``Model.from_pretrained(dir)(x, output_hidden_states=True)`` call on audio
normalised here with numpy, not through the adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as T

from phonecli.encoders.base import ExtractionError
from phonecli.encoders.registry import get_adapter, resolve

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
WAVLM = dict(num_buckets=32, max_bucket_distance=80)

# case -> (config class, class saved, config overrides, base class loaded, preprocessor_config
#          (None = none written), expected padding_safe, expected pre-LN encoder)
CASES = {
    "hubert-base": (T.HubertConfig, T.HubertModel, dict(feat_extract_norm="group"), T.HubertModel,
                    None, False, False),
    "distilhubert": (T.HubertConfig, T.HubertModel,
                     dict(feat_extract_norm="group", feat_proj_layer_norm=False, num_hidden_layers=2),
                     T.HubertModel, {"do_normalize": False, "return_attention_mask": False}, False, False),
    "hubert-large-ctc": (T.HubertConfig, T.HubertForCTC,
                         dict(feat_extract_norm="layer", do_stable_layer_norm=True, vocab_size=12),
                         T.HubertModel, {"do_normalize": True, "return_attention_mask": True}, True, True),
    "wavlm-base": (T.WavLMConfig, T.WavLMModel, dict(feat_extract_norm="group", **WAVLM), T.WavLMModel,
                   {"do_normalize": False, "return_attention_mask": True}, False, False),
    "wavlm-large": (T.WavLMConfig, T.WavLMModel,
                    dict(feat_extract_norm="layer", do_stable_layer_norm=True, **WAVLM), T.WavLMModel,
                    {"do_normalize": True, "return_attention_mask": True}, True, True),
    "wav2vec2-ctc": (T.Wav2Vec2Config, T.Wav2Vec2ForCTC,
                     dict(feat_extract_norm="layer", do_stable_layer_norm=True, vocab_size=12),
                     T.Wav2Vec2Model, {"do_normalize": True, "return_attention_mask": True}, True, True),
    "data2vec-audio": (T.Data2VecAudioConfig, T.Data2VecAudioModel,
                       dict(num_conv_pos_embeddings=5, conv_pos_kernel_size=5), T.Data2VecAudioModel,
                       {"do_normalize": True, "return_attention_mask": True}, False, False),
}
CASE_IDS = list(CASES)


def save_tiny(root: Path, case: str, seed: int = 0, preprocessor: dict | None | str = "case") -> Path:
    cfg_cls, save_cls, overrides, _, pp, _, _ = CASES[case]
    pp = pp if preprocessor == "case" else preprocessor
    torch.manual_seed(seed)
    model = save_cls(cfg_cls(**{**TINY, **overrides}))
    path = root / f"{case}-{seed}-{'pp' if pp else 'nopp'}"
    model.save_pretrained(path)
    if pp is not None:
        T.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, **pp).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ssl_models")
    return {case: save_tiny(root, case) for case in CASES}


@pytest.fixture(scope="module")
def adapters(dirs):
    return {case: get_adapter(str(path)) for case, path in dirs.items()}


def waves(lengths=(16000, 12345, 9000), seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(max(lengths)) / 16000
    base = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05  # DC offset: normalisation must remove it
    return [(base[:n] + 0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def reference(path: Path, wave: np.ndarray, normalize: bool):
    """Independent direct forward: ``(states, frames, dim)`` and the model output."""
    _, _, _, base_cls, _, _, _ = CASES[path.name.rsplit("-", 2)[0]]
    model = base_cls.from_pretrained(path, dtype=torch.float32).eval()
    x = wave.astype(np.float64)
    if normalize:  # Wav2Vec2FeatureExtractor's do_normalize, written out independently
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    with torch.no_grad():
        out = model(torch.tensor(x, dtype=torch.float32)[None], output_hidden_states=True)
    return torch.stack(out.hidden_states, 1)[0].numpy(), out, model


@pytest.mark.parametrize("case", CASE_IDS)
def test_forward_equals_direct_model_call(case, dirs, adapters):
    a = adapters[case]
    _, _, overrides, _, pp, _, pre_ln = CASES[case]
    normalize = pp["do_normalize"] if pp else overrides.get("feat_extract_norm", "layer") == "layer"
    w = waves((16000,))[0]
    (got,) = a.forward([w])
    ref, out, model = reference(dirs[case], w, normalize)
    n_states = model.config.num_hidden_layers + 1
    assert got.dtype == np.float32 and got.shape == (n_states, a.num_frames(16000), 32) == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # what a float16 cache stores
    np.testing.assert_allclose(got.astype(np.float16).astype(np.float32), ref, rtol=2e-3, atol=1e-4)
    assert a.settings["do_normalize"] is normalize
    assert a.settings["normalize_from"].startswith("preprocessor_config.json" if pp else "default for a")

    infos = a.layers()
    assert [li.index for li in infos] == list(range(n_states))
    assert all(li.frame_rate == 50.0 for li in infos) and a.frame_rate == 50.0
    last = torch.from_numpy(got[-1])
    if pre_ln:  # stored: the last layer BEFORE the encoder's final LayerNorm
        assert "pre final LayerNorm" in infos[-1].name
        assert not torch.allclose(last, out.last_hidden_state[0], atol=1e-3)
        with torch.no_grad():
            normed = model.encoder.layer_norm(last)
        torch.testing.assert_close(normed, out.last_hidden_state[0], rtol=1e-5, atol=1e-5)
    else:
        assert "= last_hidden_state" in infos[-1].name
        torch.testing.assert_close(last, out.last_hidden_state[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASE_IDS)
def test_frame_counts_follow_the_models_formula(case, adapters):
    a = adapters[case]
    lengths = (400, 401, 719, 720, 1600, 9999, 16000, 16321)
    outs = a.forward(waves(lengths))
    for n, o in zip(lengths, outs):
        formula = int(a.model._get_feat_extract_output_lengths(torch.tensor(n)))
        assert a.num_frames(n) == formula == o.shape[1], n
    assert [a.num_frames(n) for n in (400, 720, 16000, 16321)] == [1, 2, 49, 50]
    with pytest.raises(ExtractionError, match="too short .*399 samples"):
        a.forward([np.zeros(399, np.float32)])


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")  # torch, WavLM direct call
@pytest.mark.parametrize("case", CASE_IDS)
def test_padded_batch_equals_one_by_one(case, adapters):
    a = adapters[case]
    padding_safe = CASES[case][5]
    assert a.padding_safe is padding_safe
    ws = waves((16000, 12345, 9000, 12345))
    batch = a.forward(ws)
    single = [a.forward([w])[0] for w in ws]
    for b, s in zip(batch, single):
        np.testing.assert_allclose(b, s, rtol=1e-4, atol=1e-4)
    if not padding_safe:
        # The flag is needed: a padded batch with an attention mask changes the features.
        enc = a.feature_extractor(ws[:3], sampling_rate=16000, padding=True, return_attention_mask=True,
                                  return_tensors="pt")
        with torch.no_grad():
            out = a.model(enc["input_values"], attention_mask=enc["attention_mask"], output_hidden_states=True)
        padded = torch.stack(out.hidden_states, 1)[2, :, : a.num_frames(9000)].numpy()
        assert np.abs(padded - single[2]).max() > 1e-2
        assert "padding_safe" in a.settings and a.settings["padding_safe"] is False


def test_forctc_checkpoint_loads_its_encoder_weights(tmp_path):
    path = save_tiny(tmp_path, "wav2vec2-ctc", seed=3)
    ctc = T.Wav2Vec2ForCTC.from_pretrained(path, dtype=torch.float32).eval()
    a = get_adapter(str(path))
    assert type(a.model).__name__ == "Wav2Vec2Model"
    enc = ctc.wav2vec2.state_dict()
    got = a.model.state_dict()
    assert set(got) == set(enc)
    for k in enc:  # the checkpoint's tensors, not a fresh random init
        assert torch.equal(got[k], enc[k]), k
    w = waves((12000,))[0]
    x = (w - w.mean()) / np.sqrt(w.var() + 1e-7)
    with torch.no_grad():
        ref = torch.stack(ctc.wav2vec2(torch.from_numpy(x)[None], output_hidden_states=True).hidden_states, 1)[0]
    np.testing.assert_allclose(a.forward([w])[0], ref.numpy(), rtol=1e-5, atol=1e-5)


def test_hubert_forctc_encoder_weights(dirs, adapters):
    ctc = T.HubertForCTC.from_pretrained(dirs["hubert-large-ctc"], dtype=torch.float32)
    enc = ctc.hubert.state_dict()
    got = adapters["hubert-large-ctc"].model.state_dict()
    assert set(got) == set(enc) and all(torch.equal(got[k], enc[k]) for k in enc)


def test_missing_encoder_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    path = save_tiny(tmp_path, "hubert-base", seed=1)
    sd = load_file(path / "model.safetensors")
    dropped = [k for k in sd if k.startswith("encoder.layers.1.")]
    save_file({k: v for k, v in sd.items() if k not in dropped}, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ExtractionError) as e:
        get_adapter(str(path))
    msg = str(e.value)
    assert "\n" not in msg and f"{len(dropped)} encoder weights are missing" in msg and "random" in msg


def test_wrong_class_directory_is_one_clear_line(dirs):
    with pytest.raises(ExtractionError) as e:
        get_adapter(f"hubert-large={dirs['wavlm-large']}")
    msg = str(e.value)
    assert "\n" not in msg
    assert str(dirs["wavlm-large"]) in msg and "'wavlm'" in msg and "HubertModel" in msg and "hubert-large" in msg

    from phonecli.encoders.adapters.ssl import Adapter

    spec, _ = resolve("data2vec-large")
    with pytest.raises(ExtractionError, match="model_type 'wav2vec2'.*Data2VecAudioModel"):
        Adapter(spec, str(dirs["wav2vec2-ctc"]))


def test_unknown_name_lists_valid_names():
    with pytest.raises(ExtractionError) as e:
        get_adapter("hubret-large")
    msg = str(e.value)
    assert "\n" not in msg and "unknown model 'hubret-large'" in msg
    for name in ("hubert-large", "wavlm-base-plus", "xls-r-1b", "data2vec-large", "distilhubert"):
        assert name in msg


def test_registry_row_with_local_weights_uses_row_defaults(dirs, tmp_path, caplog):
    """NAME=DIR: the row's documented normalisation applies when DIR has no preprocessor_config."""
    path = save_tiny(tmp_path, "hubert-large-ctc", seed=5, preprocessor=None)
    w = waves((8000,))[0]
    for name, normalize in (("hubert-base", False), ("hubert-large", True)):
        a = get_adapter(f"{name}={path}")  # registry numbers (13 x 768) != tiny model's: logged
        assert a.spec.name == name and a.model_id == str(path.resolve())
        assert a.settings["do_normalize"] is normalize
        assert a.settings["normalize_from"] == f"registry row {name!r} (no preprocessor_config.json)"
        ref, _, _ = reference(path, w, normalize)
        np.testing.assert_allclose(a.forward([w])[0], ref, rtol=1e-5, atol=1e-5)
    caplog.clear()
    with caplog.at_level("WARNING", logger="phonecli.extract"):
        get_adapter(f"hubert-base={path}")
    assert "hubert-base: registry says 13 states x 768 but" in caplog.text and "has 3 x 32" in caplog.text
    # a preprocessor_config.json always wins over the row
    a = get_adapter(f"hubert-base={dirs['hubert-large-ctc']}")
    assert a.settings["do_normalize"] is True and a.settings["normalize_from"] == "preprocessor_config.json"


def test_revision_fingerprint_and_settings(dirs, adapters, tmp_path):
    a = adapters["wavlm-large"]
    assert a.revision is None and a.model_id == str(dirs["wavlm-large"].resolve())
    assert get_adapter(str(dirs["wavlm-large"]), revision="v2").revision is None  # ignored for a directory
    fp = a.fingerprint()
    assert len(fp) == 16 and fp == get_adapter(str(dirs["wavlm-large"])).fingerprint()
    other = get_adapter(str(save_tiny(tmp_path, "wavlm-large", seed=9)))
    assert other.fingerprint() != fp
    assert a.settings == {
        "class": "WavLMModel", "do_normalize": True, "normalize_from": "preprocessor_config.json",
        "feat_extract_norm": "layer", "pre_ln_encoder": True, "padding_safe": True,
        "last_state": "pre final LayerNorm",
    }
    json.dumps(a.settings)  # goes into the cache metadata


def test_bad_waveforms_are_refused(adapters):
    a = adapters["hubert-base"]
    with pytest.raises(ExtractionError, match="waveform 1 contains NaN"):
        a.forward([np.zeros(4000, np.float32), np.full(4000, np.nan, np.float32)])
    with pytest.raises(ExtractionError, match=r"waveform 0 has shape \(2, 4000\)"):
        a.forward([np.zeros((2, 4000), np.float32)])
    assert a.forward([]) == []


def test_hub_id_code_path_records_the_commit_hash(dirs, tmp_path):
    """A registry row whose source is a Hub id, served offline from a Hugging Face cache
    layout (snapshots/<commit>): same from_pretrained call as online, revision = the commit."""
    import os
    import shutil
    import subprocess
    import sys

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--phonecli-test--tiny-hubert"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(dirs["hubert-large-ctc"], repo / "snapshots" / commit)
    code = (
        "import dataclasses, warnings, numpy as np; warnings.simplefilter('ignore');"
        "from phonecli.encoders.registry import load_registry, get_adapter;"
        "reg = load_registry();"
        "reg['hubert-large'] = dataclasses.replace(reg['hubert-large'], source='phonecli-test/tiny-hubert');"
        "a = get_adapter('hubert-large');"
        "print(a.model_id, a.revision, a.settings['normalize_from'], a.forward([np.ones(8000, np.float32)])[0].shape)"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["phonecli-test/tiny-hubert", commit, "preprocessor_config.json", "(3,", "24,", "32)"]


@pytest.mark.parametrize("case", ["hubert-large-ctc", "distilhubert"])
def test_extract_cli_into_cache_equals_direct_forward(case, dirs, tiny_corpus, tmp_path):
    """`phonecli extract` with a tiny HuBERT directory (padding-safe: padded batches; group
    norm: unpadded) -> FeatureCache.read equals the direct forward within float16 tolerance."""
    from click.testing import CliRunner

    from phonecli.cache import FeatureCache
    from phonecli.cli import main
    from phonecli.data.audio import load_audio
    from phonecli.data.manifest import Manifest

    res = CliRunner().invoke(main, ["extract", "--model", str(dirs[case]), "--data", str(tiny_corpus),
                                    "--cache", str(tmp_path / "cache"), "--device", "cpu", "--batch-seconds", "5"])
    assert res.exit_code == 0, res.output
    cache = FeatureCache.open(res.output.strip().splitlines()[-1])
    manifest = Manifest.load(tiny_corpus)
    assert cache.is_complete and cache.layers == [0, 1, 2] and cache.dim == 32 and cache.frame_rate == 50.0
    assert cache.metadata["settings"]["adapter"]["padding_safe"] is CASES[case][5]
    assert cache.metadata["layer_info"][-1]["name"].endswith(
        "(pre final LayerNorm)" if CASES[case][6] else "(= last_hidden_state)")
    assert sorted(cache.utterance_ids()) == sorted(u.utt_id for u in manifest)
    normalize = CASES[case][4]["do_normalize"]
    for u in list(manifest)[::5]:
        wave = load_audio(tiny_corpus / u.audio)
        ref, _, _ = reference(dirs[case], wave, normalize)
        got = cache.read(u.utt_id)
        assert got.dtype == np.float16 and got.shape == ref.shape
        np.testing.assert_allclose(got.astype(np.float32), ref, rtol=2e-3, atol=2e-4)


def test_config_tie_last_hidden_states_is_honoured_and_recorded(tmp_path):
    """A config may ask transformers to put last_hidden_state (post final LayerNorm) last."""
    path = save_tiny(tmp_path, "wav2vec2-ctc", seed=4)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "tie_last_hidden_states": True}))
    a = get_adapter(str(path))
    w = waves((8000,))[0]
    ref, out, _ = reference(path, w, True)
    got = a.forward([w])[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[-1], out.last_hidden_state[0].numpy(), rtol=1e-5, atol=1e-5)
    assert a.layers()[-1].name == "transformer.2 (= last_hidden_state)"
    assert a.settings["last_state"] == "last_hidden_state" and a.settings["pre_ln_encoder"] is True


def test_extract_cli_wrong_family_directory_is_one_line(dirs, tiny_corpus, tmp_path):
    from click.testing import CliRunner

    from phonecli.cli import main

    res = CliRunner().invoke(main, ["extract", "--model", f"hubert-large={dirs['wavlm-base']}", "--data",
                                    str(tiny_corpus), "--cache", str(tmp_path / "cache"), "--device", "cpu"])
    assert res.exit_code != 0
    err = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    # the runner's directory check or the adapter's, whichever speaks first: one line naming both
    assert len(err) == 1 and str(dirs["wavlm-base"]) in err[0] and "model_type 'wavlm'" in err[0] and "Hubert" in err[0]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.zarr"))
