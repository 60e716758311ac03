"""Rebuild a fine-tuned model from its run directory: for ``phonecli extract --model RUN`` and users.

``run.json`` records the base model (registry name / directory, Hub id, resolved revision) and
the mode; ``weights.safetensors`` holds the encoder (full/partial modes) or the LoRA matrices
(LoRA/QLoRA) and the head. The encoder is rebuilt through the same extraction adapter the run
was trained with, so ``extract --model RUN`` uses the adapter's own preprocessing, frame
counts and hidden-state conventions, with the fine-tuned weights:

* full / freeze-feature-encoder / top:K: ``load_state_dict`` of the saved encoder (strict);
* lora: the base in float32 + LoRA merged (``merge_and_unload``);
* qlora: the base reloaded in 4-bit nf4 exactly as in training, every 4-bit Linear dequantized to
  float32 (the weights the adapter was trained against, not the original float32 ones), then
  LoRA merged in float32 -- so the extracted encoder computes what the trained model computed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from phonecli.data.phones import VOCAB as CMU_VOCAB
from phonecli.finetune.model import (
    CTCModel,
    FinetuneError,
    LoraSettings,
    apply_lora,
    load_adapter,
    load_encoder_4bit,
    parse_mode,
)


def is_finetune_run(path: str | Path) -> bool:
    import json

    f = Path(path) / "run.json"
    if not f.exists():
        return False
    try:
        return json.loads(f.read_text()).get("kind") == "finetune"
    except (ValueError, OSError):
        return False


def _open(run_dir: str | Path):
    from phonecli.runs import Run

    run = Run.open(run_dir)
    if run.kind != "finetune":
        raise FinetuneError(f"{run_dir}: a {run.kind} run has no encoder; pass a `phonecli finetune` run directory")
    if run.info.get("status") != "complete" or not run.weights_path.exists():
        raise FinetuneError(f"{run_dir}: the fine-tuning run is not complete (no weights.safetensors); "
                            "finish it with `phonecli finetune ... --resume`")
    return run


def run_spec(run_dir: str | Path):
    """``(ModelSpec, source)`` for a run directory: the base model's row, named after the run."""
    from phonecli.encoders.registry import resolve

    run = _open(run_dir)
    cfg = run.info["config"]
    spec, source = resolve(cfg.get("model_source", cfg["model"]))
    extra = {**spec.extra, "finetune_run": str(run.path.resolve())}
    return replace(spec, name=run.name, extra=extra,
                   notes=f"fine-tuned ({cfg['mode']}) from {spec.name}: {run.path.resolve()}"), source


def dequantize_4bit_linears(module: nn.Module) -> nn.Module:
    """Replace every bitsandbytes ``Linear4bit`` by an ``nn.Linear`` holding its dequantized float32 weight."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbF

    for name, child in list(module.named_children()):
        if isinstance(child, bnb.nn.Linear4bit):
            w = bnbF.dequantize_4bit(child.weight.data, child.weight.quant_state).float()
            lin = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None, device=w.device)
            with torch.no_grad():
                lin.weight.copy_(w)
                if child.bias is not None:
                    lin.bias.copy_(child.bias.float())
            setattr(module, name, lin)
        else:
            dequantize_4bit_linears(child)
    return module


def _unmark_quantized(model: nn.Module) -> nn.Module:
    """What transformers' ``remove_quantization_config`` does once no 4-bit layer is left (the
    flags would make ``.float()``/``.to()`` refuse an ordinary float32 model)."""
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            delattr(model, attr)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.is_loaded_in_4bit = False
    return model


def _load_weights(run) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run.weights_path))


def load_finetuned(run_dir: str | Path, *, device: str = "cpu"):
    """``(adapter, CTCModel)``: the extraction adapter whose ``model`` is the fine-tuned encoder
    (float32, eval mode, LoRA merged) and the full CTC model (that encoder + the trained head)."""
    run = _open(run_dir)
    cfg = run.info["config"]
    base = cfg["base_model"]
    mode = parse_mode(cfg["mode"])
    adapter = load_adapter(cfg.get("model_source", cfg["model"]), device="cpu" if mode.name == "qlora" else device,
                           revision=base.get("revision") or cfg.get("revision"))
    weights = _load_weights(run)
    if mode.lora:
        from peft import set_peft_model_state_dict

        if mode.name == "qlora":
            dtype = getattr(torch, cfg.get("quantization", {}).get("compute_dtype", "float32"))
            encoder = _unmark_quantized(dequantize_4bit_linears(load_encoder_4bit(adapter, dtype, device)))
        else:
            encoder = adapter.model
        lc = cfg["lora"]
        peft_encoder = apply_lora(encoder, LoraSettings(r=lc["r"], alpha=lc["lora_alpha"], dropout=lc["lora_dropout"],
                                                        targets=list(lc["target_modules"])))
        lora = {k[len("lora."):]: v for k, v in weights.items() if k.startswith("lora.")}
        result = set_peft_model_state_dict(peft_encoder, lora)
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected or not lora:
            raise FinetuneError(f"{run.weights_path}: LoRA weights do not fit {base['name']} "
                                f"({len(lora)} tensors, unexpected {unexpected[:3]}); the run is damaged")
        encoder = peft_encoder.merge_and_unload()
    else:
        encoder = adapter.model
        state = {k[len("encoder."):]: v for k, v in weights.items() if k.startswith("encoder.")}
        try:
            encoder.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise FinetuneError(f"{run.weights_path}: encoder weights do not fit {base['name']} "
                                f"({str(e).splitlines()[0]}); the run is damaged") from e
    encoder = encoder.float().eval().to(device)
    adapter.model = encoder
    adapter.device = device
    model = CTCModel(encoder, adapter.spec.family, int(adapter.hidden_size),
                     vocab_size=len(run.info.get("vocab") or CMU_VOCAB))
    with torch.no_grad():
        model.head.weight.copy_(weights["head.weight"])
        model.head.bias.copy_(weights["head.bias"])
    return adapter, model.eval().to(device)


def load_finetuned_adapter(run_dir: str | Path, spec=None, *, device: str = "cpu"):
    """The extraction adapter for ``phonecli extract --model RUN`` (see :func:`load_finetuned`).

    Its ``spec.name`` is the run's name (the cache is ``ROOT/<corpus>/<run>.zarr``), ``model_id`` is
    ``finetune:<run dir>`` and ``settings`` records the base model and the mode; the weights
    fingerprint is computed from the fine-tuned encoder.
    """
    run = _open(run_dir)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    adapter, _ = load_finetuned(run_dir, device=device)
    cfg = run.info["config"]
    if spec is None:
        spec, _ = run_spec(run_dir)
    adapter.spec = spec
    adapter.model_id = f"finetune:{run.path.resolve()}"
    adapter.settings = {**(getattr(adapter, "settings", {}) or {}),
                        "finetune": {"run": str(run.path.resolve()), "mode": cfg["mode"],
                                     "base_model": cfg["base_model"]["name"],
                                     "base_model_id": cfg["base_model"]["model_id"],
                                     "base_revision": cfg["base_model"]["revision"],
                                     "lora_merged": parse_mode(cfg["mode"]).lora}}
    return adapter
