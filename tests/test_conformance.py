"""Conformance: every registry row stores what its real checkpoint computes.

For each row, a tiny random model is built from the real checkpoint's public configuration
(``tests/fixtures/checkpoints/<row>/``: ``config.json`` and ``preprocessor_config.json`` /
``processor_config.json``, size fields shrunk, every structural flag kept; see the README
there), saved with ``save_pretrained`` and extracted by ``phonecli extract --model ROW=DIR`` into
a real float16 cache, for one batch of real speech of mixed lengths (0.3 s .. 35 s).

The reference is the checkpoint's documented usage, written here without phonecli's adapters:
the checkpoint's own feature extractor / processor on the raw waveform, one utterance at a
time as the model cards do, then the model's forward with the processor's attention mask and
``output_hidden_states=True``; the last index is the encoder output ``last_hidden_state``
(phonecli's layer convention = transformers 4.x = s3prl/SUPERB). Qwen2-Audio's reference is the
full ``Qwen2AudioForConditionalGeneration`` forward on its processor's output: its tower call is
captured with a hook (the mask Qwen builds), and its audio-token count is the pooled frame count
Qwen feeds its language model. Audio longer than 30 s on the 30 s-window rows (Whisper,
Qwen2-Audio) is referenced window by window: consecutive 30 s pieces, each through the
documented pipeline (phonecli's documented long-audio rule; Qwen2-Audio itself truncates at 30 s).

Asserted per row: stored frame counts equal the model's own output lengths, and every stored
layer equals the reference within float16 tolerance. ``PHONECLI_CONFORMANCE_REPORT=FILE``
appends one JSON line per row with the measured max abs / relative differences.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from test_adapters_spectral import one_torch_thread  # noqa: F401  (autouse: one torch thread for tiny models)

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
SR = 16_000
WINDOW = 30 * SR
# 0.3 s, 1 s + 1 sample (odd full-rate count for Qwen2-Audio: 51 frames, 25 pooled), 4.2 s, 35 s (> 30 s)
LENGTHS = {"u0_short": 4_800, "u1_odd": 16_001, "u2_mid": 67_200, "u3_long": 560_000}
# (rtol, atol as a fraction of the layer's largest reference value) per cache dtype
TOLERANCE = {"float16": (1e-3, 1e-3),   # float16 keeps 11 significant bits (relative rounding <= 4.9e-4)
             "float32": (1e-4, 1e-4)}   # batching/padding order of float32 sums only

SSL_ROWS = ["hubert-base", "hubert-large", "distilhubert", "wavlm-base", "wavlm-base-plus", "wavlm-large",
            "wav2vec2-phoneme", "wav2vec2-phoneme-lv60", "xls-r-300m", "xls-r-1b", "mms-1b", "data2vec-large",
            "data2vec-large-pt"]
WHISPER_ROWS = ["whisper-tiny", "whisper-base", "whisper-small", "whisper-medium", "whisper-large-v3"]
OTHER_ROWS = ["w2v-bert-2", "qwen2-audio", "parakeet-ctc-0.6b", "parakeet-ctc-1.1b", "speechtokenizer"]
ROWS = SSL_ROWS + WHISPER_ROWS + OTHER_ROWS


# ---------------------------------------------------------------------------------------------
# real speech, a manifest, a cache


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """~3 s of espeak-ng speech at 16 kHz, float32 (resampled by sox, as a real recording would be)."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed for the speech fixture (Debian packages)")
    d = tmp_path_factory.mktemp("speech")
    raw, wav = d / "raw.wav", d / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw),
                    "Please call Stella and ask her to bring these things with her from the store."],
                   check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", str(SR), "-c", "1", "-b", "16", str(wav)], check=True, capture_output=True)
    x, sr = sf.read(wav, dtype="float32")
    assert sr == SR and len(x) > 2 * SR
    return x


@pytest.fixture(scope="module")
def corpus(speech, tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A manifest of the four utterances (16-bit WAV files) and their waveforms as the files hold them."""
    from phonecli.data.manifest import Manifest, Utterance

    root = tmp_path_factory.mktemp("conformance_corpus")
    (root / "audio").mkdir()
    voiced = speech[np.argmax(np.abs(speech) > 0.02):]  # start at the first voiced sample
    gap = np.zeros(SR // 5, np.float32)
    long = np.concatenate([np.concatenate([voiced, gap])] * (LENGTHS["u3_long"] // (len(voiced) + len(gap)) + 1))
    utts, waves = [], {}
    for k, (utt_id, n) in enumerate(LENGTHS.items()):
        wave = long[:n] if n > len(voiced) else voiced[:n]
        path = root / "audio" / f"{utt_id}.wav"
        sf.write(path, wave, SR, subtype="PCM_16")
        waves[utt_id], _ = sf.read(path, dtype="float32")
        utts.append(Utterance(utt_id=utt_id, speaker=f"S{k}", split="test", audio=f"audio/{utt_id}.wav",
                              duration=n / SR, num_samples=n, sample_rate=SR, text="x", accuracy=8.0,
                              completeness=10.0, fluency=8.0, prosodic=8.0, total=8.0, words=[],
                              realized_phones=[]))
    Manifest(utterances=utts, source={"kind": "conformance-test"}).save(root)
    return root, waves


def extract(model: str, corpus_dir: Path, cache_root: Path, dtype: str = "float16"):
    """``phonecli extract --model MODEL`` (in-process; the four utterances in one padded batch where the
    model is padding-safe) -> the opened cache."""
    from phonecli.cache import FeatureCache
    from phonecli.extract.runner import extract_features

    path = extract_features(model, corpus_dir, cache_root, device="cpu", progress=False, batch_seconds=200.0,
                            dtype=dtype)
    return FeatureCache.open(path, require_complete=True)


# ---------------------------------------------------------------------------------------------
# tiny checkpoints from the fixtures


def build_checkpoint(row: str, out: Path, seed: int = 0) -> Path:
    """A random checkpoint of the row's architecture (fixture config), as the Hub repository holds it."""
    import transformers

    fixture = FIXTURES / row
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if row == "speechtokenizer":
        return build_speechtokenizer(fixture, out)
    config = transformers.AutoConfig.from_pretrained(fixture)
    model = getattr(transformers, config.architectures[0])(config)
    with torch.no_grad():
        for m in model.modules():
            # trained-like scales: std 1/sqrt(fan_in) keeps every state O(1) (the 0.02 init leaves e.g.
            # Parakeet's subsampling output near 1e-6, below float16's normal range)
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)) and \
                    not torch.nn.utils.parametrize.is_parametrized(m, "weight"):
                m.weight.normal_(0.0, m.weight[0].numel() ** -0.5)
            # non-trivial LayerNorm affine parameters: a missing or extra LayerNorm shows
            if isinstance(m, torch.nn.LayerNorm) and m.elementwise_affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.save_pretrained(out)
    for name in ("preprocessor_config.json", "processor_config.json"):
        if (fixture / name).exists():
            shutil.copy(fixture / name, out / name)
    return out


def build_speechtokenizer(fixture: Path, out: Path) -> Path:
    from speechtokenizer import SpeechTokenizer

    cfg = json.loads((fixture / "config.json").read_text())
    with warnings.catch_warnings():  # the package uses torch's deprecated weight_norm
        warnings.simplefilter("ignore", FutureWarning)
        model = SpeechTokenizer(cfg)
    for name, buf in model.named_buffers():  # a trained checkpoint: codebooks filled and marked initialised
        if name.endswith("embed") or name.endswith("embed_avg"):
            buf.copy_(torch.randn_like(buf))
        if name.endswith("inited"):
            buf.fill_(1.0)
    shutil.copy(fixture / "config.json", out / "config.json")
    torch.save(model.state_dict(), out / "SpeechTokenizer.pt")  # the released checkpoint's format
    return out


# ---------------------------------------------------------------------------------------------
# references: the checkpoints' documented usage, one utterance at a time


def ssl_reference(d: Path, wave: np.ndarray) -> list[np.ndarray]:
    """Model card: ``processor(audio, return_tensors="pt")`` then ``model(input_values)``; a checkpoint
    without feature-extractor settings (hubert-base-ls960) takes the raw waveform (fairseq normalize=False)."""
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    model = AutoModel.from_pretrained(d).eval()
    if (d / "preprocessor_config.json").exists() or (d / "processor_config.json").exists():
        enc = Wav2Vec2FeatureExtractor.from_pretrained(d)(wave, sampling_rate=SR, return_tensors="pt")
        x, mask = enc["input_values"], enc.get("attention_mask")
    else:
        x, mask = torch.from_numpy(wave)[None], None
    with torch.no_grad():
        out = model(x, attention_mask=mask, output_hidden_states=True)
    assert out.last_hidden_state.shape[1] == int(model._get_feat_extract_output_lengths(len(wave)))
    return [h[0].numpy() for h in (*out.hidden_states[:-1], out.last_hidden_state)]


def whisper_reference(d: Path, wave: np.ndarray) -> list[np.ndarray]:
    """``processor(audio)`` -> ``model.get_encoder()(input_features, output_hidden_states=True)`` per 30 s
    window, each trimmed to the encoder's own output length for the valid mel frames."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    fe = WhisperFeatureExtractor.from_pretrained(d)
    encoder = WhisperForConditionalGeneration.from_pretrained(d).get_encoder().eval()
    parts = []
    for s in range(0, len(wave), WINDOW):
        enc = fe(wave[s: s + WINDOW], sampling_rate=SR, return_attention_mask=True, return_tensors="pt")
        frames = int(encoder._get_feat_extract_output_lengths(enc["attention_mask"].sum(-1)))
        with torch.no_grad():
            out = encoder(enc["input_features"], output_hidden_states=True)
        parts.append(np.stack([h[0, :frames].numpy() for h in (*out.hidden_states[:-1], out.last_hidden_state)]))
    return list(np.concatenate(parts, axis=1))


def w2v_bert_reference(d: Path, wave: np.ndarray) -> list[np.ndarray]:
    from transformers import AutoFeatureExtractor, Wav2Vec2BertModel

    enc = AutoFeatureExtractor.from_pretrained(d)(wave, sampling_rate=SR, return_tensors="pt")
    model = Wav2Vec2BertModel.from_pretrained(d).eval()
    with torch.no_grad():
        out = model(enc["input_features"], attention_mask=enc["attention_mask"], output_hidden_states=True)
    frames = int(enc["attention_mask"].sum())
    return [h[0, :frames].numpy() for h in (*out.hidden_states[:-1], out.last_hidden_state)]


def parakeet_reference(d: Path, wave: np.ndarray) -> list[np.ndarray]:
    """Model card: ``processor(audio, sampling_rate=..)`` then ``ParakeetForCTC(**inputs)``; its
    ``hidden_states`` are the encoder's."""
    from transformers import AutoFeatureExtractor, ParakeetForCTC

    enc = AutoFeatureExtractor.from_pretrained(d)(wave, sampling_rate=SR, return_tensors="pt")
    model = ParakeetForCTC.from_pretrained(d).eval()
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    frames = int(model.encoder._get_subsampling_output_length(enc["attention_mask"].sum(-1))[0])
    return [h[0, :frames].numpy() for h in out.hidden_states]


def speechtokenizer_reference(d: Path, wave: np.ndarray) -> list[np.ndarray]:
    """Model card: ``codes = model.encode(wav)``; state k is the level-k code embedding
    ``quantizer.decode(codes[k-1:k], st=k-1)``, state 0 the continuous encoder output."""
    from speechtokenizer import SpeechTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = SpeechTokenizer.load_from_checkpoint(str(d / "config.json"), str(d / "SpeechTokenizer.pt")).eval()
    x = torch.from_numpy(wave)[None, None]
    with torch.no_grad():
        codes = model.encode(x)                                        # (n_q, 1, T)
        states = [model.encoder(x)] + [model.quantizer.decode(codes[k: k + 1], st=k) for k in range(len(codes))]
    return [s[0].T.numpy() for s in states]


def qwen_reference(d: Path, waves: list[np.ndarray]) -> tuple[list[list[np.ndarray]], list[int], list[int]]:
    """Qwen2-Audio's own pipeline on each 30 s window: ``Qwen2AudioProcessor(text, audio)`` then the full
    ``Qwen2AudioForConditionalGeneration`` forward (4-bit nf4 as the registry row loads it). A hook on
    the audio tower captures the call Qwen makes (features + the padding mask it builds); the tower
    is called again with exactly those arguments and ``output_hidden_states=True``.

    Returns per window: the states trimmed to Qwen's ``audio_feat_lengths`` (the pooled last state
    untrimmed, 750 frames), the full-rate counts and the pooled counts = audio tokens the processor
    inserted = audio features the language model receives.
    """
    from transformers import (BitsAndBytesConfig, PreTrainedTokenizerFast, Qwen2AudioForConditionalGeneration,
                              Qwen2AudioProcessor, WhisperFeatureExtractor)

    model = Qwen2AudioForConditionalGeneration.from_pretrained(
        d, dtype=torch.float32, device_map="cpu",
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_compute_dtype=torch.float32)).eval()
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor.from_pretrained(d),
                                    tokenizer=tiny_qwen_tokenizer(model.config.audio_token_id))
    prompt = "<|audio_bos|><|AUDIO|><|audio_eos|>"
    inputs = processor(text=[prompt] * len(waves), audio=waves, sampling_rate=SR, return_tensors="pt", padding=True)
    calls = []
    hook = model.model.audio_tower.register_forward_pre_hook(
        lambda _m, args, kwargs: calls.append((args, kwargs)), with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        hook.remove()
    (args, kwargs), = calls
    tower = model.model.audio_tower
    with torch.no_grad():
        out = tower(*args, **kwargs, output_hidden_states=True)
    feat_lengths, pooled_lengths = tower._get_feat_extract_output_lengths(inputs["feature_attention_mask"].sum(-1))
    tokens = (inputs["input_ids"] == model.config.audio_token_id).sum(-1)
    assert tokens.tolist() == pooled_lengths.tolist()  # what the language model is fed
    states = [[h[b].float().numpy() for h in out.hidden_states] for b in range(len(waves))]
    return states, feat_lengths.tolist(), pooled_lengths.tolist()


def tiny_qwen_tokenizer(audio_token_id: int):
    """A word-level tokenizer holding Qwen2-Audio's audio special tokens at the model's ids
    (the real Qwen tokenizer is 150k entries; only these tokens matter to the processor)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = {"<|audio_bos|>": audio_token_id - 2, "<|audio_eos|>": audio_token_id - 1, "<|AUDIO|>": audio_token_id,
               "<unk>": 0, "<|endoftext|>": 1}
    vocab = {**{f"w{i}": i for i in range(2, audio_token_id - 2)}, **special}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": ["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]})
    return fast


# ---------------------------------------------------------------------------------------------
# comparison


def compare(row: str, stored: np.ndarray, ref: list[np.ndarray], utt: str, stats: dict) -> None:
    """Per layer: shapes equal and ``|stored - ref| <= rtol*|ref| + atol*max|ref_layer|`` (TOLERANCE of
    the stored dtype); ``stats`` collects the largest absolute and layer-relative differences."""
    assert stored.shape == (len(ref), *ref[0].shape), (row, utt, stored.shape, ref[0].shape)
    rtol, atol = TOLERANCE[str(stored.dtype)]
    got = stored.astype(np.float32)
    for i, r in enumerate(ref):
        scale = max(float(np.abs(r).max()), 1e-6)
        diff = np.abs(got[i] - r)
        key = str(stored.dtype)
        stats[f"{key}_max_abs"] = max(stats.get(f"{key}_max_abs", 0.0), float(diff.max()))
        stats[f"{key}_max_rel"] = max(stats.get(f"{key}_max_rel", 0.0), float(diff.max()) / scale)
        bad = diff > rtol * np.abs(r) + atol * scale
        assert not bad.any(), (f"{row} {utt} layer {i}: {int(bad.sum())} of {bad.size} values differ from the "
                               f"reference (max |diff| {float(diff.max()):.3g}, layer max {scale:.3g})")


def report(row: str, stats: dict) -> None:
    path = os.environ.get("PHONECLI_CONFORMANCE_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"row": row, **stats}) + "\n")


REFERENCES = {**{r: ssl_reference for r in SSL_ROWS}, **{r: whisper_reference for r in WHISPER_ROWS},
              "w2v-bert-2": w2v_bert_reference, "parakeet-ctc-0.6b": parakeet_reference,
              "parakeet-ctc-1.1b": parakeet_reference, "speechtokenizer": speechtokenizer_reference}


@pytest.mark.parametrize("row", [r for r in ROWS if r != "qwen2-audio"])
def test_row_stores_what_the_checkpoint_computes(row, corpus, tmp_path):
    if row == "speechtokenizer":
        pytest.importorskip("speechtokenizer")
    corpus_dir, waves = corpus
    ckpt = build_checkpoint(row, tmp_path / row, seed=ROWS.index(row))
    caches = [extract(f"{row}={ckpt}", corpus_dir, tmp_path / "cache", dtype) for dtype in ("float16", "float32")]
    stats: dict = {}
    for utt, wave in waves.items():
        ref = REFERENCES[row](ckpt, wave)
        for cache in caches:
            assert cache.num_frames(utt) == ref[0].shape[0], (row, utt)  # the model's own output length
            compare(row, cache.read(utt), ref, utt, stats)
    report(row, {**stats, "layers": len(ref), "utterances": len(waves)})


@pytest.fixture(scope="module")
def qwen_run(corpus, tmp_path_factory):
    """The qwen2-audio row extracted (float16 and float32) and Qwen's own pipeline on every 30 s window
    of every utterance (one processor batch): ``(caches, expected states per utterance, feat_lengths,
    pooled_lengths)`` with the counts summed over an utterance's windows."""
    pytest.importorskip("bitsandbytes")
    corpus_dir, waves = corpus
    tmp = tmp_path_factory.mktemp("qwen")
    ckpt = build_checkpoint("qwen2-audio", tmp / "qwen2-audio", seed=ROWS.index("qwen2-audio"))
    caches = [extract(f"qwen2-audio={ckpt}", corpus_dir, tmp / "cache", dtype) for dtype in ("float16", "float32")]
    pieces = [(utt, wave[s: s + WINDOW]) for utt, wave in waves.items() for s in range(0, len(wave), WINDOW)]
    states, feat_lengths, pooled_lengths = qwen_reference(ckpt, [w for _, w in pieces])
    expected, feats, pooled = {}, {}, {}
    for utt in waves:
        parts = []
        for k in [k for k, (u, _) in enumerate(pieces) if u == utt]:
            rows = np.minimum(np.arange(feat_lengths[k]) // 2, pooled_lengths[k] - 1)  # x2 repetition
            parts.append([*(h[: feat_lengths[k]] for h in states[k][:-1]), states[k][-1][rows]])
            feats[utt] = feats.get(utt, 0) + feat_lengths[k]
            pooled[utt] = pooled.get(utt, 0) + pooled_lengths[k]
        expected[utt] = [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
    return caches, expected, feats, pooled


def test_qwen2_audio_row_stores_what_the_tower_computes_with_qwens_mask(qwen_run):
    """Every state equals the tower's output when called exactly as ``Qwen2AudioModel.forward`` calls
    it (its padding mask); the pooled state repeated x2 as documented."""
    caches, expected, feats, _ = qwen_run
    stats: dict = {}
    for utt, ref in expected.items():
        for cache in caches:
            assert cache.num_frames(utt) == feats[utt], utt  # Qwen's audio_feat_lengths
            compare("qwen2-audio", cache.read(utt), ref, utt, stats)
    report("qwen2-audio", {**stats, "layers": len(ref), "utterances": len(expected)})


def test_qwen2_audio_pooled_state_holds_exactly_the_frames_qwen_feeds_its_language_model(qwen_run):
    """The last state holds Qwen's ``audio_output_lengths`` distinct pooled frames (= the audio tokens its
    processor inserts); 16,001 samples: 51 full-rate frames, 25 pooled (not 26: the 26th would average
    a real and a padded position, which Qwen never feeds its language model)."""
    caches, _, feats, pooled = qwen_run
    assert (feats["u1_odd"], pooled["u1_odd"]) == (51, 25)
    for cache in caches:
        for utt in feats:
            last = cache.read(utt)[-1].astype(np.float32)
            assert len(np.unique(last, axis=0)) == pooled[utt], utt
            np.testing.assert_array_equal(last[1::2], last[0::2][: len(last) // 2])  # frames 2j and 2j+1 equal


def test_fbank_row_equals_kaldi_fbank_with_the_documented_settings(corpus, tmp_path):
    """docs/sections/models-spectral.md: 80 bins, 25/10 ms, povey window, pre-emphasis 0.97, DC removal,
    energy floor 1, no dither, snip_edges, on int16-scaled samples."""
    from torchaudio.compliance import kaldi

    corpus_dir, waves = corpus
    caches = [extract("fbank", corpus_dir, tmp_path / "cache", dtype) for dtype in ("float16", "float32")]
    stats: dict = {}
    for utt, wave in waves.items():
        ref = kaldi.fbank(torch.from_numpy(wave)[None] * 32768.0, num_mel_bins=80, frame_length=25.0,
                          frame_shift=10.0, dither=0.0, window_type="povey", preemphasis_coefficient=0.97,
                          remove_dc_offset=True, energy_floor=1.0, snip_edges=True, sample_frequency=16000.0)
        for cache in caches:
            assert cache.num_frames(utt) == 1 + (len(wave) - 400) // 160
            compare("fbank", cache.read(utt), [ref.numpy()], utt, stats)
    report("fbank", {**stats, "layers": 1, "utterances": len(waves)})


def test_every_registry_row_has_a_conformance_case():
    from phonecli.encoders.registry import load_registry

    reg = load_registry()
    covered = set(ROWS) | {"fbank"}
    assert set(reg) - covered == {"m-ctc-t"} and covered <= set(reg)
    assert reg["m-ctc-t"].status == "removed"  # refused with one line (test_adapters_spectral)
    assert {p.name for p in FIXTURES.iterdir() if p.is_dir()} == set(ROWS)


def test_whisper_fixtures_differ_only_in_size_fields():
    """tiny..medium share one structure (one conformance case each is cheap, but this is why a
    whisper size could not hide a structural difference); large-v3 differs (128 mel bins)."""
    size = {"d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "decoder_layers",
            "decoder_attention_heads", "decoder_ffn_dim"}
    cfgs = {r: json.loads((FIXTURES / r / "config.json").read_text()) for r in WHISPER_ROWS}
    strip = {r: {k: v for k, v in c.items() if k not in size} for r, c in cfgs.items()}
    assert all(strip[r] == strip["whisper-tiny"] for r in WHISPER_ROWS[:4])
    assert cfgs["whisper-large-v3"]["num_mel_bins"] == 128 != cfgs["whisper-tiny"]["num_mel_bins"]
    pp = json.loads((FIXTURES / "whisper-large-v3" / "preprocessor_config.json").read_text())
    assert pp["feature_size"] == 128
    assert math.isclose(pp["n_samples"] / SR, 30.0)
