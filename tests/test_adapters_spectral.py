"""Spectral-input encoder adapters: Whisper, Wav2Vec2-BERT, Qwen2-Audio (4-bit), Parakeet,
SpeechTokenizer, and the M-CTC-T refusal.

Every model is a tiny random config of the class the Hub checkpoint uses, saved with
``save_pretrained`` (+ its feature extractor) and loaded back by path through the registry --
the same code path as a Hub id. Each family is checked against an independent reference:
a separately loaded model called directly with ``output_hidden_states=True`` on features from
the checkpoint's own feature extractor.
"""

from __future__ import annotations

import json
import math
import sys
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from phonecli.encoders import registry
from phonecli.encoders.base import ExtractionError

SR = 16_000
ATOL = 2e-5


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core machine: thread hand-offs cost more than the maths."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def wave(n: int, seed: int = 0) -> np.ndarray:
    """Tone + noise, float32 ``(n,)`` at 16 kHz."""
    r = np.random.default_rng(seed)
    t = np.arange(n) / SR
    return (0.1 * np.sin(2 * np.pi * (120 + 40 * seed) * t) + 0.02 * r.standard_normal(n)).astype(np.float32)


def saved_tensors(path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def assert_batched_equals_single(adapter, waves, atol=ATOL):
    batched = adapter.forward(waves)
    for w, b in zip(waves, batched):
        single = adapter.forward([w])[0]
        assert b.shape == single.shape
        np.testing.assert_allclose(b, single, atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------
# Whisper


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    d = tmp_path_factory.mktemp("whisper")
    # max_source_positions stays 1500: the real 30 s window; only the width is tiny.
    cfg = WhisperConfig(vocab_size=64, d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                        max_source_positions=1500, max_target_positions=16, pad_token_id=0, bos_token_id=1,
                        eos_token_id=2, decoder_start_token_id=1)
    torch.manual_seed(0)
    WhisperForConditionalGeneration(cfg).save_pretrained(d)  # the openai/whisper-* Hub class
    WhisperFeatureExtractor(feature_size=80).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def whisper(whisper_dir):
    return registry.get_adapter(str(whisper_dir))


@pytest.fixture(scope="module")
def whisper_ref(whisper_dir):
    """An independently loaded feature extractor + encoder (the Hub class's own encoder)."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    fe = WhisperFeatureExtractor.from_pretrained(whisper_dir)
    return fe, WhisperForConditionalGeneration.from_pretrained(whisper_dir).model.encoder.eval()


def whisper_reference(ref, w: np.ndarray) -> np.ndarray:
    """Direct encoder call(s), trimmed per 30 s window and concatenated."""
    fe, enc = ref
    parts = []
    for s in range(0, len(w), 480_000):
        piece = w[s: s + 480_000]
        feats = fe([piece], sampling_rate=SR, return_tensors="pt").input_features
        with torch.no_grad():
            out = enc(feats, output_hidden_states=True)
        hs = torch.stack(out.hidden_states, 1)[0].numpy()
        np.testing.assert_allclose(hs[-1], out.last_hidden_state[0].numpy(), atol=1e-6)  # last = post-LN
        parts.append(hs[:, : math.ceil(len(piece) / 320)])
    return np.concatenate(parts, axis=1)


def test_whisper_matches_direct_call_and_frame_formula(whisper, whisper_ref):
    assert (whisper.frame_rate, whisper.hidden_size, len(whisper.layers())) == (50.0, 16, 3)
    assert whisper.padding_safe
    for n in (1_600, 16_001, 33_333):
        got = whisper.forward([wave(n)])[0]
        assert got.shape == (3, math.ceil(n / 320), 16) == (3, whisper.num_frames(n), 16)
        np.testing.assert_allclose(got, whisper_reference(whisper_ref, wave(n)), atol=ATOL, rtol=0)


def test_whisper_longer_than_30s_uses_consecutive_windows(whisper, whisper_ref):
    n = 480_000 + 16_321  # 31.02 s: one full window + 1.02 s
    w = wave(n, seed=3)
    got = whisper.forward([w])[0]
    assert got.shape[1] == whisper.num_frames(n) == 1500 + math.ceil(16_321 / 320) == math.ceil(n / 320)
    np.testing.assert_allclose(got, whisper_reference(whisper_ref, w), atol=ATOL, rtol=0)
    # the second window is encoded on its own: equal to encoding the tail alone
    np.testing.assert_allclose(got[:, 1500:], whisper.forward([w[480_000:]])[0], atol=ATOL, rtol=0)


def test_whisper_batched_equals_single(whisper):
    assert_batched_equals_single(whisper, [wave(8_000, 1), wave(24_321, 2)])


def test_whisper_weights_really_loaded(whisper, whisper_dir):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    saved = saved_tensors(whisper_dir)
    key = "model.encoder.layers.0.fc1.weight"
    assert torch.equal(whisper.model.layers[0].fc1.weight.detach().cpu(), saved[key])
    assert torch.equal(whisper.model.conv1.weight.detach().cpu(), saved["model.encoder.conv1.weight"])
    # The trap the adapter avoids: the bare encoder class keeps random weights on this checkpoint.
    trap = WhisperEncoder.from_pretrained(whisper_dir)
    assert not torch.equal(trap.layers[0].fc1.weight.detach(), saved[key])


def test_whisper_layer_info_and_settings(whisper):
    infos = whisper.layers()
    assert [li.index for li in infos] == [0, 1, 2]
    assert "LayerNorm" in infos[-1].name and all(li.frame_rate == 50.0 for li in infos)
    assert "30 s windows" in whisper.settings["long_audio"]


def test_whisper_feature_extractor_mismatch_is_one_line(whisper_dir, tmp_path):
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    d = tmp_path / "wrong_fe"
    WhisperForConditionalGeneration.from_pretrained(whisper_dir).save_pretrained(d)
    WhisperFeatureExtractor(feature_size=128).save_pretrained(d)
    with pytest.raises(ExtractionError, match="128 mel bins but the encoder expects 80") as e:
        registry.get_adapter(str(d))
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# Wav2Vec2-BERT


@pytest.fixture(scope="module")
def w2v_bert_dir(tmp_path_factory):
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    d = tmp_path_factory.mktemp("w2v_bert")
    cfg = Wav2Vec2BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             output_hidden_size=32, conv_depthwise_kernel_size=5, feature_projection_input_dim=160,
                             mask_time_prob=0.0)
    torch.manual_seed(1)
    Wav2Vec2BertModel(cfg).save_pretrained(d)  # facebook/w2v-bert-2.0 is a Wav2Vec2BertModel
    SeamlessM4TFeatureExtractor().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def w2v_bert(w2v_bert_dir):
    return registry.get_adapter(str(w2v_bert_dir))


def test_w2v_bert_matches_direct_call_and_frame_formula(w2v_bert, w2v_bert_dir):
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertModel

    fe = SeamlessM4TFeatureExtractor.from_pretrained(w2v_bert_dir)
    ref = Wav2Vec2BertModel.from_pretrained(w2v_bert_dir).eval()
    assert (w2v_bert.frame_rate, w2v_bert.hidden_size, len(w2v_bert.layers())) == (50.0, 32, 3)
    for n in (1_600, 16_161, 16_321, 23_999):
        enc = fe([wave(n)], sampling_rate=SR, return_tensors="pt")
        with torch.no_grad():
            out = ref(enc.input_features, attention_mask=enc.attention_mask, output_hidden_states=True)
        frames = int(enc.attention_mask.sum())
        assert frames == w2v_bert.num_frames(n) == (1 + (n - 400) // 160) // 2
        expected = torch.stack(out.hidden_states, 1)[0, :, :frames].numpy()
        got = w2v_bert.forward([wave(n)])[0]
        assert got.shape == (3, frames, 32)
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_w2v_bert_batched_equals_single(w2v_bert):
    assert_batched_equals_single(w2v_bert, [wave(16_000, 1), wave(9_761, 2), wave(30_001, 3), wave(16_161, 4)],
                                 atol=1e-4)


def test_w2v_bert_weights_really_loaded(w2v_bert, w2v_bert_dir):
    saved = saved_tensors(w2v_bert_dir)
    for name, p in w2v_bert.model.named_parameters():
        assert torch.equal(p.detach().cpu(), saved[name]), name


# ---------------------------------------------------------------------------------------------
# Parakeet


@pytest.fixture(scope="module")
def parakeet_dir(tmp_path_factory):
    from transformers import ParakeetCTCConfig, ParakeetFeatureExtractor, ParakeetForCTC

    d = tmp_path_factory.mktemp("parakeet")
    enc = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               subsampling_conv_channels=8, num_mel_bins=80)
    torch.manual_seed(2)
    ParakeetForCTC(ParakeetCTCConfig(encoder_config=enc, vocab_size=20, pad_token_id=19)).save_pretrained(d)
    ParakeetFeatureExtractor().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def parakeet(parakeet_dir):
    return registry.get_adapter(str(parakeet_dir))


def test_parakeet_matches_direct_call_and_frame_formula(parakeet, parakeet_dir):
    from transformers import ParakeetFeatureExtractor, ParakeetForCTC

    fe = ParakeetFeatureExtractor.from_pretrained(parakeet_dir)
    ref = ParakeetForCTC.from_pretrained(parakeet_dir).eval()
    assert (parakeet.frame_rate, parakeet.hidden_size, len(parakeet.layers())) == (12.5, 32, 3)
    for n in (1_600, 16_161, 33_333, 48_000):
        enc = fe([wave(n)], sampling_rate=SR, return_attention_mask=True, return_tensors="pt")
        with torch.no_grad():
            out = ref.encoder(enc.input_features, attention_mask=enc.attention_mask, output_hidden_states=True)
        frames = int(out.attention_mask.sum())
        t = n // 160
        for _ in range(3):  # three stride-2 convs (kernel 3, padding 1)
            t = (t - 1) // 2 + 1
        assert frames == parakeet.num_frames(n) == t
        assert abs(frames - n / SR * 12.5) <= 1
        expected = torch.stack(out.hidden_states, 1)[0, :, :frames].numpy()
        got = parakeet.forward([wave(n)])[0]
        assert got.shape == (3, frames, 32)
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
        np.testing.assert_allclose(got[-1], out.last_hidden_state[0, :frames].numpy(), atol=ATOL, rtol=0)


def test_parakeet_batched_equals_single(parakeet):
    assert_batched_equals_single(parakeet, [wave(16_000, 1), wave(9_761, 2), wave(30_001, 3)], atol=1e-4)


def test_parakeet_weights_really_loaded(parakeet, parakeet_dir):
    saved = saved_tensors(parakeet_dir)
    for name, p in parakeet.model.named_parameters():
        assert torch.equal(p.detach().cpu(), saved[f"encoder.{name}"]), name


# ---------------------------------------------------------------------------------------------
# Qwen2-Audio (4-bit nf4 through bitsandbytes, on CPU)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    pytest.importorskip("bitsandbytes")
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, WhisperFeatureExtractor

    d = tmp_path_factory.mktemp("qwen2_audio")
    cfg = Qwen2AudioConfig(
        audio_config=dict(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128,
                          num_mel_bins=128, max_source_positions=1500),
        text_config=dict(model_type="qwen2", vocab_size=200, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1),
        audio_token_index=150,
    )
    torch.manual_seed(3)
    Qwen2AudioForConditionalGeneration(cfg).save_pretrained(d)  # the full model, as on the Hub
    WhisperFeatureExtractor(feature_size=128).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def qwen(qwen_dir):
    return registry.get_adapter(str(qwen_dir))


def test_qwen2_audio_tower_is_4bit_and_weights_loaded(qwen, qwen_dir):
    import bitsandbytes as bnb
    import bitsandbytes.functional as F

    linears = [m for m in qwen.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m, bnb.nn.Linear4bit) for m in linears)
    assert qwen.model.layers[0].self_attn.q_proj.weight.quant_state.quant_type == "nf4"
    assert not hasattr(qwen, "language_model")
    saved = saved_tensors(qwen_dir)
    prefix = next(k for k in saved if k.endswith("audio_tower.conv1.weight"))[: -len("conv1.weight")]
    # float32 parts are exact copies of the checkpoint
    for name in ("conv1.weight", "conv2.bias", "embed_positions.weight", "layer_norm.weight"):
        assert torch.equal(dict(qwen.model.named_parameters())[name].detach(), saved[prefix + name]), name
    # 4-bit linears dequantize to the checkpoint's weights up to nf4 rounding (not to random ones)
    w = qwen.model.layers[1].fc1.weight
    deq = F.dequantize_4bit(w.data, w.quant_state).float()
    ref = saved[prefix + "layers.1.fc1.weight"]
    corr = np.corrcoef(deq.flatten().numpy(), ref.flatten().numpy())[0, 1]
    assert corr > 0.98
    assert (deq - ref).abs().max() <= ref.abs().max() * 0.2


def test_qwen2_audio_matches_the_tower_with_qwens_padding_mask(qwen, qwen_dir):
    """Full-rate states = the tower called with the padding mask Qwen2AudioModel.forward builds
    (test_conformance.py captures it from the real forward); without it they differ. The pooled
    state keeps Qwen's ``feat // 2`` distinct frames, each repeated x2."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor.from_pretrained(qwen_dir)
    assert (qwen.frame_rate, qwen.hidden_size, len(qwen.layers())) == (50.0, 64, 3)
    for n in (1_600, 16_001, 33_333):
        enc = fe([wave(n)], sampling_rate=SR, return_attention_mask=True, return_tensors="pt")
        feat, pooled_n = qwen.model._get_feat_extract_output_lengths(enc.attention_mask.sum(-1))
        feat, pooled_n = int(feat), int(pooled_n)
        valid = torch.arange(1500)[None] < feat
        mask = torch.where(valid[:, None, None, :], 0.0, float("-inf")).expand(1, 1, 1500, 1500)
        with torch.no_grad():
            masked = qwen.model(enc.input_features, attention_mask=mask, output_hidden_states=True).hidden_states
            unmasked = qwen.model(enc.input_features, output_hidden_states=True).hidden_states
        got = qwen.forward([wave(n)])[0]
        assert got.shape == (3, feat, 64) and qwen.num_frames(n) == feat == math.ceil(n / 320)
        np.testing.assert_allclose(got[0], masked[0][0, :feat].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(got[1], masked[1][0, :feat].numpy(), atol=1e-4, rtol=0)
        assert np.abs(got[1] - unmasked[1][0, :feat].numpy()).max() > 1e-2  # the mask matters
        np.testing.assert_allclose(got[2][0::2][:pooled_n], masked[2][0, :pooled_n].numpy(), atol=1e-4, rtol=0)
        assert pooled_n == feat // 2 and len(np.unique(got[2], axis=0)) == pooled_n
    last = qwen.layers()[-1]
    assert "25 fps" in last.name and "repetition" in last.note


def test_qwen2_audio_windows_without_a_pooled_frame(qwen):
    """<= 320 samples give Qwen one full-rate frame and no pooled one: too short alone (num_frames 0,
    forward refuses), and dropped as the tail of audio over 30 s (Qwen itself truncates at 30 s)."""
    assert [qwen.num_frames(n) for n in (320, 321, 640, 641)] == [0, 2, 2, 3]
    with pytest.raises(ExtractionError, match="too short"):
        qwen.forward([wave(320)])
    got = qwen.forward([wave(321), wave(480_000 + 100), wave(480_000 + 321)])
    assert [g.shape[1] for g in got] == [2, 1500, 1502]
    assert len(np.unique(got[0][-1], axis=0)) == 1 and len(np.unique(got[2][-1], axis=0)) == 751


def test_qwen2_audio_batched_equals_single(qwen):
    assert_batched_equals_single(qwen, [wave(8_000, 1), wave(24_321, 2)], atol=1e-4)


# ---------------------------------------------------------------------------------------------
# SpeechTokenizer (optional extra)

ST_CONFIG = {"n_filters": 4, "strides": [8, 5, 4, 2], "dimension": 16, "semantic_dimension": 8, "n_q": 3,
             "codebook_size": 8, "lstm_layers": 1, "bidirectional": True, "dilation_base": 2,
             "residual_kernel_size": 3, "n_residual_layers": 1, "activation": "ELU", "sample_rate": 16000}


def build_speechtokenizer(d, initialised: bool = True):
    from speechtokenizer import SpeechTokenizer

    torch.manual_seed(4)
    with warnings.catch_warnings():  # the package uses torch's deprecated weight_norm
        warnings.simplefilter("ignore", FutureWarning)
        model = SpeechTokenizer(ST_CONFIG)
    if initialised:  # a trained checkpoint: codebooks filled and marked initialised
        for name, buf in model.named_buffers():
            if name.endswith("embed") or name.endswith("embed_avg"):
                buf.copy_(torch.randn_like(buf))
            if name.endswith("inited"):
                buf.fill_(1.0)
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(ST_CONFIG))
    torch.save(model.state_dict(), d / "SpeechTokenizer.pt")  # the released checkpoint's format
    return d


@pytest.fixture(scope="module")
def speechtokenizer(tmp_path_factory):
    pytest.importorskip("speechtokenizer")
    d = build_speechtokenizer(tmp_path_factory.mktemp("speechtokenizer") / "model")
    return d, registry.get_adapter(f"speechtokenizer={d}")


def test_registry_numbers_disagreement_is_one_log_line(speechtokenizer, caplog):
    """NAME=DIR claims to be the registry row: the tiny model's numbers differ and are reported
    on the ``phonecli.encoders`` logger (``phonecli extract`` prints it on stderr)."""
    d, _ = speechtokenizer
    with caplog.at_level("WARNING", logger="phonecli.encoders"):
        registry.get_adapter(f"speechtokenizer={d}")
    said = [r.getMessage() for r in caplog.records if "registry says" in r.getMessage()]
    assert said == [f"speechtokenizer: registry says 9 states x 1024 but {d.resolve()} has 4 x 16; "
                    "using the checkpoint's numbers"]


def test_speechtokenizer_matches_direct_call_and_frame_formula(speechtokenizer):
    from speechtokenizer import SpeechTokenizer

    d, adapter = speechtokenizer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = SpeechTokenizer.load_from_checkpoint(str(d / "config.json"), str(d / "SpeechTokenizer.pt")).eval()
    assert (adapter.frame_rate, adapter.hidden_size, len(adapter.layers())) == (50.0, 16, 4)
    assert not adapter.padding_safe
    for n in (1_600, 16_000, 16_001, 16_319):
        x = torch.from_numpy(wave(n))[None, None]
        with torch.no_grad():
            e = ref.encoder(x)
            levels = ref.forward_feature(x)
        expected = torch.stack([e, *levels], 1)[0].transpose(1, 2).numpy()
        assert expected.shape[1] == adapter.num_frames(n) == math.ceil(n / 320)
        got = adapter.forward([wave(n)])[0]
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
        # each RVQ state is a codebook vector of its level
        codebook = ref.quantizer.vq.layers[1]._codebook.embed
        dist = torch.cdist(torch.from_numpy(got[2]), codebook)
        assert float(dist.min(dim=1).values.max()) < 1e-4


def test_speechtokenizer_batched_equals_single(speechtokenizer):
    _, adapter = speechtokenizer
    assert_batched_equals_single(adapter, [wave(16_000, 1), wave(9_761, 2), wave(16_000, 3)])


def test_speechtokenizer_weights_really_loaded(speechtokenizer):
    d, adapter = speechtokenizer
    saved = torch.load(d / "SpeechTokenizer.pt", weights_only=True)
    state = adapter.model.state_dict()
    assert state.keys() == saved.keys()
    for k, v in saved.items():
        assert torch.equal(state[k].cpu(), v), k


def test_speechtokenizer_uninitialised_codebooks_refused(tmp_path):
    pytest.importorskip("speechtokenizer")
    d = build_speechtokenizer(tmp_path / "untrained", initialised=False)
    with pytest.raises(ExtractionError, match="never initialised"):
        registry.get_adapter(f"speechtokenizer={d}")


def test_speechtokenizer_missing_extra_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "speechtokenizer", None)  # import speechtokenizer -> ImportError
    with pytest.raises(ExtractionError) as e:
        registry.get_adapter("speechtokenizer")
    msg = str(e.value)
    assert "pip install 'phonecli[tokenizer]'" in msg and "\n" not in msg


# ---------------------------------------------------------------------------------------------
# M-CTC-T and registry numbers


def test_mctct_refused_with_one_line(tmp_path):
    from phonecli.encoders.adapters import mctct

    with pytest.raises(ExtractionError, match=r"transformers 5.*transformers<5 in a separate environment") as e:
        registry.get_adapter("m-ctc-t")
    assert "\n" not in str(e.value)
    d = tmp_path / "mctct_dir"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "mctct", "architectures": ["MCTCTForCTC"]}))
    with pytest.raises(ExtractionError, match="transformers<5"):
        registry.get_adapter(str(d))
    spec = registry.load_registry()["m-ctc-t"]
    with pytest.raises(ExtractionError, match="transformers 5 removed MCTCT"):
        mctct.Adapter(spec, spec.source)
    assert spec.status == "removed"


def test_mctct_cli_exits_nonzero(tiny_corpus, tmp_path):
    from click.testing import CliRunner

    from phonecli.cli import main

    res = CliRunner().invoke(main, ["extract", "--model", "m-ctc-t", "--data", str(tiny_corpus),
                                    "--cache", str(tmp_path / "cache")])
    assert res.exit_code != 0
    assert "transformers<5" in res.output


def test_registry_rows_for_spectral_models():
    reg = registry.load_registry()
    expect = {  # (states incl. embeddings, hidden, frames/s) from the released configs
        "whisper-tiny": (5, 384, 50), "whisper-base": (7, 512, 50), "whisper-small": (13, 768, 50),
        "whisper-medium": (25, 1024, 50), "whisper-large-v3": (33, 1280, 50),
        "w2v-bert-2": (25, 1024, 50), "qwen2-audio": (33, 1280, 50),
        "parakeet-ctc-0.6b": (25, 1024, 12.5), "parakeet-ctc-1.1b": (43, 1024, 12.5),
        "speechtokenizer": (9, 1024, 50),
    }
    for name, numbers in expect.items():
        s = reg[name]
        assert (s.layers, s.hidden_size, s.frame_rate) == numbers, name
    assert reg["speechtokenizer"].status == reg["qwen2-audio"].status == "optional"  # need an extra


# ---------------------------------------------------------------------------------------------
# Through the extraction runner into the cache (float16 tolerance)


@pytest.mark.filterwarnings("ignore:.*registry says")
@pytest.mark.parametrize("family", ["whisper", "w2v_bert", "parakeet", "qwen", "speechtokenizer"])
def test_cache_holds_the_adapter_states(family, request, tiny_corpus, tmp_path):
    from phonecli.cache import FeatureCache
    from phonecli.data.audio import load_audio
    from phonecli.data.manifest import Manifest
    from phonecli.extract.runner import extract_features

    if family == "speechtokenizer":
        d, adapter = request.getfixturevalue("speechtokenizer")
        model = f"speechtokenizer={d}"
    else:
        adapter = request.getfixturevalue(family)
        model = str(request.getfixturevalue(f"{family}_dir"))
    path = extract_features(model, tiny_corpus, tmp_path / "cache", splits="test", device="cpu", progress=False)
    cache = FeatureCache.open(path)
    assert cache.frame_rate == adapter.frame_rate and cache.dim == adapter.hidden_size
    assert [li["name"] for li in cache.metadata["layer_info"]] == [li.name for li in adapter.layers()]
    manifest = Manifest.load(tiny_corpus)
    utts = [u for u in manifest.utterances if u.split == "test"]
    assert cache.utterance_ids("test") == sorted(u.utt_id for u in utts)
    for u in utts[:3]:
        w = load_audio(tiny_corpus / u.audio)
        direct = adapter.forward([w])[0]
        stored = cache.read(u.utt_id).astype(np.float32)
        assert stored.shape == direct.shape and cache.num_frames(u.utt_id) == adapter.num_frames(len(w))
        np.testing.assert_allclose(stored, direct, atol=2e-3, rtol=2e-3)


def test_qwen2_audio_bare_encoder_directory_loads_in_4bit(qwen_dir, tmp_path):
    """A directory holding only the tower (model_type qwen2_audio_encoder) loads with real weights."""
    import bitsandbytes as bnb
    from transformers import Qwen2AudioConfig, WhisperFeatureExtractor
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

    d = tmp_path / "tower"
    torch.manual_seed(5)
    Qwen2AudioEncoder(Qwen2AudioConfig.from_pretrained(qwen_dir).audio_config).save_pretrained(d)
    WhisperFeatureExtractor(feature_size=128).save_pretrained(d)
    a = registry.get_adapter(str(d))
    saved = saved_tensors(d)
    assert isinstance(a.model.layers[0].fc2, bnb.nn.Linear4bit)
    assert torch.equal(a.model.conv2.weight.detach(), saved["conv2.weight"])
    assert a.forward([wave(4_000)])[0].shape == (3, math.ceil(4_000 / 320), 64)


def test_hub_ids_resolve_through_the_hf_cache(whisper_dir, tmp_path):
    """Registry rows with Hub ids (openai/whisper-tiny, fnlp/SpeechTokenizer with its subfolder),
    served offline from a Hugging Face cache layout: the same from_pretrained / hf_hub_download
    calls as online, and the adapter records the snapshot commit as revision."""
    import os
    import shutil
    import subprocess

    pytest.importorskip("speechtokenizer")
    commit = "0123456789abcdef0123456789abcdef01234567"
    hub = tmp_path / "hub"
    for repo_name in ("models--openai--whisper-tiny", "models--fnlp--SpeechTokenizer"):
        (hub / repo_name / "refs").mkdir(parents=True)
        (hub / repo_name / "refs" / "main").write_text(commit)
    shutil.copytree(whisper_dir, hub / "models--openai--whisper-tiny" / "snapshots" / commit)
    build_speechtokenizer(hub / "models--fnlp--SpeechTokenizer" / "snapshots" / commit / "speechtokenizer_hubert_avg")
    code = (
        "import warnings, numpy as np, torch; warnings.simplefilter('ignore'); torch.set_num_threads(1);"
        "from phonecli.encoders.registry import get_adapter;"
        "w = get_adapter('whisper-tiny'); s = get_adapter('speechtokenizer');"
        "x = [np.ones(8000, np.float32)];"
        "print(w.model_id, w.revision, w.forward(x)[0].shape, s.model_id, s.revision, s.forward(x)[0].shape)"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["openai/whisper-tiny", commit, "(3,", "25,", "16)",
                                  "fnlp/SpeechTokenizer", commit, "(4,", "25,", "16)"]


@pytest.mark.parametrize("family", ["whisper", "w2v_bert", "parakeet", "speechtokenizer"])
def test_bad_waveforms_are_one_line_errors(family, request):
    adapter = request.getfixturevalue(family)
    if family == "speechtokenizer":
        adapter = adapter[1]
    assert adapter.forward([]) == []
    with pytest.raises(ExtractionError, match="waveform 1 contains NaN/inf"):
        adapter.forward([wave(8_000), np.full(8_000, np.nan, np.float32)])
    with pytest.raises(ExtractionError, match=r"waveform 0 has shape \(2, 8000\); expected mono"):
        adapter.forward([np.zeros((2, 8_000), np.float32)])
    # too short for one frame: num_frames says 0 (the runner skips/fails it by name) and forward refuses
    short = {"whisper": 0, "w2v_bert": 559, "parakeet": 319, "speechtokenizer": 319}[family]
    assert adapter.num_frames(short) == 0 and adapter.num_frames(short + 1) >= 1
    if short:
        with pytest.raises(ExtractionError, match="too short"):
            adapter.forward([wave(short)])
