"""The raw-waveform SSL adapter (HuBERT, DistilHuBERT, WavLM, wav2vec 2.0, data2vec-audio).

Every model is a tiny random config of the real transformers class, saved with
``save_pretrained`` and loaded back by path (the Hub code path). The reference is always an
independent ``Model.from_pretrained(dir)(x, output_hidden_states=True)`` call on audio
normalised here with numpy, not through the adapter, under phonecli's layer convention:
``hidden_states[:-1]`` then the encoder output ``last_hidden_state`` (transformers 4.x /
s3prl). The registry rows' real configurations are checked in ``test_conformance.py``.
"""

from __future__ import annotations

import json
import shutil
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


def reference(path: Path, wave: np.ndarray, normalize: bool, base_cls=None):
    """Independent direct forward: ``(states, frames, dim)`` and the model output."""
    base_cls = base_cls or CASES[path.name.rsplit("-", 2)[0]][3]
    model = base_cls.from_pretrained(path, dtype=torch.float32).eval()
    x = wave.astype(np.float64)
    if normalize:  # Wav2Vec2FeatureExtractor's do_normalize, written out independently
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    with torch.no_grad():
        out = model(torch.tensor(x, dtype=torch.float32)[None], output_hidden_states=True)
    return torch.stack((*out.hidden_states[:-1], out.last_hidden_state), 1)[0].numpy(), out, model


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
    assert a.settings["processor_source"].startswith("preprocessor_config.json" if pp else "default for a")

    infos = a.layers()
    assert [li.index for li in infos] == list(range(n_states))
    assert all(li.frame_rate == 50.0 for li in infos) and a.frame_rate == 50.0
    last = torch.from_numpy(got[-1])
    # index N is the encoder output after its final LayerNorm, for every encoder (s3prl / transformers 4.x)
    torch.testing.assert_close(last, out.last_hidden_state[0], rtol=1e-5, atol=1e-5)
    if pre_ln:  # transformers >= 5.16 puts the pre-LayerNorm state last in hidden_states: not stored
        assert infos[-1].name == "transformer.2 -> final LayerNorm"
        assert not torch.allclose(last, out.hidden_states[-1][0], atol=1e-3)
        with torch.no_grad():
            normed = model.encoder.layer_norm(out.hidden_states[-1][0])
        torch.testing.assert_close(normed, last, rtol=1e-5, atol=1e-5)
    else:
        assert infos[-1].name == "transformer.2"
        torch.testing.assert_close(last, out.hidden_states[-1][0], rtol=1e-5, atol=1e-5)


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
        out = ctc.wav2vec2(torch.from_numpy(x)[None], output_hidden_states=True)
    ref = torch.stack((*out.hidden_states[:-1], out.last_hidden_state), 1)[0]
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
        assert a.settings["processor_source"] == (f"registry row {name!r} (no processor_config.json or "
                                                  "preprocessor_config.json)")
        ref, _, _ = reference(path, w, normalize)
        np.testing.assert_allclose(a.forward([w])[0], ref, rtol=1e-5, atol=1e-5)
    caplog.clear()
    with caplog.at_level("WARNING", logger="phonecli.encoders"):
        get_adapter(f"hubert-base={path}")
    assert "hubert-base: registry says 13 states x 768 but" in caplog.text and "has 3 x 32" in caplog.text
    # a preprocessor_config.json always wins over the row, and the disagreement is one warning line
    caplog.clear()
    with caplog.at_level("WARNING", logger="phonecli.encoders"):
        a = get_adapter(f"hubert-base={dirs['hubert-large-ctc']}")
    assert a.settings["do_normalize"] is True and a.settings["processor_source"] == "preprocessor_config.json"
    said = [r.getMessage() for r in caplog.records if "do_normalize" in r.getMessage()]
    assert said == [f"hubert-base: {dirs['hubert-large-ctc'].resolve()}/preprocessor_config.json has do_normalize=True "
                    "but registry row 'hubert-base' says do_normalize=False; using preprocessor_config.json"]


def test_revision_fingerprint_and_settings(dirs, adapters, tmp_path):
    a = adapters["wavlm-large"]
    assert a.revision is None and a.model_id == str(dirs["wavlm-large"].resolve())
    assert get_adapter(str(dirs["wavlm-large"]), revision="v2").revision is None  # ignored for a directory
    fp = a.fingerprint()
    assert len(fp) == 16 and fp == get_adapter(str(dirs["wavlm-large"])).fingerprint()
    other = get_adapter(str(save_tiny(tmp_path, "wavlm-large", seed=9)))
    assert other.fingerprint() != fp
    assert a.settings == {
        "class": "WavLMModel", "do_normalize": True, "processor_source": "preprocessor_config.json",
        "feat_extract_norm": "layer", "pre_ln_encoder": True, "padding_safe": True,
        "last_state": "encoder output (after the final LayerNorm of pre-LN encoders)",
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
        "print(a.model_id, a.revision, a.settings['processor_source'], a.forward([np.ones(8000, np.float32)])[0].shape)"
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
    assert cache.metadata["settings"]["adapter"]["processor_source"] == "preprocessor_config.json"
    assert cache.metadata["layer_convention"] == "superb-v1"
    assert cache.metadata["layer_info"][-1]["name"] == (
        "transformer.2 -> final LayerNorm" if CASES[case][6] else "transformer.2")
    assert sorted(cache.utterance_ids()) == sorted(u.utt_id for u in manifest)
    normalize = CASES[case][4]["do_normalize"]
    for u in list(manifest)[::5]:
        wave = load_audio(tiny_corpus / u.audio)
        ref, _, _ = reference(dirs[case], wave, normalize)
        got = cache.read(u.utt_id)
        assert got.dtype == np.float16 and got.shape == ref.shape
        np.testing.assert_allclose(got.astype(np.float32), ref, rtol=2e-3, atol=2e-4)


def test_last_index_is_the_encoder_output_whatever_hidden_states_holds(tmp_path):
    """A config may ask transformers to put the model's last_hidden_state last in hidden_states
    (``tie_last_hidden_states``), and with ``add_adapter`` the model's last_hidden_state is the
    seq2seq adapter's (3x fewer frames): index N is the encoder's own output in every case."""
    path = save_tiny(tmp_path, "wav2vec2-ctc", seed=4)
    cfg = json.loads((path / "config.json").read_text())
    w = waves((8000,))[0]
    plain = get_adapter(str(path)).forward([w])[0]
    (path / "config.json").write_text(json.dumps({**cfg, "tie_last_hidden_states": True}))
    tied = get_adapter(str(path))
    ref, out, model = reference(path, w, True)
    np.testing.assert_allclose(tied.forward([w])[0], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tied.forward([w])[0], plain, rtol=1e-6, atol=1e-6)
    assert tied.layers()[-1].name == "transformer.2 -> final LayerNorm"

    adapter_dir = tmp_path / "with-adapter"
    torch.manual_seed(4)
    T.Wav2Vec2Model(T.Wav2Vec2Config(**{**TINY, "feat_extract_norm": "layer", "do_stable_layer_norm": True,
                                        "add_adapter": True, "num_adapter_layers": 1,
                                        "output_hidden_size": 32})).save_pretrained(adapter_dir)
    a = get_adapter(str(adapter_dir))
    got = a.forward([w])[0]
    model = T.Wav2Vec2Model.from_pretrained(adapter_dir).eval()
    x = (w - w.mean()) / np.sqrt(w.var() + 1e-7)
    with torch.no_grad():
        out = model(torch.from_numpy(x)[None], output_hidden_states=True)
        encoder_out = model.encoder.layer_norm(out.hidden_states[-1])[0].numpy()
    assert out.last_hidden_state.shape[1] < got.shape[1] == a.num_frames(8000)  # adapter output: not stored
    np.testing.assert_allclose(got[-1], encoder_out, rtol=1e-5, atol=1e-5)


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


# ---------------------------------------------------------------------------------------------
# feature-extractor settings: the library's own from_pretrained, both file layouts


def save_with_processor(path: Path, do_normalize: bool) -> Path:
    """What ``Wav2Vec2Processor.save_pretrained`` writes in transformers 5: ``processor_config.json``
    (feature extractor nested) + tokenizer files, and no ``preprocessor_config.json``."""
    path.mkdir(parents=True, exist_ok=True)
    vocab = path / "vocab.json"
    vocab.write_text(json.dumps({"<pad>": 0, "<unk>": 1, "|": 2, "a": 3}))
    processor = T.Wav2Vec2Processor(
        feature_extractor=T.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                                     do_normalize=do_normalize, return_attention_mask=False),
        tokenizer=T.Wav2Vec2CTCTokenizer(str(vocab)))
    processor.save_pretrained(path)
    assert (path / "processor_config.json").exists() and not (path / "preprocessor_config.json").exists()
    return path


def save_finetuned_ctc(path: Path) -> Path:
    """A fine-tuned XLS-R-style model (Wav2Vec2ForCTC, layer-norm CNN with biases, pre-LN encoder).
    (A group-norm CNN normalises every channel over time right after the first convolution, which
    cancels input scale and offset: there ``do_normalize`` hardly changes the features.)"""
    torch.manual_seed(6)
    T.Wav2Vec2ForCTC(T.Wav2Vec2Config(**TINY, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                                      vocab_size=4)).save_pretrained(path)
    return path


def test_transformers5_processor_config_is_read_and_wins_over_the_registry_row(tmp_path, caplog):
    """A model fine-tuned and saved with ``Wav2Vec2Processor.save_pretrained`` (transformers 5 layout,
    here ``do_normalize=False``) must be fed what its processor says: as ``xls-r-300m=DIR`` (whose row
    says normalise: one warning line naming both, the file wins) and as a bare directory (whose
    family default for a layer-norm CNN is also to normalise)."""
    path = save_with_processor(save_finetuned_ctc(tmp_path / "finetuned"), do_normalize=False)
    assert T.Wav2Vec2FeatureExtractor.from_pretrained(path).do_normalize is False  # what transformers reads
    w = waves((12000,))[0]
    ref_raw, _, _ = reference(path, w, False, T.Wav2Vec2Model)
    ref_norm, _, _ = reference(path, w, True, T.Wav2Vec2Model)
    assert np.abs(ref_norm - ref_raw).max() > 1e-1
    caplog.clear()
    with caplog.at_level("WARNING", logger="phonecli.encoders"):
        a = get_adapter(f"xls-r-300m={path}")
    np.testing.assert_allclose(a.forward([w])[0], ref_raw, rtol=1e-5, atol=1e-5)
    assert a.settings["do_normalize"] is False and a.settings["processor_source"] == "processor_config.json"
    said = [r.getMessage() for r in caplog.records if "do_normalize" in r.getMessage()]
    assert said == [f"xls-r-300m: {path.resolve()}/processor_config.json has do_normalize=False but registry row "
                    "'xls-r-300m' says do_normalize=True; using processor_config.json"]
    bare = get_adapter(str(path))  # no registry row: the directory's own settings, nothing to warn about
    np.testing.assert_allclose(bare.forward([w])[0], ref_raw, rtol=1e-5, atol=1e-5)
    assert bare.settings["do_normalize"] is False and bare.settings["processor_source"] == "processor_config.json"


def test_both_layouts_present_follow_transformers_precedence(tmp_path):
    """transformers 5 reads a nested processor_config.json before preprocessor_config.json; the
    adapter uses (and records) the same file."""
    path = save_tiny(tmp_path, "hubert-large-ctc", seed=7)  # preprocessor_config.json: do_normalize=True
    save_with_processor(tmp_path / "proc", do_normalize=False)
    shutil.copy(tmp_path / "proc" / "processor_config.json", path / "processor_config.json")
    assert T.Wav2Vec2FeatureExtractor.from_pretrained(path).do_normalize is False
    a = get_adapter(str(path))
    assert a.feature_extractor.do_normalize is False
    assert a.settings["do_normalize"] is False and a.settings["processor_source"] == "processor_config.json"
    # a processor_config.json without a nested feature extractor (e.g. a tokenizer-only processor) is not it
    (path / "processor_config.json").write_text(json.dumps({"processor_class": "Wav2Vec2Processor"}))
    a = get_adapter(str(path))
    assert a.settings["do_normalize"] is True and a.settings["processor_source"] == "preprocessor_config.json"


def test_extraction_records_the_processor_source_and_prints_the_disagreement(tmp_path, tiny_corpus):
    from click.testing import CliRunner

    from phonecli.cache import FeatureCache
    from phonecli.cli import main

    path = save_with_processor(save_finetuned_ctc(tmp_path / "finetuned"), do_normalize=False)
    res = CliRunner().invoke(main, ["extract", "--model", f"xls-r-300m={path}", "--data", str(tiny_corpus),
                                    "--cache", str(tmp_path / "cache"), "--device", "cpu", "--splits", "test"])
    assert res.exit_code == 0, res.output
    cache = FeatureCache.open(res.stdout.strip().splitlines()[-1])
    assert cache.metadata["settings"]["adapter"]["do_normalize"] is False
    lines = [ln for ln in res.stderr.splitlines() if "registry row 'xls-r-300m' says do_normalize=True" in ln]
    assert lines == [f"xls-r-300m: {path.resolve()}/processor_config.json has do_normalize=False but registry row "
                     "'xls-r-300m' says do_normalize=True; using processor_config.json"]
    adapter_settings = cache.metadata["settings"]["adapter"]
    assert adapter_settings["processor_source"] == "processor_config.json" and adapter_settings["do_normalize"] is False
