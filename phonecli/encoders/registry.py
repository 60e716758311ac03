"""The encoder registry (``configs/models.yaml``) and name/directory -> adapter resolution."""

from __future__ import annotations

import importlib
import json
from functools import lru_cache
from pathlib import Path

from phonecli.encoders.base import EncoderAdapter, ExtractionError, ModelSpec

REGISTRY_FILE = Path(__file__).resolve().parent.parent / "configs" / "models.yaml"

# family -> module in phonecli.encoders.adapters defining ``Adapter`` (an EncoderAdapter subclass)
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


# Families whose config.json carries top-level ``num_hidden_layers``/``hidden_size`` meaning
# exactly "Transformer layers"/"state width" (states = num_hidden_layers + 1).
_CONFIG_NUMBER_FAMILIES = {"hubert", "wavlm", "wav2vec2", "data2vec-audio"}

# Row keys that describe one checkpoint (not its family): a bare local directory of the same
# family does not inherit them (the adapter derives them from the directory instead).
_CHECKPOINT_ONLY_KEYS = ("processor", "pre_ln")


def resolve(model: str) -> tuple[ModelSpec, str]:
    """A registry name, a local ``save_pretrained`` directory or ``NAME=DIR`` -> ``(spec, source)``.

    (``phonecli finetune`` run directories are resolved one level up, by the extract stage:
    ``phonecli.extract.models``; this package never imports the stages that use it.)

    For a directory the family comes from its ``config.json`` ``model_type``; the spec is
    the first registry row of that family with the directory as source, named after the
    directory, with layers/hidden size from its config where the family has them.
    ``NAME=DIR`` keeps registry row NAME (its name, defaults and notes) but loads the
    weights from DIR, e.g. an offline copy of the Hub repository; the adapter refuses a
    directory whose config belongs to another family.
    """
    reg = load_registry()
    if model in reg:
        spec = reg[model]
        return spec, spec.source
    name, sep, local = model.partition("=")
    if sep and name in reg and not Path(model).exists():
        if not Path(local).is_dir():
            raise ExtractionError(f"{model}: {local!r} is not a directory; NAME=DIR needs a save_pretrained directory")
        source = str(Path(local).resolve())
        return ModelSpec(**{**reg[name].__dict__, "source": source}), source
    path = Path(model)
    if path.is_dir() and (path / "run.json").exists() and not (path / "config.json").exists():
        raise ExtractionError(f"{path}: a run directory, not an encoder; `phonecli extract --model RUN` loads "
                              "fine-tuned runs (phonecli.extract.models.load_encoder)")
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            raise ExtractionError(f"{path}: no config.json; pass a directory written by save_pretrained or a registry name")
        try:
            cfg = json.loads(cfg_file.read_text())
            model_type = cfg.get("model_type", "")
        except (json.JSONDecodeError, AttributeError) as e:
            raise ExtractionError(f"{cfg_file}: not a valid config.json ({e}); re-save the model with save_pretrained") from e
        family = MODEL_TYPE_FAMILIES.get(model_type)
        if family is None:
            raise ExtractionError(
                f"{path}: model_type {model_type!r} is not a supported encoder family; "
                f"supported: {', '.join(sorted(set(MODEL_TYPE_FAMILIES)))}"
            )
        base = next(s for s in reg.values() if s.family == family)
        fields = {**base.__dict__, "name": path.resolve().name, "source": str(path.resolve()),
                  "extra": {k: v for k, v in base.extra.items() if k not in _CHECKPOINT_ONLY_KEYS}}
        if family in _CONFIG_NUMBER_FAMILIES and "num_hidden_layers" in cfg and "hidden_size" in cfg:
            fields.update(layers=int(cfg["num_hidden_layers"]) + 1, hidden_size=int(cfg["hidden_size"]),
                          notes=f"local directory ({', '.join(cfg.get('architectures') or [model_type])})")
        return ModelSpec(**fields), str(path.resolve())
    names = ", ".join(reg)
    raise ExtractionError(f"unknown model {model!r}; valid names: {names} (or a local save_pretrained directory, "
                          "or NAME=DIR)")


def get_adapter(model: str, *, revision: str | None = None, device: str = "cpu",
                trust_remote_code: bool = False) -> EncoderAdapter:
    """Load the encoder named by ``model`` (registry name, local directory or ``NAME=DIR``).

    Rows with status "removed" raise :class:`ExtractionError` with the row's notes.
    """
    spec, source = resolve(model)
    if spec.status == "removed":
        raise ExtractionError(f"{spec.name}: cannot be loaded: {spec.notes}")
    module = importlib.import_module(f"phonecli.encoders.adapters.{FAMILY_MODULES[spec.family]}")
    return module.Adapter(spec, source, revision=revision, device=device, trust_remote_code=trust_remote_code)
