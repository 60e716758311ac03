"""Raw-waveform self-supervised encoders: HuBERT (incl. DistilHuBERT), WavLM, wav2vec 2.0
(XLS-R, MMS, phoneme-CTC checkpoints) and data2vec-audio 1.0.

All four share one design (CNN feature encoder, 320 samples per frame -> 50 frames/s,
convolutional position embedding, Transformer encoder), so one adapter serves them; only the
transformers class differs.

What is stored: ``num_hidden_layers + 1`` states under phonecli's layer convention
(:mod:`phonecli.encoders.layers`; = transformers 4.x ``hidden_states`` and s3prl/SUPERB):

* state 0 is the input of the first Transformer layer: ``projection(CNN) + pos_conv``, followed
  by the encoder LayerNorm for post-LN encoders (``do_stable_layer_norm=False``: base models,
  DistilHuBERT, data2vec-audio) and *without* it for pre-LN ("stable layer norm") encoders
  (large models, XLS-R, MMS, phoneme-CTC checkpoints);
* state i is the output of Transformer layer i;
* state N is the encoder's output, taken from ``model.encoder`` itself: for a pre-LN encoder the
  last layer's output *after* the encoder's final LayerNorm. transformers >= 5.16 puts the
  pre-LayerNorm state last in ``hidden_states`` (``capture_outputs(tie_last_hidden_states=False)``),
  which is neither what transformers 4.x returned, nor what s3prl's hook on the encoder output
  holds, nor what a CTC head reads; that entry is replaced. For post-LN encoders the two agree.
  (The model-level ``last_hidden_state`` is not used: with ``add_adapter`` it is the output of
  the seq2seq adapter, at another frame rate.)
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import numpy as np

from phonecli.encoders.adapters.common import (
    SAMPLE_RATE,
    check_registry_numbers,
    check_wave,
    first_line,
    hub_commit,
    load_feature_extractor,
    load_pretrained,
    quiet_transformers,
    raise_if_missing,
    resolve_device,
)
from phonecli.encoders.adapters.common import read_config_dict as _read_config_dict
from phonecli.encoders.base import EncoderAdapter, ExtractionError, LayerInfo, ModelSpec
from phonecli.encoders.layers import describe_states

# registry family -> (transformers model class, config.json model_type values it accepts)
FAMILY_CLASSES: dict[str, tuple[str, frozenset[str]]] = {
    "hubert": ("HubertModel", frozenset({"hubert"})),
    "wavlm": ("WavLMModel", frozenset({"wavlm"})),
    "wav2vec2": ("Wav2Vec2Model", frozenset({"wav2vec2"})),
    "data2vec-audio": ("Data2VecAudioModel", frozenset({"data2vec-audio"})),
}

# Parameters a base model may legitimately lack in a checkpoint: the SpecAugment mask vector
# is only used in training (and only exists when mask_time_prob > 0).
_OPTIONAL_WEIGHTS = ("masked_spec_embed",)

# Old private names, kept because other modules (fine-tuning) import them from here.
_quiet_transformers = quiet_transformers
_first_line = first_line
commit_hash = hub_commit


def read_config_dict(source: str, revision: str | None) -> dict:
    """``config.json`` of a Hub id or local directory as a dict (no model class needed)."""
    return _read_config_dict(source, revision, fix="check the Hub id/--revision, or offline pass a local copy "
                                                   "as --model NAME=DIR (or a save_pretrained directory)")


class Adapter(EncoderAdapter):
    """HuBERT / WavLM / wav2vec 2.0 / data2vec-audio encoder -> ``(states, frames, dim)`` float32.

    ``states = num_hidden_layers + 1`` (see the module docstring for what each holds),
    ``frames = model._get_feat_extract_output_lengths(samples)`` (50 frames/s at 16 kHz),
    ``dim = hidden_size``.

    Input normalisation follows the checkpoint's own feature-extractor settings
    (``Wav2Vec2FeatureExtractor``: ``do_normalize`` = zero mean / unit variance per utterance),
    loaded by ``Wav2Vec2FeatureExtractor.from_pretrained`` from ``processor_config.json``
    (transformers 5 processors) or ``preprocessor_config.json``. Only when the source has
    neither: the registry row's ``processor`` values, and for a bare local directory:
    normalise iff ``feat_extract_norm == "layer"`` (the fairseq convention,
    facebookresearch/fairseq#4687: "normalize in dataloader -> layer norm in feature
    extractor; no normalization -> group norm"). ``self.settings`` (stored in the cache
    metadata by the runner) records what was used and which file (or row) it came from.

    ``padding_safe`` is True only for "layer"-norm CNN feature encoders with a single
    position convolution (HuBERT-large, WavLM-large, wav2vec 2.0 large/XLS-R/MMS): a GroupNorm
    CNN ("group": base models, DistilHuBERT) normalises every channel over the whole padded
    time axis, so padding changes every frame (those checkpoints were trained without an
    attention mask), and data2vec-audio's stacked position convolutions leak padding into the
    valid frames. ``forward`` runs not-padding-safe models one exact length at a time.
    """

    def __init__(self, spec: ModelSpec, source: str, *, revision: str | None = None,
                 device: str = "cpu", trust_remote_code: bool = False):
        super().__init__(spec, source, revision=revision, device=device, trust_remote_code=trust_remote_code)
        import torch
        import transformers

        if spec.family not in FAMILY_CLASSES:
            raise ExtractionError(f"{spec.name}: family {spec.family!r} is not handled by the SSL adapter")
        cls_name, model_types = FAMILY_CLASSES[spec.family]
        cfg = read_config_dict(source, revision)
        model_type = cfg.get("model_type", "")
        if model_type not in model_types:
            arch = ",".join(cfg.get("architectures") or []) or "?"
            raise ExtractionError(
                f"{source}: config.json is model_type {model_type!r} ({arch}) but registry model "
                f"{spec.name!r} needs {cls_name} ({'/'.join(sorted(model_types))}); pass the directory "
                "itself as --model (its family is read from config.json) or the matching registry name"
            )
        self.device = resolve_device(device)
        cls = getattr(transformers, cls_name)
        # dtype=float32: CPU half precision is slow and lossy; the cache converts later.
        # A ForCTC/pretraining checkpoint loads into the base class by prefix stripping
        # ("hubert.", "wav2vec2.", ...); the head weights are reported as unexpected.
        model, info = load_pretrained(cls, source, revision=revision, dtype=torch.float32,
                                      trust_remote_code=trust_remote_code)
        raise_if_missing(source, info, f"{cls_name}-compatible", optional=_OPTIONAL_WEIGHTS)
        self.model = model.eval().to(self.device)
        self.config = model.config
        self.model_id = source
        # a local directory has no revision (transformers ignores --revision for it): None,
        # the weights fingerprint identifies it
        self.revision = None if Path(source).is_dir() else (hub_commit(source, revision) or revision)
        self.hidden_size = int(self.config.hidden_size)
        self.num_states = int(self.config.num_hidden_layers) + 1
        self.frame_rate = SAMPLE_RATE / float(np.prod(self.config.conv_stride))
        self.conv_norm = getattr(self.config, "feat_extract_norm", "layer")  # data2vec-audio: always layer
        self.pre_ln = bool(getattr(self.config, "do_stable_layer_norm", False))
        # data2vec-audio's position embedding is a stack of convolutions (5 in the released
        # models) with LayerNorm+GELU between them: after the first one the padded frames are no
        # longer zero and leak into the position embedding of the last ~0.9 s of valid frames
        # (5 x kernel 19), then through attention into every frame (measured: max |diff| ~3 on a
        # tiny model), so like GroupNorm CNNs it is not padding-safe.
        self.stacked_pos_conv = model_type == "data2vec-audio"
        self.padding_safe = self.conv_norm == "layer" and not self.stacked_pos_conv
        self.feature_extractor, self.settings = self._feature_extractor(source, revision)
        check_registry_numbers(spec, source, self.num_states, self.hidden_size)
        # wav2vec2/WavLM accept add_adapter: the optional seq2seq adapter downsamples after the
        # encoder, but hidden_states come from the encoder itself, so it must not count.
        params = inspect.signature(self.model._get_feat_extract_output_lengths).parameters
        self._length_kwargs = {"add_adapter": False} if "add_adapter" in params else {}

    # -- preprocessing -------------------------------------------------------------------------
    def _feature_extractor(self, source: str, revision: str | None):
        from transformers import Wav2Vec2FeatureExtractor

        base = {"feature_size": 1, "sampling_rate": SAMPLE_RATE, "padding_value": 0.0,
                "return_attention_mask": self.padding_safe}
        default = ({"do_normalize": self.conv_norm == "layer"},
                   f"default for a {self.conv_norm}-norm CNN (no processor_config.json or preprocessor_config.json)")
        fe, origin = load_feature_extractor(Wav2Vec2FeatureExtractor, self.spec, source, revision,
                                            base=base, default=default)
        info = {"class": type(self.model).__name__, "do_normalize": bool(fe.do_normalize),
                "processor_source": origin, "feat_extract_norm": self.conv_norm,
                "pre_ln_encoder": self.pre_ln, "padding_safe": self.padding_safe,
                "last_state": "encoder output (after the final LayerNorm of pre-LN encoders)"}
        return fe, info

    # -- contract --------------------------------------------------------------------------------
    def layers(self) -> list[LayerInfo]:
        return describe_states(self.spec.family, self.num_states, self.frame_rate, pre_ln=self.pre_ln)

    def num_frames(self, num_samples: int) -> int:
        import torch

        n = self.model._get_feat_extract_output_lengths(torch.tensor(int(num_samples)), **self._length_kwargs)
        return max(int(n), 0)

    def forward(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """``waves``: float32 ``(samples,)`` at 16 kHz -> per utterance float32
        ``(num_hidden_layers + 1, num_frames(samples), hidden_size)``.

        Padding-safe models run the whole list as one padded batch with an attention mask and
        each result is trimmed to its own frame count; the others run one exact length at a time.
        """
        waves = [self._check(i, w) for i, w in enumerate(waves)]
        out: list[np.ndarray | None] = [None] * len(waves)
        if self.padding_safe:
            groups = [list(range(len(waves)))] if waves else []
        else:
            by_len: dict[int, list[int]] = {}
            for i, w in enumerate(waves):
                by_len.setdefault(len(w), []).append(i)
            groups = list(by_len.values())
        for idx in groups:
            for i, feats in zip(idx, self._run([waves[i] for i in idx])):
                out[i] = feats
        return out  # type: ignore[return-value]

    # -- internals -------------------------------------------------------------------------------
    def _check(self, i: int, w: np.ndarray) -> np.ndarray:
        def too_short(n: int) -> str | None:
            return f"({n} samples) for the CNN's 400-sample receptive field" if self.num_frames(n) < 1 else None

        return check_wave(self.spec.name, i, w, too_short)

    def _run(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        mask = self.padding_safe and len({len(w) for w in batch}) > 1
        # The feature extractor normalises each utterance over its own samples only (it uses
        # the attention mask for that), then pads with zeros.
        enc = self.feature_extractor(batch, sampling_rate=SAMPLE_RATE, padding=True,
                                     return_attention_mask=True, return_tensors="pt")
        kwargs = {"attention_mask": enc["attention_mask"].to(self.device)} if mask else {}
        encoder_out: list = []
        # The encoder's own output (after its final LayerNorm) is layer N; see the module docstring.
        hook = self.model.encoder.register_forward_hook(lambda _m, _i, out: encoder_out.append(out[0]))
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                # torch deprecation notice about WavLM's float position bias next to a bool padding mask
                warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask.*")
                res = self.model(enc["input_values"].to(self.device, torch.float32),
                                 output_hidden_states=True, **kwargs)
        finally:
            hook.remove()
        states = [*res.hidden_states[:-1], encoder_out[-1]]
        # per utterance, trimmed before stacking: never holds a second (B, S, T, D) copy.
        # np.stack, not torch.stack: torch's threaded copy of strided slices measured 5-20x
        # slower on a busy 2-core CPU (143 ms vs 7 ms for 13 x 249 x 768).
        return [np.stack([h[b, : self.num_frames(len(w))].float().cpu().numpy() for h in states])
                for b, w in enumerate(batch)]
