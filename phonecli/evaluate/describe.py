"""Model / Input / Note columns of the report, read defensively from a run's run.json.

Probe, fusion and fine-tuning runs record their origin differently (``config`` keys,
``sources`` entries of ``{"cache"|"run"|"model": ...}``); anything unknown becomes ``"?"``
rather than an error, because a report over many runs must not fail on one odd run.
"""

from __future__ import annotations

import json
from pathlib import Path

INPUT_LABELS = {
    "raw": "Raw Waveform",
    "waveform": "Fbank (80)",
    "log-mel": "Log-Mel",
    "fbank-stacked": "Log-Mel (fbank stacked)",
    "discrete": "Discrete",
}
KIND_LABELS = {"late-fusion": "Late fusion", "early-fusion": "Early fusion", "gated-fusion": "Gated fusion"}


def _registry() -> dict:
    try:
        from phonecli.extract.registry import load_registry

        return load_registry()
    except Exception:  # the report still works without a readable registry
        return {}


def _model_of_source(src: dict) -> str | None:
    for key in ("model", "name"):
        if isinstance(src.get(key), str) and src[key]:
            return Path(src[key]).name if "/" in src[key] and Path(src[key]).exists() else src[key]
    if isinstance(src.get("cache"), str):
        return Path(src["cache"].rstrip("/")).stem      # ROOT/<corpus>/<model-name>.zarr
    if isinstance(src.get("run"), str):
        f = Path(src["run"]) / "run.json"
        try:
            info = json.loads(f.read_text())
            return describe(info)[0]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            return Path(src["run"]).name
    return None


def models_of(info: dict) -> list[str]:
    cfg = info.get("config") or {}
    out: list[str] = []
    for key in ("model", "models", "encoder", "base_model", "features"):
        v = cfg.get(key)
        vals = v if isinstance(v, list) else [v]
        for x in vals:
            if isinstance(x, str) and x:
                name = Path(x.rstrip("/")).stem if x.endswith(".zarr") or x.endswith(".zarr/") else x
                out.append(name)
        if out:
            break
    if not out:
        for src in info.get("sources") or []:
            if isinstance(src, dict):
                m = _model_of_source(src)
                if m:
                    out.append(m)
    seen = []
    for m in out:
        if m not in seen:
            seen.append(m)
    return seen


def _input_label(model: str, reg: dict) -> str:
    base = model.split(".")[0]           # "hubert-large.int8" style cache suffixes
    for name in (model, base):
        if name in reg:
            return INPUT_LABELS.get(reg[name].input, reg[name].input)
    return "?"


def describe(info: dict) -> tuple[str, str, str]:
    """``(model, input, note)`` strings for a run's ``run.json`` dict."""
    kind = info.get("kind", "?")
    cfg = info.get("config") or {}
    models = models_of(info) or [info.get("name", "?")]
    reg = _registry()
    if kind in KIND_LABELS:
        model = f"{KIND_LABELS[kind]} ({' + '.join(models)})"
    else:
        model = " + ".join(models)
    inputs = []
    for m in models:
        lab = _input_label(m, reg)
        if lab not in inputs:
            inputs.append(lab)
    note_bits = [kind]
    for key, label in (("head", "head"), ("layers", "layers"), ("mode", "mode"), ("rule", "rule"),
                       ("alpha", "alpha"), ("alphas", "alpha"), ("target", "targets"), ("targets", "targets")):
        v = cfg.get(key)
        if v is not None and v != "" and not isinstance(v, dict):
            if isinstance(v, list):
                v = ",".join(str(x) for x in v[:6]) + ("..." if len(v) > 6 else "")
            note_bits.append(f"{label} {v}")
    sel = info.get("selection")
    if isinstance(sel, dict) and sel.get("metric"):
        note_bits.append(f"selected on dev {sel['metric']}")
    return model, " + ".join(inputs), ", ".join(str(b) for b in note_bits)
