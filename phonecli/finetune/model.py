"""The fine-tuned model: an encoder loaded through the extraction adapters + a fresh 40-way CTC head.

Why not ``HubertForCTC``/``Wav2Vec2ForCTC`` & co.? Whisper and (for CTC) Wav2Vec2-BERT have
no or a differently-shaped ForCTC class, the checkpoints' own heads (32 letters, 392 espeak
phones) must never leak into ours, and a single wrapper gives one code path for every family:
the encoder comes from the extraction adapter of the same registry row (same class, same
input normalisation, same missing-weights checks, same frame-count formula), so the encoder
that is fine-tuned is exactly the one ``phonecli extract`` reads, and ``extract --model RUN``
can rebuild it from ``run.json`` + ``weights.safetensors``.

Head: ``Dropout(final_dropout) -> Linear(hidden_size, 40)`` over the encoder's
``last_hidden_state`` (for pre-LN encoders that is after the final LayerNorm, as in HF ForCTC),
vocabulary of the manifest (``Manifest.vocab``; SpeechOcean762: ``phonecli.data.phones.VOCAB``,
index 0 = CTC blank, 39 phones); no tokenizer,
so no BOS/EOS/pad/unk symbols can enter the vocabulary.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from phonecli.data.phones import VOCAB
from phonecli.errors import FinetuneError  # noqa: F401  (re-exported)

SAMPLE_RATE = 16_000
MODES = ("full", "freeze-feature-encoder", "top:K", "lora", "qlora")
FAMILIES = ("hubert", "wavlm", "wav2vec2", "data2vec-audio", "w2v-bert", "whisper")
SSL_FAMILIES = ("hubert", "wavlm", "wav2vec2", "data2vec-audio")
# Leaf names of the attention projections LoRA targets: q/k/v/out of HuBERT, WavLM, wav2vec2,
# data2vec-audio and Whisper; linear_q/k/v/out of Wav2Vec2-BERT's conformer self-attention.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "linear_q", "linear_k", "linear_v", "linear_out")
# Modules kept in full precision under QLoRA (see bnb_config).
QLORA_SKIP = ("feature_projection",)
# Parameters of the "feature encoder" that freeze-feature-encoder freezes, per family (name prefixes
# inside the encoder): the CNN waveform encoder of SSL models (HF ``freeze_feature_encoder``), the
# fbank feature projection of W2V-BERT (the seed's "freeze feature_projection"), Whisper's conv stem.
FEATURE_ENCODER_PREFIXES = {
    **{f: ("feature_extractor.",) for f in SSL_FAMILIES},
    "w2v-bert": ("feature_projection.",),
    "whisper": ("conv1.", "conv2.", "embed_positions."),
}


@dataclass
class Mode:
    """A parsed ``--mode``: ``name`` in full|freeze-feature-encoder|top|lora|qlora, ``top_k`` for top:K."""

    name: str
    top_k: int = 0

    @property
    def lora(self) -> bool:
        return self.name in ("lora", "qlora")

    def __str__(self) -> str:
        return f"top:{self.top_k}" if self.name == "top" else self.name


def parse_mode(text: str) -> Mode:
    m = re.fullmatch(r"top:(\d+)", text.strip())
    if m:
        k = int(m.group(1))
        if k < 1:
            raise FinetuneError(f"--mode {text}: K must be >= 1 (the number of top Transformer layers to train)")
        return Mode("top", k)
    if text in ("full", "freeze-feature-encoder", "lora", "qlora"):
        return Mode(text)
    raise FinetuneError(f"--mode {text!r}: choose full, freeze-feature-encoder, top:K (e.g. top:4), lora or qlora")


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (peft ``LoraConfig``); ``targets`` are leaf module names."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))


# -- loading ------------------------------------------------------------------------------------

def load_adapter(model: str, *, device: str = "cpu", revision: str | None = None, trust_remote_code: bool = False):
    """Registry name / save_pretrained dir / NAME=DIR -> the extraction adapter (fp32 encoder + preprocessing).

    Raises :class:`FinetuneError` for families without a CTC fine-tuning path.
    """
    from phonecli.encoders.base import ExtractionError
    from phonecli.encoders.registry import get_adapter, resolve

    try:
        spec, _ = resolve(model)
    except ExtractionError as e:
        raise FinetuneError(str(e)) from e
    if spec.family not in FAMILIES:
        raise FinetuneError(
            f"{model}: family {spec.family!r} has no fine-tuning path; fine-tune one of the families "
            f"{', '.join(FAMILIES)} (frozen encoders of the others are served by `phonecli probe`)"
        )
    try:
        return get_adapter(model, revision=revision, device=device, trust_remote_code=trust_remote_code)
    except ExtractionError as e:
        raise FinetuneError(str(e)) from e


def bnb_config(compute_dtype: torch.dtype):
    """The QLoRA quantization: 4-bit NormalFloat weights, double quantization off, ``compute_dtype`` matmuls.

    The feature projection (CNN/fbank -> hidden, one small layer) stays in full precision: the
    SSL encoders zero its padded frames in place, which autograd forbids on bitsandbytes' 4-bit
    matmul output, and a full-precision input layer is the usual QLoRA practice anyway.
    """
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_use_double_quant=False,
                              llm_int8_skip_modules=list(QLORA_SKIP))


def load_encoder_4bit(adapter, compute_dtype: torch.dtype, device: str) -> nn.Module:
    """Reload the adapter's encoder with nf4 4-bit Linear layers (bitsandbytes) from the same source/revision,
    on ``device``; it replaces ``adapter.model`` (load the adapter on the CPU: the float32 copy never
    needs to fit on the GPU)."""
    import transformers

    from phonecli.encoders.adapters.ssl import _quiet_transformers

    family = adapter.spec.family
    cls = transformers.WhisperModel if family == "whisper" else getattr(transformers, type(adapter.model).__name__)
    adapter.model = None  # drop the float32 copy first: peak memory = one copy, not both
    with _quiet_transformers():
        full = cls.from_pretrained(adapter.model_id, revision=adapter.revision, dtype=torch.float32,
                                   quantization_config=bnb_config(compute_dtype), device_map={"": device})
    enc = full.get_encoder() if family == "whisper" else full
    disable_bnb_cpu_packing(enc)
    adapter.model = enc  # the adapter's frame-count formula needs a model object
    adapter.device = device
    return enc


def disable_bnb_cpu_packing(module: nn.Module) -> None:
    """bitsandbytes 0.50 repacks a Linear4bit's weight for AVX512-BF16 CPU kernels on its first
    no-grad forward and the repacked layout then breaks every training forward (in-place bias add
    on a leaf view). Dev evaluation runs between training epochs, so the repacking is switched off."""
    import bitsandbytes as bnb

    for m in module.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False


def transformer_layers(encoder: nn.Module, family: str) -> nn.ModuleList:
    """The encoder's stack of Transformer/conformer blocks (bottom first)."""
    inner = unwrap_peft(encoder)
    return inner.layers if family == "whisper" else inner.encoder.layers


def unwrap_peft(encoder: nn.Module) -> nn.Module:
    base = getattr(encoder, "base_model", None)
    return base.model if base is not None and hasattr(base, "model") and base is not encoder else encoder


# -- the model ----------------------------------------------------------------------------------

class CTCModel(nn.Module):
    """Encoder + ``Dropout -> Linear(hidden, 40)`` CTC head.

    ``forward(batch)`` takes what :class:`phonecli.finetune.data.Collator` makes and returns
    ``(log_probs, lengths)``: ``(batch, frames, 40)`` float32 natural-log posteriors (padded
    frames beyond ``lengths`` are garbage) and ``(batch,)`` int64 valid frame counts
    (``adapter.num_frames(samples)``, 50 frames/s for every supported family).
    """

    def __init__(self, encoder: nn.Module, family: str, hidden_size: int, dropout: float = 0.1,
                 vocab_size: int = len(VOCAB)):
        super().__init__()
        self.encoder = encoder
        self.family = family
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)   # the manifest's vocabulary (Manifest.vocab)

    def hidden(self, batch: dict) -> torch.Tensor:
        """Encoder output ``(batch, frames, hidden)`` (``last_hidden_state``)."""
        if self.family == "whisper":
            return self._whisper_hidden(batch)
        key = "input_features" if self.family == "w2v-bert" else "input_values"
        kwargs = {"attention_mask": batch["attention_mask"]} if "attention_mask" in batch else {}
        return self.encoder(batch[key], **kwargs).last_hidden_state

    def _whisper_hidden(self, batch: dict) -> torch.Tensor:
        # Each utterance was cut into 30 s windows (collation); a window's 1500 frames are trimmed
        # to ceil(window samples / 320) and an utterance's windows concatenated, as in extraction.
        out = self.encoder(batch["input_features"]).last_hidden_state  # (windows, 1500, D)
        per_utt: list[list[torch.Tensor]] = [[] for _ in range(len(batch["num_samples"]))]
        for w, (u, n) in enumerate(zip(batch["window_utt"].tolist(), batch["window_samples"].tolist())):
            per_utt[u].append(out[w, : math.ceil(n / 320)])
        return nn.utils.rnn.pad_sequence([torch.cat(p, dim=0) for p in per_utt], batch_first=True)

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden(batch)
        lengths = batch["frames"]
        t = int(lengths.max())
        if h.shape[1] < t:
            raise FinetuneError(f"encoder gave {h.shape[1]} frames but the length formula says {t}; "
                                "this is a phonecli bug, please report it")
        logits = self.head(self.dropout(h[:, :t]))
        # log_softmax in float32 even under autocast: CTC's forward-backward sums tiny probabilities.
        return torch.log_softmax(logits.float(), dim=-1), lengths


def build_model(adapter, mode: Mode, *, lora: LoraSettings | None = None, gradient_checkpointing: bool = False,
                compute_dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0,
                vocab_size: int = len(VOCAB)) -> CTCModel:
    """Wrap ``adapter.model`` (fp32, from the registry/local dir) into a trainable :class:`CTCModel`.

    ``mode`` decides what trains: ``full`` everything; ``freeze-feature-encoder`` all but the
    feature encoder (:data:`FEATURE_ENCODER_PREFIXES`); ``top:K`` the top K blocks (+ the encoder's
    final LayerNorm) and the head; ``lora``/``qlora`` LoRA matrices on the attention projections
    and the head (``qlora`` reloads the base in 4-bit nf4 first). The head is always fresh
    (``torch.manual_seed(seed)`` then nn.Linear's default init) and always trained.
    """
    family = adapter.spec.family
    encoder = adapter.model
    if mode.name == "qlora":
        encoder = load_encoder_4bit(adapter, compute_dtype, device)
    encoder.train()
    hidden = int(adapter.hidden_size)
    dropout = float(getattr(encoder.config, "final_dropout", 0.1) or 0.0)
    torch.manual_seed(seed)
    model = CTCModel(encoder, family, hidden, dropout, vocab_size=vocab_size)
    for p in model.encoder.parameters():
        p.requires_grad_(mode.name in ("full", "freeze-feature-encoder"))
    if mode.name == "freeze-feature-encoder":
        for name, p in model.encoder.named_parameters():
            if name.startswith(FEATURE_ENCODER_PREFIXES[family]):
                p.requires_grad_(False)
    elif mode.name == "top":
        layers = transformer_layers(model.encoder, family)
        if mode.top_k > len(layers):
            raise FinetuneError(f"--mode top:{mode.top_k}: {adapter.spec.name} has only {len(layers)} "
                                f"Transformer layers; choose K <= {len(layers)}")
        for layer in layers[-mode.top_k:]:
            layer.requires_grad_(True)
        final_norm = model.encoder.layer_norm if family == "whisper" else getattr(model.encoder.encoder, "layer_norm", None)
        if final_norm is not None and (family == "whisper" or getattr(encoder.config, "do_stable_layer_norm", False)):
            final_norm.requires_grad_(True)  # pre-LN: the final LayerNorm sits above the top layer
    elif mode.lora:
        model.encoder = apply_lora(model.encoder, lora or LoraSettings())
    if gradient_checkpointing:
        inner = unwrap_peft(model.encoder)
        if not getattr(inner, "supports_gradient_checkpointing", False):
            raise FinetuneError(f"{adapter.spec.name}: {type(inner).__name__} does not support gradient checkpointing")
        # non-reentrant checkpointing: works when the encoder's inputs need no grad (frozen/LoRA)
        kwargs = {"use_reentrant": False}
        if hasattr(inner, "activation_checkpointing_enable"):  # transformers >= 5.2x name
            inner.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.head.requires_grad_(True)
    return model.to(device) if mode.name != "qlora" else _move_head(model, device)


def _move_head(model: CTCModel, device: str) -> CTCModel:
    model.head.to(device)  # the 4-bit encoder was placed by device_map; .to() on it is refused
    return model


def apply_lora(encoder: nn.Module, settings: LoraSettings) -> nn.Module:
    """peft LoRA on the attention projections of ``encoder``; only the LoRA matrices train."""
    from peft import LoraConfig, get_peft_model

    present = sorted({n.rsplit(".", 1)[-1] for n, m in encoder.named_modules()
                      if n.rsplit(".", 1)[-1] in settings.targets})
    if not present:
        raise FinetuneError(f"{type(encoder).__name__}: none of the LoRA target modules {settings.targets} exist")
    cfg = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                     target_modules=present, bias="none")
    return get_peft_model(encoder, cfg)


def lora_config_dict(encoder: nn.Module) -> dict:
    """The JSON-able peft LoraConfig of a LoRA-wrapped encoder (stored in run.json)."""
    cfg = encoder.peft_config["default"]
    return {"r": cfg.r, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout,
            "target_modules": sorted(cfg.target_modules), "bias": cfg.bias}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` of parameters that require grad (detached CPU copies)."""
    return {n: p.detach().cpu().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    unknown = [n for n in state if n not in params]
    if missing or unknown:
        raise FinetuneError(f"checkpoint does not match the model (missing {missing[:3]}, unexpected "
                            f"{unknown[:3]}); it was written by another --model/--mode: use a new --out")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))


def export_weights(model: CTCModel, mode: Mode) -> dict[str, torch.Tensor]:
    """What ``weights.safetensors`` holds.

    Full/partial modes: the whole encoder (``encoder.<HF state-dict key>``, loadable into the base
    class with ``load_state_dict``) and the head (``head.weight`` ``(40, hidden)``, ``head.bias``).
    LoRA/QLoRA: adapter only, ``lora.<peft key>`` (``get_peft_model_state_dict``) + the head.
    """
    out: dict[str, torch.Tensor] = {}
    if mode.lora:
        from peft import get_peft_model_state_dict

        for k, v in get_peft_model_state_dict(model.encoder).items():
            out[f"lora.{k}"] = v
    else:
        for k, v in model.encoder.state_dict().items():
            out[f"encoder.{k}"] = v
    out["head.weight"] = model.head.weight
    out["head.bias"] = model.head.bias
    return {k: v.detach().cpu().float().contiguous().clone() if v.is_floating_point() else v.detach().cpu().contiguous()
            for k, v in out.items()}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (4-bit weights count as their logical elements)."""
    trainable = total = 0
    for p in model.parameters():
        n = int(np.prod(p.quant_state.shape)) if hasattr(p, "quant_state") and p.quant_state is not None else p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total
