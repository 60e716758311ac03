"""Fine-tuning: every mode trains (loss falls), trains only what it should (parameter diffs against
the saved base), writes a run directory evaluate understands, `extract --model RUN` caches the
fine-tuned encoder (checked against an independent forward), guards, CLI errors.

Tiny random models saved with save_pretrained and loaded by path (the Hub code path); the
`tiny_corpus` fixture (24 noise+tone utterances).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from phonecli.data.manifest import Manifest
from phonecli.ctc import min_frames as ctc_min_frames
from phonecli.finetune.data import make_examples
from phonecli.finetune.model import FinetuneError, parse_mode
from phonecli.finetune.train import FinetuneConfig, finetune
from phonecli.runs import Run

pytest.importorskip("peft")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the CI machine has 2 shared cores: intra-op threads only add contention for these tiny models
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _hubert_config(**kw):
    from transformers import HubertConfig

    # 320 samples per frame (5 * 8 * 8) = 50 frames/s like the real models; last conv width and hidden
    # size 64 (bitsandbytes' 4-bit blocks are 64 wide); pre-LN, layer-norm CNN (padding-safe).
    base = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                conv_dim=(32, 32, 64), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8), num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=4, feat_extract_norm="layer", do_stable_layer_norm=True,
                mask_time_prob=0.0, layerdrop=0.0)
    base.update(kw)
    return HubertConfig(**base)


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory):
    from transformers import HubertModel

    d = tmp_path_factory.mktemp("tiny_hubert")
    torch.manual_seed(0)
    HubertModel(_hubert_config()).save_pretrained(d)
    return d


def _base_state(d) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(d) / "model.safetensors"))


def _ft(model, data, out, mode, **kw):
    base = dict(epochs=3, lr=2e-3, batch_seconds=4.0, warmup_ratio=0.0, device="cpu")
    base.update(kw)
    return finetune(str(model), str(data), out, FinetuneConfig(mode=mode, **base), progress=False)


def _weights(run) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run.weights_path))


# ---------------------------------------------------------------------------------------------
# modes


@pytest.mark.parametrize("mode", ["full", "freeze-feature-encoder", "top:1", "lora", "qlora"])
def test_each_mode_trains_only_its_parameters_and_loss_falls(mode, hubert_dir, tiny_corpus, tmp_path, device):
    res = _ft(hubert_dir, tiny_corpus, tmp_path / "run", mode, device=device)
    assert all(p.device.type == device for p in res.model.parameters() if p.requires_grad)
    log = res.run.read_log()
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert all(math.isfinite(r["dev_loss"]) for r in log)
    base = _base_state(hubert_dir)
    w = _weights(res.run)
    assert w["head.weight"].shape == (40, 64) and w["head.bias"].shape == (40,)
    changed = lambda a, b: not torch.equal(a, b)  # noqa: E731

    if mode in ("lora", "qlora"):
        # adapter-only weights: LoRA matrices of the attention projections + the head
        assert set(w) - {"head.weight", "head.bias"} and all(k.startswith("lora.") for k in w if not k.startswith("head."))
        targets = {k.split(".")[-3] for k in w if k.startswith("lora.")}
        assert targets == {"q_proj", "k_proj", "v_proj", "out_proj"}
        assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in w.items())  # B starts at 0
        enc = res.model.encoder
        trained = {n for n, p in res.model.named_parameters() if p.requires_grad}
        assert trained and all("lora_" in n or n.startswith("head.") for n in trained)
        if mode == "lora":
            inner = enc.base_model.model
            for name, t in base.items():
                if name == "masked_spec_embed":
                    continue
                mod_name, _, attr = name.rpartition(".")
                mod = inner.get_submodule(mod_name)
                mod = getattr(mod, "base_layer", mod)
                assert torch.equal(getattr(mod, attr).detach(), t), name
        else:
            import bitsandbytes as bnb
            from transformers import HubertModel

            from phonecli.finetune.model import bnb_config

            fresh = HubertModel.from_pretrained(hubert_dir, quantization_config=bnb_config(torch.float32),
                                                device_map={"": device})
            mods = dict(enc.base_model.model.named_modules())
            n4 = 0
            for name, m in fresh.named_modules():
                if isinstance(m, bnb.nn.Linear4bit):
                    tm = getattr(mods[name], "base_layer", mods[name])
                    assert isinstance(tm, bnb.nn.Linear4bit)
                    assert torch.equal(tm.weight.data, m.weight.data), name  # packed nf4 bytes untouched
                    assert torch.equal(tm.weight.quant_state.absmax, m.weight.quant_state.absmax)
                    n4 += 1
            assert n4 == 2 * 6  # q,k,v,out + 2 feed-forward Linears per layer; feature projection kept fp32
        return

    enc = {k[len("encoder."):]: v for k, v in w.items() if k.startswith("encoder.")}
    assert set(enc) == set(base)
    cnn = [k for k in base if k.startswith("feature_extractor.")]
    layer0 = [k for k in base if k.startswith("encoder.layers.0.")]
    layer1 = [k for k in base if k.startswith("encoder.layers.1.")]
    if mode == "full":
        assert all(changed(enc[k], base[k]) for k in cnn + layer0 + layer1)
    elif mode == "freeze-feature-encoder":
        assert all(torch.equal(enc[k], base[k]) for k in cnn)
        assert all(changed(enc[k], base[k]) for k in layer0 + layer1 + ["feature_projection.projection.weight"])
    else:  # top:1: only the last layer and the final LayerNorm above it
        assert all(torch.equal(enc[k], base[k]) for k in cnn + layer0 + ["feature_projection.projection.weight"])
        assert all(changed(enc[k], base[k]) for k in layer1 + ["encoder.layer_norm.weight"])


def test_the_loop_can_memorise_three_utterances(hubert_dir, tiny_corpus, tmp_path):
    """Targets, batches and decoding line up: trained on 3 utterances (dev = copies of them), greedy
    decoding of the written train posteriors gives exactly each utterance's own phones."""
    import copy

    from phonecli.data.phones import encode
    from phonecli.ctc import greedy_ids

    m = Manifest.load(tiny_corpus)
    for u in m:
        u.audio = str(m.audio_path(u))
    train = m.split("train")[:3]
    dev = []
    for u in train:
        d = copy.deepcopy(u)
        d.utt_id, d.split, d.speaker = "dev" + u.utt_id, "dev", "D" + u.speaker
        dev.append(d)
    Manifest(utterances=train + dev + m.split("test")[:1], source={"kind": "tiny-test"}).save(tmp_path / "data")
    res = _ft(hubert_dir, tmp_path / "data", tmp_path / "run", "full", epochs=120, lr=3e-3, batch_seconds=8.0)
    post = res.run.read_posteriors("train")
    assert [greedy_ids(post[u.utt_id]) for u in train] == [encode(u.canonical_phones) for u in train]
    assert res.run.info["selection"]["value"] == 0.0


def test_parse_mode():
    assert str(parse_mode("top:3")) == "top:3" and parse_mode("top:3").top_k == 3
    assert parse_mode("qlora").lora and not parse_mode("full").lora
    for bad in ("top:0", "top", "partial", "LoRA"):
        with pytest.raises(FinetuneError, match="--mode"):
            parse_mode(bad)


# ---------------------------------------------------------------------------------------------
# the run directory


@pytest.fixture(scope="module")
def lora_run(hubert_dir, tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ft-lora"
    return _ft(hubert_dir, tiny_corpus, out, "lora", epochs=2)


def test_run_directory_has_posteriors_for_every_split_with_encoder_frame_counts(lora_run, tiny_corpus, hubert_dir):
    run = Run.open(lora_run.run.path)
    assert run.kind == "finetune" and run.info["status"] == "complete"
    assert run.posterior_splits() == ["train", "dev", "test"]
    cfg = run.info["config"]
    assert cfg["mode"] == "lora" and cfg["base_model"]["model_id"] == str(Path(hubert_dir).resolve())
    assert cfg["model"] == Path(hubert_dir).name and cfg["model_source"] == str(Path(hubert_dir).resolve())
    assert cfg["lr"] == 2e-3 and cfg["epochs"] == 2 and cfg["defaults_from"].startswith("seed:")
    assert cfg["lora"]["r"] == 16 and cfg["parameters"]["trainable"] < cfg["parameters"]["total"]
    assert run.info["sources"][0]["fingerprint"]
    m = Manifest.load(tiny_corpus)
    for split in ("train", "dev", "test"):
        post = run.read_posteriors(split)
        assert list(post) == [u.utt_id for u in m.split(split)]
        for u in m.split(split):
            # 320 samples per frame, 400-sample receptive field: HF's conv formula
            frames = (((u.num_samples - 10) // 5 + 1 - 8) // 8 + 1 - 8) // 8 + 1
            assert post[u.utt_id].shape == (frames, 40)
            assert np.allclose(np.exp(post[u.utt_id]).sum(1), 1.0, atol=1e-4)
    # dev-based selection: the logged epoch with the lowest (dev PER, dev loss)
    log = run.read_log()
    best = min(log, key=lambda r: (r["dev_per"], r["dev_loss"]))
    assert run.info["selection"]["epoch"] == best["epoch"] and run.info["selection"]["metric"] == "dev_per"


def _merged_lora_encoder(run, base_dir):
    """Independent of phonecli/peft merging: W + (B @ A) * alpha / r on a fresh base."""
    from transformers import HubertModel

    enc = HubertModel.from_pretrained(base_dir).eval()
    w = _weights(run)
    lc = run.info["config"]["lora"]
    scale = lc["lora_alpha"] / lc["r"]
    n = 0
    with torch.no_grad():
        for k, a in w.items():
            if k.endswith("lora_A.weight"):
                b = w[k.replace("lora_A", "lora_B")]
                mod = k[len("lora.base_model.model."):-len(".lora_A.weight")]
                enc.get_submodule(mod).weight += (b @ a) * scale
                n += 1
    assert n == 8
    return enc


def test_posteriors_equal_an_independent_forward(lora_run, hubert_dir, tiny_corpus):
    from phonecli.data.audio import load_audio

    run = lora_run.run
    enc = _merged_lora_encoder(run, hubert_dir)
    w = _weights(run)
    m = Manifest.load(tiny_corpus)
    post = run.read_posteriors("test")
    for u in m.split("test")[:3]:
        x = torch.from_numpy(load_audio(m.audio_path(u)))
        x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)  # layer-norm CNN: normalised input
        with torch.no_grad():
            h = enc(x[None]).last_hidden_state[0]
            ref = torch.log_softmax(h @ w["head.weight"].T + w["head.bias"], -1).numpy()
        assert np.allclose(post[u.utt_id], ref, atol=2e-4)


def test_extract_model_run_caches_the_merged_encoder(lora_run, hubert_dir, tiny_corpus, tmp_path):
    from click.testing import CliRunner

    from phonecli.cache import FeatureCache
    from phonecli.cli import main
    from phonecli.data.audio import load_audio

    res = CliRunner().invoke(main, ["extract", "--model", str(lora_run.run.path), "--data", str(tiny_corpus),
                                    "--out", str(tmp_path / "ft.zarr"), "--dtype", "float32", "--splits", "dev"])
    assert res.exit_code == 0, res.output
    cache = FeatureCache.open(res.stdout.strip().splitlines()[-1])
    assert cache.metadata["model"] == "ft-lora" and cache.metadata["model_id"].startswith("finetune:")
    assert cache.metadata["settings"]["adapter"]["finetune"]["lora_merged"] is True
    enc = _merged_lora_encoder(lora_run.run, hubert_dir)
    m = Manifest.load(tiny_corpus)
    for u in m.split("dev"):
        x = torch.from_numpy(load_audio(m.audio_path(u)))
        x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
        with torch.no_grad():
            out = enc(x[None], output_hidden_states=True)
        # phonecli's layer convention: index N = the encoder output after its final LayerNorm
        ref = torch.stack((*out.hidden_states[:-1], out.last_hidden_state), 1)[0].numpy()
        got = cache.read(u.utt_id)
        assert got.shape == ref.shape == (3, cache.num_frames(u.utt_id), 64)
        assert np.allclose(got, ref, atol=1e-4), u.utt_id
    # the fingerprint is that of the fine-tuned weights, not the base's
    from phonecli.extract.models import load_encoder as get_adapter

    base_cache_fp = get_adapter(str(hubert_dir)).fingerprint()
    assert cache.metadata["weights_fingerprint"] != base_cache_fp


def test_extract_qlora_run_matches_the_trained_4bit_model(hubert_dir, tiny_corpus, tmp_path):
    """QLoRA: the cached encoder = nf4-dequantized base + merged LoRA = what was trained."""
    from phonecli.data.audio import load_audio
    from phonecli.extract.models import load_encoder as get_adapter

    res = _ft(hubert_dir, tiny_corpus, tmp_path / "ft-q", "qlora", epochs=1)
    adapter = get_adapter(str(res.run.path))
    m = Manifest.load(tiny_corpus)
    waves = [load_audio(m.audio_path(u)) for u in m.split("dev")[:2]]
    got = adapter.forward(waves)
    trained = res.model.encoder.eval()
    for wv, g in zip(waves, got):
        x = torch.from_numpy(adapter.feature_extractor(wv, sampling_rate=16000)["input_values"][0])
        with torch.no_grad():
            out = trained(x[None], output_hidden_states=True)
        ref = torch.stack((*out.hidden_states[:-1], out.last_hidden_state), 1)[0].numpy()
        assert g.shape == ref.shape
        assert np.allclose(g, ref, atol=1e-4)


def test_evaluate_and_report_work_on_a_finetune_run(lora_run, hubert_dir, tmp_path):
    from phonecli.evaluate import evaluate_run

    metrics = evaluate_run(lora_run.run.path, protocol="seed", ci=False)
    assert metrics["kind"] == "finetune"
    assert (lora_run.run.path / "metrics.json").exists()
    assert metrics["seed"]
    from click.testing import CliRunner

    from phonecli.cli import main

    res = CliRunner().invoke(main, ["report", str(lora_run.run.path), "--out", str(tmp_path / "results")])
    assert res.exit_code == 0, res.output
    rows = [ln for ln in (tmp_path / "results" / "results.md").read_text().splitlines() if "mode lora" in ln]
    assert len(rows) == 1 and rows[0].startswith(f"| {hubert_dir.name} |")


def test_late_fusion_of_two_finetune_runs(lora_run, hubert_dir, tiny_corpus, tmp_path):
    from click.testing import CliRunner

    from phonecli.cli import main

    other = _ft(hubert_dir, tiny_corpus, tmp_path / "ft-top", "top:1", epochs=1).run
    res = CliRunner().invoke(main, ["fuse", "late", str(lora_run.run.path), str(other.path), "--alphas", "0:1:0.5",
                                    "--out", str(tmp_path / "late"), "--jobs", "1", "--no-plot"])
    assert res.exit_code == 0, res.output
    fused = Run.open(tmp_path / "late")
    assert fused.kind == "late-fusion"
    a, b = lora_run.run.read_posteriors("test"), other.read_posteriors("test")
    f = fused.read_posteriors("test")
    assert list(f) == list(a) and all(f[u].shape == a[u].shape == b[u].shape for u in a)


def test_memory_levers_bf16_checkpointing_accumulation(hubert_dir, tiny_corpus, tmp_path):
    """bf16 autocast + gradient checkpointing + 2-batch accumulation train; checkpointing does not change
    the fp32 result (same seed: recomputed activations are identical), accumulation halves the steps."""
    from safetensors.torch import load_file

    runs = {}
    for name, kw in {"plain": {}, "ckpt": {"gradient_checkpointing": True},
                     "accum": {"grad_accum": 2}, "bf16": {"precision": "bf16", "gradient_checkpointing": True}}.items():
        runs[name] = _ft(hubert_dir, tiny_corpus, tmp_path / name, "freeze-feature-encoder", epochs=2, **kw)
    logs = {k: r.run.read_log() for k, r in runs.items()}
    wp, wc = load_file(str(runs["plain"].run.weights_path)), load_file(str(runs["ckpt"].run.weights_path))
    assert all(torch.allclose(wp[k], wc[k], atol=1e-5) for k in wp)
    assert logs["accum"][-1]["step"] == sum(math.ceil(n / 2) for n in _batches_per_epoch(logs["plain"]))
    assert logs["bf16"][-1]["train_loss"] < logs["bf16"][0]["train_loss"]
    assert runs["bf16"].run.info["config"]["precision"] == "bf16"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_each_device(precision, hubert_dir, tiny_corpus, tmp_path, device):
    """bf16 autocast trains on CPU and CUDA without a GradScaler; fp16 takes the GradScaler path on CUDA
    (float32 master weights: GradScaler.unscale_ refuses float16 gradients) and is refused on the CPU."""
    from phonecli.errors import ConfigError

    kw = dict(precision=precision, epochs=2, device=device)
    if precision == "fp16" and device == "cpu":
        with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
            _ft(hubert_dir, tiny_corpus, tmp_path / precision, "lora", **kw)
        return
    res = _ft(hubert_dir, tiny_corpus, tmp_path / precision, "lora", **kw)
    log = res.run.read_log()
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["dev_loss"]) for r in log)
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert all(p.dtype == torch.float32 for p in res.model.parameters() if p.requires_grad)
    assert res.run.info["config"]["precision"] == precision
    assert all(torch.isfinite(v).all() for v in _weights(res.run).values())


def _batches_per_epoch(log):
    steps = [r["step"] for r in log]
    return [b - a for a, b in zip([0] + steps, steps)]


# ---------------------------------------------------------------------------------------------
# other families


_CONV = dict(conv_dim=(32, 32, 64), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8), num_conv_pos_embeddings=16,
             num_conv_pos_embedding_groups=4, mask_time_prob=0.0, layerdrop=0.0)


@pytest.mark.parametrize("kind", ["wavlm-group-norm", "wav2vec2-phoneme-ctc", "data2vec-audio"])
def test_ssl_families_and_a_ctc_checkpoint_get_a_fresh_40_way_head(kind, tiny_corpus, tmp_path):
    import transformers
    from safetensors.torch import load_file

    from phonecli.finetune.export import load_finetuned

    d = tmp_path / kind
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, **_CONV)
    torch.manual_seed(0)
    if kind == "wavlm-group-norm":  # base-model CNN: not padding-safe (trained unmasked, decoded one length at a time)
        transformers.WavLMModel(transformers.WavLMConfig(feat_extract_norm="group", **small)).save_pretrained(d)
        prefix = ""
    elif kind == "wav2vec2-phoneme-ctc":  # like facebook/wav2vec2-xlsr-53-espeak-cv-ft: its own 392-way head
        transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(vocab_size=392, feat_extract_norm="layer",
                                                                do_stable_layer_norm=True, **small)).save_pretrained(d)
        prefix = "wav2vec2."
    else:
        transformers.Data2VecAudioModel(transformers.Data2VecAudioConfig(**small)).save_pretrained(d)
        prefix = ""
    saved = load_file(str(d / "model.safetensors"))
    res = _ft(d, tiny_corpus, tmp_path / "run", "top:1", epochs=1)
    w = _weights(res.run)
    assert w["head.weight"].shape == (40, 64) and not any("lm_head" in k for k in w)
    k = "encoder.layers.0.attention.q_proj.weight"
    assert torch.equal(w[f"encoder.{k}"], saved[prefix + k])  # frozen layer = the checkpoint's, not a random init
    m = Manifest.load(tiny_corpus)
    post = res.run.read_posteriors("dev")
    frames = lambda n: (((n - 10) // 5 + 1 - 8) // 8 + 1 - 8) // 8 + 1  # noqa: E731
    assert all(post[u.utt_id].shape == (frames(u.num_samples), 40) for u in m.split("dev"))
    # posteriors are batch-independent: one utterance alone through the rebuilt model gives the same rows
    from phonecli.data.audio import load_audio
    from phonecli.finetune.data import Collator, make_examples

    adapter, model = load_finetuned(res.run.path)
    ex, _ = make_examples(m, "dev", "canonical", adapter.num_frames, training=False)
    with torch.no_grad():
        lp, n = model(Collator(adapter)([(ex[2], load_audio(ex[2].audio))]))
    assert np.allclose(post[ex[2].utt_id], lp[0, : int(n[0])].numpy(), atol=1e-4)


def test_whisper_and_w2v_bert_encoders_train_with_a_ctc_head(tiny_corpus, tmp_path):
    from transformers import (
        SeamlessM4TFeatureExtractor,
        Wav2Vec2BertConfig,
        Wav2Vec2BertModel,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    wd = tmp_path / "whisper"
    torch.manual_seed(0)
    WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=64, d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )).save_pretrained(wd)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(wd)
    bd = tmp_path / "w2vbert"
    Wav2Vec2BertModel(Wav2Vec2BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, output_hidden_size=32,
        conv_depthwise_kernel_size=5, feature_projection_input_dim=160, mask_time_prob=0.0,
    )).save_pretrained(bd)
    SeamlessM4TFeatureExtractor().save_pretrained(bd)
    m = Manifest.load(tiny_corpus)
    for d, mode, frames in ((wd, "top:1", lambda n: math.ceil(n / 320)),
                            (bd, "freeze-feature-encoder", lambda n: (1 + (n - 400) // 160) // 2)):
        res = _ft(d, tiny_corpus, tmp_path / f"run-{d.name}", mode, epochs=2, batch_seconds=6.0)
        log = res.run.read_log()
        assert log[-1]["train_loss"] < log[0]["train_loss"], d.name
        post = res.run.read_posteriors("dev")
        assert all(post[u.utt_id].shape == (frames(u.num_samples), 40) for u in m.split("dev"))
        assert res.run.info["config"]["base_model"]["family"] == ("whisper" if d == wd else "w2v-bert")
        # extract --model RUN rebuilds exactly the trained encoder (same states as the in-memory model)
        from phonecli.data.audio import load_audio
        from phonecli.extract.models import load_encoder as get_adapter
        from phonecli.finetune.data import Collator

        adapter = get_adapter(str(res.run.path))
        u = m.split("dev")[0]
        wave = load_audio(m.audio_path(u))
        got = adapter.forward([wave])[0]
        batch = Collator(adapter).inputs([wave])
        enc = res.model.encoder.eval()
        with torch.no_grad():
            key = "input_features"
            kw = {"attention_mask": batch["attention_mask"]} if "attention_mask" in batch else {}
            ref = torch.stack(enc(batch[key], output_hidden_states=True, **kw).hidden_states, 1)[0].numpy()
        assert got.shape == (3, frames(u.num_samples), ref.shape[-1])
        assert np.allclose(got, ref[:, : got.shape[1]], atol=1e-4)


def test_family_defaults_follow_the_seed_table():
    from phonecli.encoders.registry import load_registry
    from phonecli.finetune.train import family_defaults

    reg = load_registry()
    assert family_defaults(reg["hubert-large"], 1024)["lr"] == 3e-5
    assert family_defaults(reg["whisper-small"], 768)["lr"] == 1e-4
    assert family_defaults(reg["w2v-bert-2"], 1024)["lr"] == 5e-5
    one_b = family_defaults(reg["mms-1b"], 1280)
    assert one_b["lr"] == 3e-5 and one_b["batch_seconds"] == 4.0 and one_b["epochs"] == 10
    assert family_defaults(reg["distilhubert"], 768)["lr"] == 3e-5


# ---------------------------------------------------------------------------------------------
# guards and errors


def _corpus_with_bad_utterance(src: Path, dst: Path) -> tuple[Manifest, str]:
    """A copy of the tiny corpus where one training utterance has far more phones than frames."""
    m = Manifest.load(src)
    u = min(m.split("train"), key=lambda x: x.num_samples)  # short: not dropped by --max-audio-seconds
    u.words[0].phones = ["B", "AA"] * 60
    u.words[0].phone_accuracy = [2.0] * 120
    u.words[0].mispronunciations = []
    for x in m:
        x.audio = str(m.audio_path(x))
    m2 = Manifest(utterances=m.utterances, source={"kind": "tiny-test"})
    m2.save(dst)
    return m2, u.utt_id


def test_guards_skip_infeasible_and_too_long_utterances(hubert_dir, tiny_corpus, tmp_path):
    m, bad = _corpus_with_bad_utterance(tiny_corpus, tmp_path / "data")
    long_ids = {u.utt_id for u in m.split("train") if u.num_samples > 1.2 * 16000 and u.utt_id != bad}
    assert long_ids  # the tiny corpus has 0.6-1.6 s utterances
    res = _ft(hubert_dir, tmp_path / "data", tmp_path / "run", "top:1", epochs=1, max_audio_seconds=1.2)
    skipped = {s["utt_id"]: s["reason"] for s in res.run.info["skipped"]}
    u = m[bad]
    from phonecli.data.phones import encode

    n = len(u.canonical_phones)  # 120 + the other words' phones
    frames = (((u.num_samples - 10) // 5 + 1 - 8) // 8 + 1 - 8) // 8 + 1
    need = ctc_min_frames(encode(u.canonical_phones))
    assert need >= n > frames
    assert skipped.pop(bad) == f"{n} canonical phones need {need} CTC frames but the audio gives {frames}"
    assert set(skipped) == long_ids and all("--max-audio-seconds 1.2 (dropped)" in r for r in skipped.values())
    # posteriors still cover every utterance, skipped ones included
    assert bad in res.run.read_posteriors("train") and long_ids <= set(res.run.read_posteriors("train"))


def test_make_examples_realized_targets(tiny_corpus):
    from phonecli.data.phones import encode

    m = Manifest.load(tiny_corpus)
    ex, _ = make_examples(m, "train", "realized", lambda n: n // 320, training=False)
    assert [e.target for e in ex] == [encode(u.realized_phones) for u in m.split("train")]
    assert any(u.realized_phones != u.canonical_phones for u in m.split("train"))


def test_non_finite_loss_stops_naming_step_and_utterances(hubert_dir, tiny_corpus, tmp_path):
    from phonecli.errors import NonFiniteError
    from phonecli.runs import Run

    with pytest.raises(NonFiniteError) as e:
        _ft(hubert_dir, tiny_corpus, tmp_path / "run", "full", epochs=3, lr=1e9)
    msg = str(e.value)
    assert "non-finite CTC loss at step " in msg and msg.startswith("utterance 0000000") and "\n" not in msg
    assert "lower --lr" in msg and f"{tiny_corpus}/audio/" in msg          # names the utterance's audio file
    assert Run.open(tmp_path / "run", require_complete=False).info["status"] == "failed"
    # the stopped run is not an encoder yet: extract says so in one line
    from click.testing import CliRunner

    from phonecli.cli import main

    res = CliRunner().invoke(main, ["extract", "--model", str(tmp_path / "run"), "--data", str(tiny_corpus),
                                    "--out", str(tmp_path / "x.zarr")])
    assert res.exit_code != 0 and "this run failed" in res.output and "--resume" in res.output


def test_unreadable_audio_stops_with_one_line_naming_the_utterance(hubert_dir, tiny_corpus, tmp_path):
    from phonecli.data.audio import file_hash

    m = Manifest.load(tiny_corpus)
    for u in m:
        u.audio = str(m.audio_path(u))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav")
    m.split("train")[3].audio = str(broken)
    m.split("train")[3].audio_sha256 = file_hash(broken)     # as `data prepare` would record it
    Manifest(utterances=m.utterances, source={"kind": "tiny-test"}).save(tmp_path / "data")
    with pytest.raises(FinetuneError) as e:
        _ft(hubert_dir, tmp_path / "data", tmp_path / "run", "top:1", epochs=1)
    msg = str(e.value)
    assert msg.startswith(f"utterance {m.split('train')[3].utt_id}: {broken}: unreadable audio") and "--resume" in msg


def test_lora_targets_the_conformer_attention_of_w2v_bert():
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    from phonecli.finetune.model import LoraSettings, apply_lora

    enc = apply_lora(Wav2Vec2BertModel(Wav2Vec2BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                          intermediate_size=64, output_hidden_size=32)), LoraSettings(r=4))
    trained = sorted({n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in enc.named_parameters() if p.requires_grad})
    assert trained == ["linear_k", "linear_out", "linear_q", "linear_v"]


def test_inference_batches_respect_seconds_exact_lengths_and_utterance_cap():
    from phonecli.finetune.data import Example, inference_batches

    ex = [Example(str(i), "", n, 1, [1]) for i, n in enumerate([16000, 32000, 16000, 8000, 32000, 16000])]
    safe = inference_batches(ex, batch_seconds=4.0, padding_safe=True)
    assert sorted(i for b in safe for i in b) == list(range(6))
    assert all(len(b) * max(ex[i].samples for i in b) <= 4 * 16000 for b in safe)
    unsafe = inference_batches(ex, batch_seconds=100.0, padding_safe=False)
    assert [[ex[i].samples for i in b] for b in unsafe] == [[8000], [16000] * 3, [32000] * 2]
    assert [len(b) for b in inference_batches(ex, 100.0, True, max_utts=4)] == [4, 2]


def test_cli_errors(hubert_dir, tiny_corpus, lora_run, tmp_path):
    from click.testing import CliRunner

    from phonecli.cli import main

    r = CliRunner()
    common = ["finetune", "--model", str(hubert_dir), "--data", str(tiny_corpus)]
    res = r.invoke(main, common + ["--mode", "lora", "--out", str(lora_run.run.path)])
    assert res.exit_code != 0 and "holds a finished finetune run; pass --overwrite to replace it" in res.output
    res = r.invoke(main, common + ["--mode", "top:9", "--out", str(tmp_path / "x"), "--device", "cpu"])
    assert res.exit_code != 0 and "has only 2 Transformer layers" in res.output
    res = r.invoke(main, common + ["--mode", "full", "--out", str(tmp_path / "y"), "--precision", "fp16",
                                   "--device", "cpu"])
    assert res.exit_code != 0 and "fp16 needs a CUDA device" in res.output
    res = r.invoke(main, ["finetune", "--model", "fbank", "--data", str(tiny_corpus), "--mode", "full",
                          "--out", str(tmp_path / "z"), "--device", "cpu"])
    assert res.exit_code != 0 and "family 'fbank' has no fine-tuning path" in res.output
    # --resume of a completed run: nothing to do, last line is the run
    res = r.invoke(main, common + ["--mode", "lora", "--out", str(lora_run.run.path), "--resume", "--epochs", "2",
                                   "--lr", "2e-3", "--batch-seconds", "4", "--warmup-ratio", "0"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1] == str(lora_run.run.path)
    res = r.invoke(main, common + ["--mode", "full", "--out", str(lora_run.run.path), "--resume"])
    assert res.exit_code != 0 and "--resume with mode='full' but the run was started with 'lora'" in res.output
