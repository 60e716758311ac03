"""The encoder registry (``configs/models.yaml``) and name/directory -> adapter resolution."""

from __future__ import annotations

import importlib
import json
from functools import lru_cache
from pathlib import Path

from phonecli.extract.base import EncoderAdapter, ExtractionError, ModelSpec

REGISTRY_FILE = Path(__file__).resolve().parent.parent / "configs" / "models.yaml"

# family -> module in phonecli.extract.adapters defining ``Adapter`` (an EncoderAdapter subclass)
FAMILY_MODULES = {
    "fbank": "fbank",
    "hubert": "ssl",
    "wavlm": "ssl",
    "wav2vec2": "ssl",
    "data2vec-audio": "ssl",
    "whisper": "whisper",
    "w2v-bert": "w2v_bert",
    "qwen2-audio": "qwen2_audio",
    "parakeet": "parakeet",
    "speechtokenizer": "speechtokenizer",
    "mctct": "mctct",
}

# config.json "model_type" of a save_pretrained directory -> family
MODEL_TYPE_FAMILIES = {
    "hubert": "hubert",
    "wavlm": "wavlm",
    "wav2vec2": "wav2vec2",
    "data2vec-audio": "data2vec-audio",
    "whisper": "whisper",
    "wav2vec2-bert": "w2v-bert",
    "qwen2_audio": "qwen2-audio",
    "qwen2_audio_encoder": "qwen2-audio",
    "parakeet_ctc": "parakeet",
    "parakeet_encoder": "parakeet",
    "mctct": "mctct",
}


@lru_cache(maxsize=1)
def load_registry() -> dict[str, ModelSpec]:
    """``{name: ModelSpec}`` in file order."""
    import yaml

    rows = yaml.safe_load(REGISTRY_FILE.read_text())["models"]
    out = {}
    for r in rows:
        r = dict(r)
        known = {k: r.pop(k) for k in list(r) if k in ModelSpec.__dataclass_fields__}
        out[known["name"]] = ModelSpec(**known, extra=r)
    return out


def resolve(model: str) -> tuple[ModelSpec, str]:
    """A registry name or a local ``save_pretrained`` directory -> ``(spec, source)``.

    For a directory the family comes from its ``config.json`` ``model_type``; the spec is
    the first registry row of that family with the directory as source and the numbers
    read by the adapter at load time.
    """
    reg = load_registry()
    if model in reg:
        spec = reg[model]
        return spec, spec.source
    path = Path(model)
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            raise ExtractionError(f"{path}: no config.json; pass a directory written by save_pretrained or a registry name")
        model_type = json.loads(cfg_file.read_text()).get("model_type", "")
        family = MODEL_TYPE_FAMILIES.get(model_type)
        if family is None:
            raise ExtractionError(
                f"{path}: model_type {model_type!r} is not a supported encoder family; "
                f"supported: {', '.join(sorted(set(MODEL_TYPE_FAMILIES)))}"
            )
        base = next(s for s in reg.values() if s.family == family)
        spec = ModelSpec(**{**base.__dict__, "name": path.name, "source": str(path.resolve())})
        return spec, str(path.resolve())
    names = ", ".join(reg)
    raise ExtractionError(f"unknown model {model!r}; valid names: {names} (or a local save_pretrained directory)")


def get_adapter(model: str, *, revision: str | None = None, device: str = "cpu",
                trust_remote_code: bool = False) -> EncoderAdapter:
    """Load the encoder named by ``model`` (registry name or local directory)."""
    spec, source = resolve(model)
    module = importlib.import_module(f"phonecli.extract.adapters.{FAMILY_MODULES[spec.family]}")
    return module.Adapter(spec, source, revision=revision, device=device, trust_remote_code=trust_remote_code)
