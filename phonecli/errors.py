"""One error model for the whole library.

Every problem a user can fix (a bad input file, a wrong option, a stale cache, a damaged run)
is raised as a :class:`PhonecliError` subclass whose message is **one line** naming the
file/utterance/option and the fix. Commands catch exactly these (plus the environment
``OSError`` kinds in :data:`ENVIRONMENT_ERRNOS`) and print that line; anything else is a bug
and keeps its traceback.

Not-found kinds also subclass the builtin :class:`FileNotFoundError`, so ``except
FileNotFoundError`` keeps working for callers of the Python API.

Stage modules re-export their class under its historical name (``phonecli.cache.CacheError``
is ``phonecli.errors.CacheError``); this module is the single definition.
"""

from __future__ import annotations

import errno


class PhonecliError(Exception):
    """A problem the user can fix; ``str(e)`` is one line naming what is wrong and the fix."""


# -- configuration -------------------------------------------------------------------------------
class ConfigError(PhonecliError):
    """An option, preset key or layer spec is invalid (names the option and the valid values)."""


class LayerSpecError(ConfigError):
    """A ``--layers`` spec cannot be parsed or does not fit the cache/model."""


# -- data ----------------------------------------------------------------------------------------
class DataError(PhonecliError):
    """Corpus, manifest or audio problem."""


class CorpusError(DataError):
    """A corpus-level problem (missing/malformed file); the message names the file and the fix."""


class CorpusNotFoundError(CorpusError, FileNotFoundError):
    """A corpus directory/file or manifest does not exist."""


class UtteranceError(PhonecliError):
    """One utterance cannot be used (``--on-error skip`` drops it and records ``reason``).

    ``utt_id`` and ``reason`` are kept separately for the skip records; the message is
    ``"utterance ID: reason"``.
    """

    def __init__(self, utt_id: str, reason: str):
        super().__init__(f"utterance {utt_id}: {reason}")
        self.utt_id = utt_id
        self.reason = reason


class AudioError(DataError):
    """An audio file cannot be read or is unusable."""


class AudioChangedError(DataError):
    """An audio file no longer matches its manifest entry (content hash or sample count changed
    since ``data prepare``): never skipped, the manifest (and so the corpus_id) is stale."""


class UnknownPhoneError(DataError):
    """A phone symbol outside the 39-phone set (and not a known expansion)."""


class SynthError(DataError):
    """The synthetic-corpus generator cannot run (missing espeak-ng/sox, bad options)."""


class DownloadError(DataError):
    """A download failed or a downloaded file does not match its size/checksum."""


# -- encoders / extraction -----------------------------------------------------------------------
class ExtractionError(PhonecliError):
    """Loading or running an encoder failed in a way the user can fix; the message says how."""


# -- feature cache -------------------------------------------------------------------------------
class CacheError(PhonecliError):
    """A feature cache is missing, malformed, incomplete or damaged."""


class CacheNotFoundError(CacheError, FileNotFoundError):
    """No feature cache at the given path/URL."""


class CacheMismatchError(CacheError):
    """A store exists but was made from another model / corpus / settings."""


class CacheOverflowError(CacheError):
    """A hidden state does not fit the cache dtype (|x| > 65504 for float16)."""


# -- training / fusion / evaluation --------------------------------------------------------------
class RunError(PhonecliError):
    """A run directory is missing, malformed, or lacks what a stage needs; the message names it."""


class RunNotFoundError(RunError, FileNotFoundError):
    """No run directory (no run.json) at the given path."""


class ProbeError(PhonecliError):
    """A probe cannot be trained as asked; the message names the cache/utterance and the fix."""


class FeatureSourceError(ProbeError):
    """Caches given to a probe cannot be combined or read as asked."""


class FusionError(PhonecliError):
    """Runs cannot be fused as asked."""


class EvaluateError(PhonecliError):
    """A run cannot be evaluated (missing posteriors, manifest mismatch, ...)."""


class ReportError(EvaluateError):
    """A report cannot be written from the given runs."""


class FinetuneError(PhonecliError):
    """Fine-tuning cannot run as asked."""


class ExperimentError(PhonecliError):
    """An experiment preset is invalid or a step failed."""


class NonFiniteError(PhonecliError):
    """A NaN/inf value where a number was expected (feature, loss, posterior); names where."""


class DiskSpaceError(PhonecliError):
    """Not enough free space for what a stage is about to write (checked before it starts)."""


# -- environment ---------------------------------------------------------------------------------
#: ``OSError.errno`` values that are the machine's fault, not a bug: commands print one line
#: naming the path and the fix instead of a traceback.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on the device; free space or choose another output location",
    errno.EDQUOT: "disk quota exceeded; free space or choose another output location",
    errno.EROFS: "read-only file system; choose a writable output location",
    errno.EACCES: "permission denied; fix the permissions or choose another location",
    errno.EPERM: "operation not permitted; fix the permissions or choose another location",
}


def environment_message(e: BaseException) -> str | None:
    """One line for an environment ``OSError`` (full disk, read-only, permissions), else None."""
    if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
        where = e.filename or "output"
        return f"{where}: {ENVIRONMENT_ERRNOS[e.errno]}"
    return None
