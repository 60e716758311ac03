"""What a manifest says about its corpus, and which reader reads which layout.

:class:`CorpusSpec` travels in the manifest (``"corpus"``): the corpus name, the benchmark its
numbers belong to, the evaluation protocols that apply, the CTC phone set and the folding applied
before scoring (TIMIT trains on 48 phones and is scored on 39). A v1 manifest (SpeechOcean762
only) has none and gets :data:`SPEECHOCEAN762`.

``phonecli data prepare PATH`` recognises the layout (:func:`detect_format`) or takes
``--format``; every reader yields :class:`~phonecli.data.normalize.RawRecord` objects and builds
each utterance with its own ``build(record, mappings)``, so ``prepare`` has one loop for all.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from phonecli.data.phones import PHONES
from phonecli.errors import CorpusError

#: every evaluation protocol phonecli knows; a corpus lists the ones that apply to it
PROTOCOLS = ("seed", "phone", "per", "mdd")


@dataclass
class CorpusSpec:
    """The corpus-level facts later stages need (stored as ``manifest["corpus"]``)."""

    name: str = "speechocean762"            # speechocean762 | sample | l2arctic | timit | librispeech | kaldi | lhotse
    benchmark: str = "SpeechOcean762"       # the label a report prints beside each number
    protocols: tuple[str, ...] = ("seed", "phone")
    phone_set: tuple[str, ...] = PHONES     # CTC targets (index 0 = blank is prepended)
    # fold before scoring: phone -> scored phone ("" deletes it); None = score the phone set as is
    scoring_map: dict[str, str] | None = None
    scored_on: str = "39 CMU phones"        # what PER/MDD numbers are computed over, in words
    # True only when the splits are the benchmark's standard ones, complete (a miniature or a
    # partial copy is not comparable with published numbers, and the report says so)
    standard: bool = True
    dev: dict | None = None                 # fixed dev split {"speakers": [...], "source": ...}; None = carve
    citations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["protocols"] = list(self.protocols)
        d["phone_set"] = list(self.phone_set)
        return d

    @staticmethod
    def from_dict(d: dict) -> "CorpusSpec":
        d = dict(d)
        d["protocols"] = tuple(d.get("protocols", ()))
        d["phone_set"] = tuple(d.get("phone_set", PHONES))
        known = CorpusSpec.__dataclass_fields__
        return CorpusSpec(**{k: v for k, v in d.items() if k in known})

    def fold(self, phones) -> list[str]:
        """``phones`` as scored: the scoring map applied (a phone mapped to "" is dropped)."""
        if not self.scoring_map:
            return list(phones)
        out = []
        for p in phones:
            q = self.scoring_map.get(p, p)
            if q:
                out.append(q)
        return out


SPEECHOCEAN762 = CorpusSpec()


def spec_for_v1(source_kind: str) -> CorpusSpec:
    """The spec of a manifest written before specs existed (SpeechOcean762 or the bundled sample)."""
    if source_kind == "sample":
        return CorpusSpec(name="sample", benchmark="sample corpus (synthetic)", standard=False)
    return CorpusSpec()


# name -> (module, class, one-line description of the layout)
FORMATS: dict[str, tuple[str, str, str]] = {
    "l2arctic": ("phonecli.data.l2arctic", "L2ArcticCorpus",
                 "L2-ARCTIC v5: SPEAKER/{wav,transcript,textgrid,annotation}/"),
    "timit": ("phonecli.data.timit", "TimitCorpus", "TIMIT: TRAIN/ and TEST/ with DR*/SPEAKER/*.WAV|.PHN|.WRD|.TXT"),
    "librispeech": ("phonecli.data.librispeech", "LibriSpeechCorpus",
                    "LibriSpeech: train-clean-100/ dev-clean/ test-clean/ (SUPERB PR)"),
    "kaldi": ("phonecli.data.kaldi", "KaldiCorpus", "Kaldi data dirs train/ [dev/] test/ with wav.scp, text, utt2spk"),
    "lhotse": ("phonecli.data.lhotse_import", "LhotseCorpus", "lhotse manifests (*_cuts_SPLIT.jsonl.gz or "
               "*_recordings_SPLIT / *_supervisions_SPLIT)"),
}


def detect_format(path: Path) -> str | None:
    """The reader for a directory layout, or None (SpeechOcean762 / parquet are handled by prepare).

    Each reader module has a cheap ``looks_like(path)``; they are tried in :data:`FORMATS` order
    (the Kaldi layout last: any directory of Kaldi files looks like it).
    """
    for name, (module, _, _) in FORMATS.items():
        if importlib.import_module(module).looks_like(path):
            return name
    return None


def open_reader(path: Path, fmt: str, options: dict):
    """The reader instance for ``fmt``; ``options`` are the reader's keyword options (e.g. ``lexicon``)."""
    if fmt not in FORMATS:
        raise CorpusError(f"--format {fmt!r}: unknown; choose one of speechocean762, {', '.join(FORMATS)}")
    import inspect

    module, cls, _ = FORMATS[fmt]
    reader = getattr(importlib.import_module(module), cls)
    given = {k: v for k, v in options.items() if v is not None}
    accepted = set(inspect.signature(reader).parameters) - {"root"}
    extra = sorted(set(given) - accepted)
    if extra:
        raise CorpusError(f"--{extra[0].replace('_', '-')} does not apply to a {fmt} corpus "
                          f"(its options: {', '.join(sorted(accepted)) or 'none'})")
    return reader(path, **given)


# ------------------------------------------------------------------ helpers shared by the readers
def utterance_from(rec, *, text: str, phones: list[str] | None, realized: list[str], words=None,
                   annotation=None):
    """A manifest row for corpora without human scores (scores are NaN), from a reader's record.

    Raises :class:`~phonecli.errors.UtteranceError` with the record's first error problem.
    """
    import math

    from phonecli.data.manifest import Utterance
    from phonecli.data.normalize import first_error
    from phonecli.errors import UtteranceError

    bad = first_error(rec.problems)
    if bad is not None:
        raise UtteranceError(rec.utt_id, bad.message)
    if not rec.speaker:
        raise UtteranceError(rec.utt_id, "no speaker")
    facts = rec.audio_facts
    nan = math.nan
    return Utterance(
        utt_id=rec.utt_id, speaker=rec.speaker, split=rec.split, audio=rec.audio,
        duration=facts.duration, num_samples=facts.num_samples, sample_rate=facts.sample_rate,
        text=" ".join(text.split()), accuracy=nan, completeness=nan, fluency=nan, prosodic=nan, total=nan,
        words=list(words or []), realized_phones=list(realized), gender=rec.gender or "", age=rec.age,
        phones=None if phones is None else list(phones), annotation=annotation,
    )


def check_phone_set(utt_id: str, phones, phone_set, where: str) -> None:
    """Raise :class:`~phonecli.errors.UtteranceError` naming ``where`` at the first phone outside ``phone_set``."""
    from phonecli.errors import UtteranceError

    allowed = set(phone_set)
    for i, p in enumerate(phones):
        if p not in allowed:
            raise UtteranceError(utt_id, f"{where}: phone {i} {p!r} is not in the corpus phone set "
                                         f"({len(allowed)} phones); fix the label or remove the utterance")
