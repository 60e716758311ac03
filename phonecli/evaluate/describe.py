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
    from phonecli.encoders.registry import load_registry

    return load_registry()


def _origin_of_source(src: dict, reg: dict) -> tuple[str, str] | None:
    """``(model, input)`` of one ``sources`` entry, or None.

    A source run (late fusion) is described from its own run.json, so a fusion row reads
    "Late fusion (hubert-large (weighted) + wavlm-large (linear))"."""
    if isinstance(src.get("run"), str):
        try:
            info = json.loads((Path(src["run"]) / "run.json").read_text())
            model, inp, _ = describe(info)
            return model, inp
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            name = src.get("name") if isinstance(src.get("name"), str) else Path(src["run"]).name
            return name, "?"
    if isinstance(src.get("model"), str) and src["model"]:
        return src["model"], _input_label(src["model"], reg)
    if isinstance(src.get("cache"), str):
        name = Path(src["cache"].rstrip("/")).stem      # ROOT/<corpus>/<model-name>.zarr
        return name, _input_label(name, reg)
    if isinstance(src.get("name"), str) and src["name"]:
        return src["name"], _input_label(src["name"], reg)
    return None


def origins(info: dict) -> list[tuple[str, str]]:
    """``[(model, input label)]`` a run was made from: config keys first, else ``sources``."""
    reg = _registry()
    cfg = info.get("config") or {}
    out: list[tuple[str, str]] = []
    for key in ("model", "models", "encoder", "base_model", "features"):
        v = cfg.get(key)
        for x in (v if isinstance(v, list) else [v]):
            if isinstance(x, str) and x:
                name = Path(x.rstrip("/")).stem if x.rstrip("/").endswith(".zarr") else x
                out.append((name, _input_label(name, reg)))
        if out:
            break
    if not out:
        for src in info.get("sources") or []:
            o = _origin_of_source(src, reg) if isinstance(src, dict) else None
            if o:
                out.append(o)
    # A local model directory is not a registry row: its cache records the input kind.
    cache_inputs = [_input_from_cache(src.get("cache")) for src in info.get("sources") or []
                    if isinstance(src, dict)]
    if len(cache_inputs) == len(out):
        out = [(m, inp if inp != "?" else cache_inputs[i]) for i, (m, inp) in enumerate(out)]
    unique: list[tuple[str, str]] = []
    for o in out:
        if o not in unique:
            unique.append(o)
    return unique


def _input_from_cache(cache) -> str:
    """Input label from a local cache's ``settings.input`` (written by `phonecli extract`), else "?".

    Read through :class:`~phonecli.cache.FeatureCache` (the cache's one reader); a cache that is gone or
    unreadable leaves the label "?" (the report still shows the run)."""
    if not isinstance(cache, str) or "://" in cache or not Path(cache).exists():
        return "?"
    from phonecli.cache import FeatureCache
    from phonecli.errors import CacheError

    try:
        attrs = FeatureCache.open(cache).metadata
    except (CacheError, OSError):
        return "?"
    kind = (attrs.get("settings") or {}).get("input")
    return INPUT_LABELS.get(kind, kind) if isinstance(kind, str) and kind else "?"


def _input_label(model: str, reg: dict) -> str:
    base = model.split(".")[0]           # "hubert-large.int8" style cache suffixes
    for name in (model, base):
        if name in reg:
            return INPUT_LABELS.get(reg[name].input, reg[name].input)
    return "?"


def _flatten(v) -> list:
    out = []
    for x in v:
        out.extend(_flatten(x) if isinstance(x, (list, tuple)) else [x])
    return out


def describe(info: dict) -> tuple[str, str, str]:
    """``(model, input, note)`` strings for a run's ``run.json`` dict."""
    kind = info.get("kind", "?")
    cfg = info.get("config") or {}
    orig = origins(info) or [(str(info.get("name", "?")), "?")]
    models = [m for m, _ in orig]
    if kind in KIND_LABELS:
        model = f"{KIND_LABELS[kind]} ({' + '.join(models)})"
    else:
        model = " + ".join(models)
    if kind != "late-fusion" and isinstance(cfg.get("head"), str) and cfg["head"]:
        model += f" ({cfg['head']})"        # tells probes of one encoder apart, like the seed's rows
    inputs: list[str] = []
    for _, inp in orig:
        for part in inp.split(" + "):
            if part not in inputs:
                inputs.append(part)
    note_bits = [kind]
    for key, label in (("head", "head"), ("layers", "layers"), ("mode", "mode"), ("rule", "rule"),
                       ("alpha", "alpha"), ("alphas", "alpha"), ("target", "targets"), ("targets", "targets")):
        v = cfg.get(key)
        if v is not None and v != "" and not isinstance(v, dict):
            if isinstance(v, list):
                flat = _flatten(v)
                v = ",".join(str(x) for x in flat[:6]) + ("..." if len(flat) > 6 else "")
            note_bits.append(f"{label} {v}")
    if isinstance(cfg.get("context"), int) and cfg["context"] > 0:
        note_bits.append(f"context ±{cfg['context']}")
    sel = info.get("selection")
    if isinstance(sel, dict) and sel.get("metric"):
        note_bits.append(f"selected on {sel['metric']}")
    return model, " + ".join(inputs), ", ".join(str(b) for b in note_bits)


#: The corpus literature anchors (GOPT, MuFFIN, Kaldi GOP) were computed on; reports print them only beside it.
ANCHOR_CORPUS = "speechocean762"


def corpus_summary(manifest) -> dict:
    """What a run was evaluated on, for metrics.json and the report header.

    ``{"corpus", "benchmark", "standard", "source", "path", "corpus_id", "synthetic",
    "splits": {split: {"utterances", "speakers"}}}``. ``synthetic`` is None when an older manifest
    does not say (only the bundled sample is known synthetic then); literature anchors need
    ``synthetic is False``, a standard copy and ``corpus == "speechocean762"``.
    """
    src = dict(manifest.source or {})
    spec = manifest.corpus
    kind = src.get("kind", "?")
    synthetic = src.get("synthetic", True if "sample" in (kind, spec.name) else None)
    splits = {}
    for s in manifest.splits():
        us = manifest.split(s)
        splits[s] = {"utterances": len(us), "speakers": len({u.speaker for u in us})}
    return {"corpus": spec.name, "benchmark": spec.benchmark, "standard": spec.standard, "source": kind,
            "path": src.get("path", ""), "corpus_id": manifest.corpus_id, "synthetic": synthetic, "splits": splits}


def has_literature_anchors(corpus: dict | None) -> bool:
    """True only for numbers computed on the real, complete SpeechOcean762 (not synthetic, not a subset)."""
    return (bool(corpus) and corpus.get("synthetic") is False and corpus.get("corpus") == ANCHOR_CORPUS
            and corpus.get("standard", True) is not False)
