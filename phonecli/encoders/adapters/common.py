"""Family-independent helpers every encoder adapter (and the extraction runner) uses.

Loading through transformers with one-line errors (config.json, weights, feature extractor),
the Hub commit a source resolved to, device resolution, waveform checks and the registry
sanity warning. Nothing here knows about a model family; family-specific machinery (e.g. the
Whisper 30 s window) stays in its adapter module.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable

import numpy as np

from phonecli.ctc import resolve_device  # noqa: F401  (re-exported: the one device resolver)
from phonecli.encoders.base import ExtractionError, ModelSpec

SAMPLE_RATE = 16_000

# Load-time notices (registry/checkpoint disagreements); `phonecli extract` prints this logger on stderr.
log = logging.getLogger("phonecli.encoders")

# The fix suggested when config.json cannot be read (spectral adapters' wording).
CONFIG_FIX = "check the Hub id/--revision or pass a directory written by save_pretrained"


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load report (missing keys are checked and raised as one line)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # the per-tensor "Loading weights" bar is noise in our own bar
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception (transformers errors span many lines)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def hub_commit(source: str, revision: str | None) -> str | None:
    """The Hub commit ``config.json`` was resolved from (None for a local directory)."""
    from transformers.utils.hub import cached_file, extract_commit_hash

    try:
        path = cached_file(source, "config.json", revision=revision,
                           _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except OSError:
        return None
    return extract_commit_hash(path, None) if path else None


def read_config_dict(source: str, revision: str | None, fix: str = CONFIG_FIX) -> dict:
    """``config.json`` of a Hub id or local directory as a dict, or one line ending in ``fix``."""
    from transformers import PretrainedConfig

    try:
        with quiet_transformers():
            cfg, _ = PretrainedConfig.get_config_dict(source, revision=revision)
    except (OSError, ValueError) as e:
        raise ExtractionError(f"{source}: cannot read config.json ({first_line(e)}); {fix}") from e
    return cfg


def read_model_type(source: str, revision: str | None) -> tuple[str, dict]:
    """``(model_type, config dict)`` of a Hub id or local directory, or one clear error."""
    cfg = read_config_dict(source, revision)
    return str(cfg.get("model_type", "")), cfg


def expect_model_type(spec: ModelSpec, source: str, model_type: str, accepted: set[str], cls_name: str) -> None:
    if model_type not in accepted:
        raise ExtractionError(
            f"{source}: config.json is model_type {model_type!r} but registry model {spec.name!r} needs "
            f"{cls_name} ({'/'.join(sorted(accepted))}); pass the directory itself as --model "
            "(its family is read from config.json) or the matching registry name"
        )


def load_pretrained(cls, source: str, *, what: str | None = None,
                    errors: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError), **kwargs):
    """``cls.from_pretrained(source, output_loading_info=True, **kwargs)`` -> ``(model, info)``,
    quietly; a failure is one line ``"{source}: cannot load {what} (...)"`` (``what``: the class name)."""
    try:
        with quiet_transformers():
            return cls.from_pretrained(source, output_loading_info=True, **kwargs)
    except errors as e:
        raise ExtractionError(f"{source}: cannot load {what or cls.__name__} ({first_line(e)})") from e


def raise_if_missing(source: str, info: dict, cls_name: str, prefix: str = "",
                     optional: tuple[str, ...] = ()) -> None:
    """Refuse a load that left weights of the part we use at their random init."""
    missing = sorted(k for k in info.get("missing_keys", ())
                     if (k.startswith(prefix) or f".{prefix}" in k) and not any(k.endswith(o) for o in optional))
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise ExtractionError(
            f"{source}: {len(missing)} encoder weights are missing from the checkpoint and would be "
            f"random ({shown}); check that it is a {cls_name} checkpoint"
        )


PREPROCESSOR_FILE = "preprocessor_config.json"   # feature-extractor settings, transformers 4 layout
PROCESSOR_FILE = "processor_config.json"         # transformers 5 ProcessorMixin.save_pretrained layout


def processor_settings_file(source: str, revision: str | None) -> str | None:
    """The file ``FeatureExtractionMixin.from_pretrained(source)`` takes its settings from, or None.

    transformers 5 reads ``processor_config.json`` first when it nests a ``"feature_extractor"``
    (or ``"audio_processor"``) entry -- what ``Wav2Vec2Processor.save_pretrained`` writes now,
    without any ``preprocessor_config.json`` -- and ``preprocessor_config.json`` otherwise
    (``get_feature_extractor_dict``, transformers 5.24). This mirrors that order only to *name*
    the file in the cache metadata; loading itself is the library's ``from_pretrained``.
    """
    import json

    from transformers.utils.hub import cached_file

    found = {}
    for name in (PROCESSOR_FILE, PREPROCESSOR_FILE):
        try:
            found[name] = cached_file(source, name, revision=revision, _raise_exceptions_for_missing_entries=False,
                                      _raise_exceptions_for_connection_errors=False)
        except OSError as e:
            raise ExtractionError(f"{source}: cannot read {name} ({first_line(e)})") from e
    if found[PROCESSOR_FILE]:
        try:
            nested = json.loads(open(found[PROCESSOR_FILE]).read())
        except ValueError as e:
            raise ExtractionError(f"{found[PROCESSOR_FILE]}: not valid JSON ({e}); re-save the processor") from e
        if isinstance(nested, dict) and ("feature_extractor" in nested or "audio_processor" in nested):
            return PROCESSOR_FILE
    return PREPROCESSOR_FILE if found[PREPROCESSOR_FILE] else None


def load_feature_extractor(cls, spec: ModelSpec, source: str, revision: str | None, *,
                           base: dict | None = None, default: tuple[dict, str] | None = None):
    """The checkpoint's feature extractor and where its settings came from: ``(fe, origin)``.

    Settings are loaded by the library's own ``cls.from_pretrained`` from ``processor_config.json``
    (transformers 5) or ``preprocessor_config.json``; ``origin`` names that file. Only when
    neither exists: the registry row's ``processor`` values (``origin`` = "registry row ..."),
    else the family ``default`` (``(values, origin)``), else one line with the fix. ``base`` holds
    constructor arguments every checkpoint of the family shares (e.g. ``sampling_rate``).

    A row whose ``processor`` values contradict the loaded file (e.g. ``NAME=DIR`` with a
    fine-tuned directory saved with another ``do_normalize``) gets one warning line on the
    ``phonecli.encoders`` logger naming both values and the one used (the file's).
    """
    row = dict(spec.extra.get("processor") or {})
    found = processor_settings_file(source, revision)
    if found:
        try:
            fe = cls.from_pretrained(source, revision=revision)
        except (OSError, ValueError, TypeError) as e:
            raise ExtractionError(f"{source}: cannot load {cls.__name__} from {found} ({first_line(e)}); "
                                  "re-save it with save_pretrained") from e
        origin = found
        differ = {k: (v, getattr(fe, k, None)) for k, v in row.items() if getattr(fe, k, None) != v}
        if differ:
            said = ", ".join(f"{k}={got!r}" for k, (_, got) in differ.items())
            row_said = ", ".join(f"{k}={want!r}" for k, (want, _) in differ.items())
            log.warning("%s: %s/%s has %s but registry row %r says %s; using %s", spec.name, source, found, said,
                        spec.name, row_said, found)
    elif row:
        fe, origin = cls(**{**(base or {}), **row}), (f"registry row {spec.name!r} (no {PROCESSOR_FILE} or "
                                                      f"{PREPROCESSOR_FILE})")
    elif default is not None:
        fe, origin = cls(**{**(base or {}), **default[0]}), default[1]
    else:
        raise ExtractionError(
            f"{source}: no {PREPROCESSOR_FILE} or {PROCESSOR_FILE}; save the model's {cls.__name__} (or its "
            "processor) next to it with save_pretrained(dir)"
        )
    if getattr(fe, "sampling_rate", SAMPLE_RATE) != SAMPLE_RATE:
        raise ExtractionError(f"{source}: feature extractor expects {fe.sampling_rate} Hz; only 16 kHz is supported")
    return fe, origin


def check_wave(name: str, i: int, w: np.ndarray, too_short: Callable[[int], str | None]) -> np.ndarray:
    """Waveform ``i`` as float32 ``(samples,)``, or one line naming what is wrong with it.

    ``too_short(samples)`` returns None when the length is usable, else the detail shown after
    "is too short" (e.g. ``"(120 samples < 320)"``)."""
    w = np.asarray(w)
    if w.ndim != 1:
        raise ExtractionError(f"{name}: waveform {i} has shape {w.shape}; expected mono (samples,)")
    if not np.isfinite(w).all():
        raise ExtractionError(f"{name}: waveform {i} contains NaN/inf samples")
    short = too_short(len(w))
    if short is not None:
        raise ExtractionError(f"{name}: waveform {i} is too short {short}; drop it or use --on-error skip")
    return w.astype(np.float32, copy=False)


def check_waves(name: str, waves: list[np.ndarray], min_samples: int = 1) -> list[np.ndarray]:
    """Every waveform through :func:`check_wave` with a plain ``min_samples`` length floor."""
    def too_short(n: int) -> str | None:
        return f"({n} samples < {min_samples})" if n < min_samples else None

    return [check_wave(name, i, w, too_short) for i, w in enumerate(waves)]


def check_registry_numbers(spec: ModelSpec, source: str, states: int, hidden: int) -> None:
    """Warn when a registry row's numbers disagree with the loaded checkpoint.

    A bare local directory borrows the first row of its family, whose numbers do not describe
    it, so only rows actually in the registry (a name or NAME=DIR) are checked.
    """
    from phonecli.encoders.registry import load_registry

    if spec.name not in load_registry():
        return
    if (spec.layers, spec.hidden_size) != (states, hidden):
        # a log line (stderr, above the progress bar), not an error: NAME=DIR may hold a variant
        log.warning("%s: registry says %d states x %d but %s has %d x %d; using the checkpoint's numbers",
                    spec.name, spec.layers, spec.hidden_size, source, states, hidden)
