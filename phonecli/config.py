"""Typed stage configs: the single source of every option of extract, probe, fuse late, finetune,
evaluate and report.

Each stage has one frozen dataclass. A field's metadata (made by :func:`option`) carries its help
text, its command-line flag, its choices and bounds, and whether it is **structural**: a
structural option defines *what* a run computes, so ``--resume`` refuses a different value
(e.g. the learning rate); a free option may change on resume (e.g. ``--device``, or a probe's
``--epochs``, which is only a maximum). From the same fields:

- the click options of each command are generated (:func:`phonecli.commands._options.config_options`),
- presets build configs with :meth:`StageConfig.from_dict` (an unknown key is one
  :class:`~phonecli.errors.ConfigError` naming the key and the valid ones),
- the Python API takes a config and/or keyword overrides (:meth:`StageConfig.build`), validated
  here in ``__post_init__`` (types, choices, ranges, grammars),
- ``run.json`` records ``asdict(config)`` (the resolved values) under ``config``.

Only the standard library is imported at module level: the CLI builds its options from these
classes at start-up.
"""

import dataclasses
import re
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from types import NoneType, UnionType
from typing import Any, ClassVar, get_args

from phonecli.errors import ConfigError

# -- choices shared with the stage modules ---------------------------------------------------------
HEADS = ("linear", "mlp", "weighted", "transformer", "gated")
TARGETS = ("canonical", "realized")
CONTROLS = ("shuffled-labels",)
PROBE_ALIGN = ("repeat", "pool")
MEMORY = ("auto", "ram", "stream")
DTYPES = ("float16", "float32", "int8")
ON_ERROR = ("fail", "skip")
PRECISIONS = ("fp32", "fp16", "bf16")                  # fine-tuning (mixed precision)
EXTRACT_PRECISIONS = ("float32", "float16", "bfloat16")  # extraction (autocast), as the cache records it
FUSION_RULES = ("log-linear", "linear")
FUSION_ALIGN = ("repeat", "refuse")
#: late-fusion selection metrics (``--select-on dev-<name>``)
SELECT_ON = ("per", "per_hq", "auc", "pearson", "spearman", "f1", "ctc_loss")
PROTOCOLS = ("seed", "phone", "per", "mdd", "all")   # which apply: the manifest's corpus.protocols
FINETUNE_MODES = "full | freeze-feature-encoder | top:K | lora | qlora"
DEFAULT_PART_BYTES = 256 * 2**20
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def option(default: Any = MISSING, help: str = "", *, flag: str | None = None, choices: tuple | None = None,
           structural: bool = False, min: float | None = None, above: float | None = None,
           below: float | None = None, metavar: str | None = None, show_default: bool = True) -> Any:
    """A config field. ``flag``: the long option (default ``--field-name``); ``min``: inclusive lower
    bound; ``above``/``below``: exclusive bounds; ``structural``: ``--resume`` may not change it."""
    meta = {"help": help, "flag": flag, "choices": choices, "structural": structural, "min": min,
            "above": above, "below": below, "metavar": metavar, "show_default": show_default}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use an immutable default (tuple) for a config field")
    return field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of a field: ``--batch-frames`` for ``batch_frames`` unless set."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


@dataclass(frozen=True)
class StageConfig:
    """Base of the stage configs: validation, building from dicts/overrides, structural fields."""

    STAGE: ClassVar[str] = "stage"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = self._coerce(f, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
            self._check_field(f, value)
        self._check()

    # -- per-class hooks ---------------------------------------------------------------------
    def _check(self) -> None:
        """Cross-field and grammar checks (subclasses)."""

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def structural_fields(cls) -> list[str]:
        """Options ``--resume`` may not change."""
        return [f.name for f in fields(cls) if f.metadata.get("structural")]

    @classmethod
    def _aliases(cls) -> dict[str, str]:
        """Accepted keys -> field names: the field name and its flag spelled as a key (``--alphas`` -> alphas)."""
        out = {}
        for f in fields(cls):
            out[f.name] = f.name
            out[flag_of(f).lstrip("-").replace("-", "_")] = f.name
        return out

    @classmethod
    def _keys(cls, d: dict, where: str) -> dict:
        aliases = cls._aliases()
        unknown = [k for k in d if k not in aliases]
        if unknown:
            raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(map(repr, unknown))}; valid keys: {', '.join(cls.field_names())}")
        out = {}
        for k, v in d.items():
            name = aliases[k]
            if name in out:
                raise ConfigError(f"{where}: {name!r} is given twice (as {k!r} too); give it once")
            out[name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict | None, *, where: str | None = None):
        """Build from a preset/JSON mapping; keys are field names or flag names (``alphas`` for ``--alphas``).

        YAML 1.1 reads ``3e-5`` (no dot) as a string: numeric strings are accepted for number fields.
        """
        where = where or cls.STAGE
        if d is not None and not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping of options, got {type(d).__name__}")
        values = cls._keys(dict(d or {}), where)
        for f in fields(cls):
            v = values.get(f.name)
            if isinstance(v, str) and _number_type(f) is not None:
                try:
                    values[f.name] = _number_type(f)(v)
                except ValueError:
                    pass  # the type check names the field
        try:
            return cls._construct(values, where)
        except ConfigError as e:
            if str(e).startswith(where):
                raise
            raise type(e)(f"{where}: {e}") from None     # name the preset file / block too

    @classmethod
    def build(cls, config=None, /, **overrides):
        """``config`` (or the defaults) with keyword ``overrides``, validated like any config."""
        if config is not None and not isinstance(config, cls):
            raise ConfigError(f"{cls.STAGE}: config must be a {cls.__name__}, got {type(config).__name__}")
        values = cls._keys(overrides, cls.STAGE)
        if config is None:
            return cls._construct(values, cls.STAGE)
        return replace(config, **values) if values else config

    @classmethod
    def _construct(cls, values: dict, where: str):
        missing = [f for f in fields(cls) if f.default is MISSING and f.name not in values]
        if missing:
            f = missing[0]
            raise ConfigError(f"{where}: option {f.name} ({flag_of(f)}) is required")
        return cls(**values)

    # -- checks --------------------------------------------------------------------------------
    def _name(self, f: dataclasses.Field) -> str:
        return f"{self.STAGE} option {f.name} ({flag_of(f)})"

    def _coerce(self, f: dataclasses.Field, value):
        if isinstance(value, int) and not isinstance(value, bool) and float in field_types(f) and int not in field_types(f):
            return float(value)     # 1 for a float option is 1.0
        if isinstance(value, list) and tuple in [getattr(t, "__origin__", t) for t in field_types(f)]:
            return tuple(value)
        return value

    def _check_field(self, f: dataclasses.Field, value) -> None:
        types = field_types(f)
        ok = any(_is_instance(value, t) for t in types)
        if not ok:
            want = " or ".join(_type_name(t) for t in types)
            raise ConfigError(f"{self._name(f)}: {value!r} is not {want}")
        if value is None:
            return
        m = f.metadata
        if m.get("choices") and value not in m["choices"]:
            raise ConfigError(f"{self._name(f)}: {value!r} is not one of {', '.join(map(str, m['choices']))}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value:  # NaN
                raise ConfigError(f"{self._name(f)}: NaN is not a valid value")
            if m.get("min") is not None and value < m["min"]:
                raise ConfigError(f"{self._name(f)}: {value!r} must be >= {m['min']:g}")
            if m.get("above") is not None and not value > m["above"]:
                raise ConfigError(f"{self._name(f)}: {value!r} must be > {m['above']:g}")
            if m.get("below") is not None and not value < m["below"]:
                raise ConfigError(f"{self._name(f)}: {value!r} must be < {m['below']:g}")

    def _fail(self, name: str, msg: str):
        f = next(x for x in fields(self) if x.name == name)
        raise ConfigError(f"{self._name(f)}: {msg}")

    def _check_device(self) -> None:
        if not _DEVICE.match(self.device):
            self._fail("device", f"{self.device!r}: use auto, cpu, cuda, cuda:N or mps")

    # -- use -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """``asdict`` with tuples as lists (what ``run.json`` records)."""
        return _jsonable(asdict(self))

    def structural_changes(self, stored: dict) -> list[tuple[str, Any, Any]]:
        """``[(field, stored value, this value)]`` for structural fields that differ from a recorded config."""
        mine = self.to_dict()
        return [(k, stored[k], mine[k]) for k in self.structural_fields() if k in stored and stored[k] != mine[k]]


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def field_types(f: dataclasses.Field) -> tuple:
    t = f.type
    return get_args(t) if isinstance(t, UnionType) else (t,)


def _number_type(f: dataclasses.Field):
    ts = field_types(f)
    return float if float in ts else (int if int in ts else None)


def _is_instance(value, t) -> bool:
    if t is NoneType:
        return value is None
    origin = getattr(t, "__origin__", None)
    if origin is tuple:
        (item,) = get_args(t)[:1]
        return isinstance(value, tuple) and all(_is_instance(v, item) for v in value)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, t)


def _type_name(t) -> str:
    if t is NoneType:
        return "None"
    if getattr(t, "__origin__", None) is tuple:
        return "a list"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(t, str(t))


# -- the stages -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExtractConfig(StageConfig):
    """``phonecli extract`` / :func:`phonecli.extract.run_extraction` (inputs: model, data, cache root/out)."""

    STAGE: ClassVar[str] = "extract"

    splits: str | None = option(None, "Comma list of splits [default: every split in the manifest].",
                                metavar="LIST", structural=True)
    layers: str = option(
        "all", "Hidden states to keep: all, last, or indices/ranges like 0,6,12-24 (stored ascending).",
        metavar="all|LIST", structural=True)
    dtype: str = option("float16", "Stored dtype (int8: per-channel scales).", choices=DTYPES, structural=True)
    device: str = option("auto", "Where the encoder runs.", metavar="auto|cpu|cuda")
    precision: str = option("float32", "Encoder compute precision (half precision via torch.autocast; mainly for "
                            "GPUs; recorded in the cache and its name).", choices=EXTRACT_PRECISIONS, structural=True)
    batch_seconds: float = option(60.0, "Cap per forward batch, in seconds of padded audio.", above=0, metavar="S")
    on_error: str = option("fail", "Bad utterance: stop (completed parts kept) or record it as skipped and go on.",
                           choices=ON_ERROR)
    revision: str | None = option(None, "Hub revision (branch, tag or commit).", metavar="R", structural=True)
    trust_remote_code: bool = option(False, "Allow model code from the Hub (off by default).")
    part_bytes: int = option(DEFAULT_PART_BYTES, "Target bytes of one cache part (the unit of resume and of "
                             "torchrun work sharing).", min=1, metavar="BYTES", structural=True)

    def _coerce(self, f, value):
        if f.name == "layers" and not isinstance(value, str):
            from phonecli.layers import spec_text

            return spec_text(value)       # 6 or [0, 6]: the API's int forms
        return super()._coerce(f, value)

    def _check(self) -> None:
        from phonecli import layers as L

        self._check_device()
        L.parse(self.layers, L.EXTRACT)


@dataclass(frozen=True)
class ProbeConfig(StageConfig):
    """``phonecli probe`` / :func:`phonecli.probe.train_probe` (inputs: features, data, out)."""

    STAGE: ClassVar[str] = "probe"

    head: str = option("linear", "Probe head.", choices=HEADS, structural=True)
    layers: tuple[str, ...] = option(
        (), "Layers: N | A-B | a,b,A-B | last | all | weighted | all-single (one probe per layer). Once for every "
            "cache or once per --features. [default: weighted for --head weighted, else last]",
        metavar="SPEC", structural=True, show_default=False)
    targets: str = option("canonical", "CTC targets: canonical phones, or realized (annotated "
                          "substitutions/deletions applied).", choices=TARGETS, structural=True)
    context: int | None = option(None, "Stack +-K neighbouring frames. [default: 4 for weight-free caches (fbank) "
                                 "with frame-level heads, else 0]", min=0, structural=True)
    epochs: int = option(100, "Maximum epochs; training stops earlier when dev PER stops improving (--patience).",
                         min=1)
    lr: float = option(1e-3, "AdamW learning rate.", above=0, structural=True)
    batch_frames: int | None = option(None, "Padded frames per batch (length-bucketed). [default: 1/50 of the "
                                      "train frames, clamped to 400-8000]", min=1, structural=True)
    seed: int = option(0, "Seed of the initialisation, batch order and dropout.", structural=True)
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    patience: int = option(10, "Epochs without a better dev PER before stopping.", min=1)
    standardize: bool = option(True, "Per-feature mean/std from the train split (saved with the weights).",
                               structural=True)
    layer_norm: bool = option(False, "Per-layer LayerNorm (no affine) before the layer mixer.", structural=True)
    dropout: float = option(0.1, "Dropout of the head.", min=0, below=1, structural=True)
    weight_decay: float = option(0.0, "AdamW weight decay.", min=0, structural=True)
    align: str = option("repeat", "Fusion of different frame rates: repeat the slower stream's frames, or "
                        "average-pool the faster.", choices=PROBE_ALIGN, structural=True)
    memory: str = option("auto", "Load train+dev into RAM (auto: when they fit in half the available memory) "
                         "or stream.", choices=MEMORY)
    control: str | None = option(None, "Control task: train targets permuted across utterances (selectivity "
                                 "baseline).", choices=CONTROLS, structural=True)

    def _coerce(self, f, value):
        if f.name == "layers" and value is not None:
            from phonecli.layers import spec_text

            if isinstance(value, (str, int)):
                value = (value,)
            elif value and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
                value = (tuple(value),)          # [6, 1]: one list spec for every cache
            return tuple(spec_text(v) for v in value)
        return super()._coerce(f, value)

    def _check(self) -> None:
        from phonecli import layers as L

        self._check_device()
        for spec in self.layers:
            L.parse(spec, L.PROBE_CLI)
        if L.ALL_SINGLE in self.layers and len(self.layers) != 1:
            self._fail("layers", "all-single takes exactly one --layers (and one --features)")

    @property
    def is_layer_sweep(self) -> bool:
        from phonecli.layers import ALL_SINGLE

        return self.layers == (ALL_SINGLE,)


@dataclass(frozen=True)
class LateFusionConfig(StageConfig):
    """``phonecli fuse late`` / :func:`phonecli.fuse.fuse_late` (inputs: the runs, out)."""

    STAGE: ClassVar[str] = "late fusion"

    alpha_grid: str = option("0:1:0.1", "Weight of the first run: comma list (0.3,0.5,0.7) or START:STOP:STEP "
                             "(inclusive). 3+ runs: every weight vector on the simplex using these values.",
                             flag="--alphas", metavar="GRID", structural=True)
    rule: str = option("log-linear", "log-linear: log_softmax(sum a_i log p_i); linear: log(sum a_i p_i).",
                       choices=FUSION_RULES, structural=True)
    select_on: str = option("dev-per", "Dev metric that picks the weights: dev-per, dev-per-hq, dev-auc, "
                            "dev-pearson, dev-spearman, dev-f1, dev-ctc-loss.", metavar="METRIC", structural=True)
    align: str = option("repeat", "Runs at different frame rates: repeat the slower run's frames, or refuse.",
                        choices=FUSION_ALIGN, structural=True)

    def _coerce(self, f, value):
        if f.name == "alpha_grid" and isinstance(value, (list, tuple)):
            return ",".join(f"{float(a):g}" for a in value)
        return super()._coerce(f, value)

    def _check(self) -> None:
        from phonecli.fuse.late import parse_values

        parse_values(self.alpha_grid)
        m = self.select_on.strip().lower().replace("-", "_")
        m = m[len("dev_"):] if m.startswith("dev_") else m
        m = "per" if m == "per_all" else m
        if m not in SELECT_ON:
            self._fail("select_on", f"{self.select_on!r}: choose one of "
                                    f"{', '.join('dev-' + k.replace('_', '-') for k in SELECT_ON)}")
        object.__setattr__(self, "select_on", f"dev_{m}")

    @property
    def metric(self) -> str:
        """The selection metric without its ``dev_`` prefix (a key of ``phonecli.fuse.late.SELECT_METRICS``)."""
        return self.select_on[len("dev_"):]


@dataclass(frozen=True)
class FinetuneConfig(StageConfig):
    """``phonecli finetune`` / :func:`phonecli.finetune.finetune` (inputs: model, data, out).

    ``None`` for ``epochs``, ``lr`` and ``batch_seconds`` means the family default
    (:func:`phonecli.finetune.train.family_defaults`); run.json records the resolved values.
    """

    STAGE: ClassVar[str] = "finetune"

    mode: str = option(help=f"{FINETUNE_MODES} (qlora: 4-bit nf4 base + LoRA; top:K trains the top K layers).",
                       metavar="MODE", structural=True)
    epochs: int | None = option(None, "Epochs [default: family default, 10].", min=1, metavar="E", structural=True)
    lr: float | None = option(None, "Peak learning rate [default per family, from the seed table: 3e-5 large/1B, "
                              "1e-4 Whisper, 5e-5 W2V-BERT, 3e-4 wav2vec2 base].", above=0, metavar="LR",
                              structural=True)
    batch_seconds: float | None = option(None, "Padded audio seconds per batch [default: seed batch size x 4 s; "
                                         "16 s, 4 s for 1B models].", above=0, metavar="S", structural=True)
    grad_accum: int = option(1, "Batches per optimizer step (effective batch = N x batch-seconds).", min=1,
                             metavar="N", structural=True)
    max_audio_seconds: float | None = option(None, "Drop training utterances longer than S seconds (counted in "
                                             "run.json; posteriors cover all).", above=0, metavar="S",
                                             structural=True)
    gradient_checkpointing: bool = option(False, "Recompute activations in the backward pass (less memory, ~30% "
                                          "slower).", structural=True)
    precision: str = option("fp32", "Autocast precision (fp16 needs CUDA; bf16 works on CPU and Ampere+ GPUs).",
                            choices=PRECISIONS, structural=True)
    seed: int = option(0, "Seed of the head init, data order, dropout.", structural=True)
    targets: str = option("canonical", "CTC targets: canonical phones, or realized (annotated "
                          "substitutions/deletions applied).", choices=TARGETS, structural=True)
    warmup_ratio: float = option(0.1, "Fraction of optimizer steps of linear warmup (then linear decay to 0).",
                                 min=0, below=1, structural=True)
    weight_decay: float = option(0.0, "AdamW weight decay.", min=0, structural=True)
    lora_r: int = option(16, "LoRA rank (lora/qlora).", min=1, structural=True)
    lora_alpha: int = option(32, "LoRA alpha (lora/qlora).", min=1, structural=True)
    lora_dropout: float = option(0.05, "LoRA dropout (lora/qlora).", min=0, below=1, structural=True)
    save_steps: int = option(0, "Also checkpoint every N optimizer steps (0: only at the end of each epoch).",
                             min=0, metavar="N")
    eval_batch_seconds: float = option(60.0, "Padded audio seconds per batch when computing posteriors.", above=0,
                                       metavar="S")
    device: str = option("auto", "Where training runs.", metavar="auto|cpu|cuda")
    revision: str | None = option(None, "Hub revision of the base model.", metavar="R", structural=True)
    trust_remote_code: bool = option(False, "Allow model code from the Hub (off by default).")

    def _check(self) -> None:
        self._check_device()
        m = re.fullmatch(r"top:(\d+)", self.mode.strip())
        if m and int(m.group(1)) < 1:
            self._fail("mode", f"{self.mode}: K must be >= 1 (the number of top Transformer layers to train)")
        if not m and self.mode not in ("full", "freeze-feature-encoder", "lora", "qlora"):
            self._fail("mode", f"{self.mode!r}: choose {FINETUNE_MODES} (e.g. top:4)")
        if self.precision == "fp16" and self.device in ("cpu", "mps"):
            self._fail("precision", "fp16 needs a CUDA device (CPU autocast is bf16 only); use bf16 or fp32")


@dataclass(frozen=True)
class EvaluateConfig(StageConfig):
    """``phonecli evaluate`` / :func:`phonecli.evaluate.evaluate_run` (input: the run)."""

    STAGE: ClassVar[str] = "evaluate"

    protocol: str = option("all", "all = every protocol of the run's corpus; seed = utterance-level Tasks A/B/C; "
                           "phone = forced-alignment GOP protocol (SpeechOcean762); per = phone error rate after the "
                           "corpus' folding; mdd = mispronunciation detection and diagnosis (L2-ARCTIC).",
                           choices=PROTOCOLS)
    ci: bool = option(True, "Speaker-bootstrap 95% confidence intervals.")
    n_bootstrap: int = option(1000, "Bootstrap replicates (test speakers resampled with replacement).", min=1,
                              flag="--bootstrap")
    seed: int = option(0, "Seed of the bootstrap and the regressor.")


@dataclass(frozen=True)
class ReportConfig(StageConfig):
    """``phonecli report`` / :func:`phonecli.evaluate.write_report` (inputs: the runs, out)."""

    STAGE: ClassVar[str] = "report"

    plots: bool = option(True, "PNG plots besides the tables.")
    evaluate_missing: bool = option(True, "Evaluate runs without metrics.json first (--no-evaluate: fail on them).",
                                    flag="--evaluate")
    n_bootstrap: int = option(1000, "Bootstrap replicates for runs evaluated on the fly.", min=1, flag="--bootstrap")
    seed: int = option(0, "Seed of the bootstrap of runs evaluated on the fly.")


STAGES: dict[str, type[StageConfig]] = {
    "extract": ExtractConfig, "probe": ProbeConfig, "late": LateFusionConfig, "finetune": FinetuneConfig,
    "evaluate": EvaluateConfig, "report": ReportConfig,
}
