"""Reader for L2-ARCTIC v5 (Zhao et al., Interspeech 2018): mispronunciation detection and diagnosis.

Layout (one folder per speaker)::

    ROOT/SPEAKER/wav/arctic_a0001.wav              44.1 kHz mono
    ROOT/SPEAKER/transcript/arctic_a0001.txt       the prompt
    ROOT/SPEAKER/textgrid/arctic_a0001.TextGrid    forced alignment (canonical phones only)
    ROOT/SPEAKER/annotation/arctic_a0001.TextGrid  manual annotation (about 150 utterances per speaker)

The manifest holds the manually annotated utterances (the ``annotation/`` TextGrids), the MDD
benchmark's unit. Each phone interval of the annotation's ``phones`` tier is one
:class:`~phonecli.data.manifest.AnnotatedPhone`:

* a bare label (``AH0``) is a correctly pronounced canonical phone;
* ``CPL,PPL,s`` a substitution (canonical CPL heard as PPL), ``CPL,sil,d`` a deletion,
  ``sil,PPL,a`` an addition (corpus README conventions);
* PPL ``err`` is a sound the annotators could not label with a phone; PPL ``X*`` marks a
  distorted X. Distortions are scored as X (what the L2-ARCTIC MDD scoring of Fu et al. 2021,
  https://github.com/cageyoko/CTC-Attention-Mispronunciation, does by stripping ``*``), and
  ``distorted`` keeps the mark.
* silence intervals (``""``, ``sil``, ``sp``, ``spn``) are no unit.

Labels are normalized: case and surrounding whitespace dropped, stress digits stripped, the
corpus' typos ER), AH), V with two backquotes, W with one, and the reduced vowel AX mapped to ER, AH, V, W, AH
(the same fixes as the reference recipe above). Anything else outside the 39 CMU phones stops the
utterance with one line naming the TextGrid and the interval.

Split (the MDD literature's, from the same recipe and used by most L2-ARCTIC MDD papers since):
test = NJS, TLV, TNI, TXHC, YKWK, ZHAA (one speaker per L1); dev = MBMPS, THV, SVBI, NCC, YDCK,
YBAA (again one per L1, carved from the 18 training speakers); train = the other 12.
YDCK arctic_a0209 / a0272 have broken annotations and are left out (recorded in ``skipped``),
as in that recipe. Audio stays 44.1 kHz on disk; extraction resamples it to 16 kHz with
``torchaudio.functional.resample`` (windowed sinc), see :func:`phonecli.data.audio.load_audio`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from phonecli.data.corpus import CorpusSpec, check_phone_set, utterance_from
from phonecli.data.manifest import AnnotatedPhone, Word
from phonecli.data.normalize import Problem, RawRecord, inspect_audio
from phonecli.data.phones import PHONES
from phonecli.data.textgrid import read_textgrid
from phonecli.errors import CorpusError, UtteranceError

# speaker -> (L1, gender), from the corpus documentation
SPEAKERS: dict[str, tuple[str, str]] = {
    "ABA": ("Arabic", "m"), "SKA": ("Arabic", "f"), "YBAA": ("Arabic", "m"), "ZHAA": ("Arabic", "f"),
    "BWC": ("Mandarin", "m"), "LXC": ("Mandarin", "f"), "NCC": ("Mandarin", "f"), "TXHC": ("Mandarin", "m"),
    "ASI": ("Hindi", "m"), "RRBI": ("Hindi", "m"), "SVBI": ("Hindi", "f"), "TNI": ("Hindi", "f"),
    "HJK": ("Korean", "f"), "HKK": ("Korean", "m"), "YDCK": ("Korean", "f"), "YKWK": ("Korean", "m"),
    "EBVS": ("Spanish", "m"), "ERMS": ("Spanish", "m"), "MBMPS": ("Spanish", "f"), "NJS": ("Spanish", "f"),
    "HQTV": ("Vietnamese", "m"), "PNV": ("Vietnamese", "f"), "THV": ("Vietnamese", "f"), "TLV": ("Vietnamese", "m"),
}
TEST_SPEAKERS = ("NJS", "TLV", "TNI", "TXHC", "YKWK", "ZHAA")
DEV_SPEAKERS = ("MBMPS", "THV", "SVBI", "NCC", "YDCK", "YBAA")
KNOWN_BROKEN = {("YDCK", "arctic_a0209"), ("YDCK", "arctic_a0272")}
SPLIT_SOURCE = ("Fu et al. 2021, 'A Full Text-Dependent End to End Mispronunciation Detection and Diagnosis with "
                "Easy Data Augmentation Techniques' (arXiv:2104.08428), recipe "
                "github.com/cageyoko/CTC-Attention-Mispronunciation egs/*/local/l2arctic_prep.py")
SILENCE = {"", "SIL", "SP", "SPN"}
TYPOS = {"ER)": "ER", "AH)": "AH", "V``": "V", "W`": "W", "AX": "AH"}
UNKNOWN_SOUND = "err"
ERROR_TYPES = {"s": "substitution", "d": "deletion", "a": "addition"}
_WORD = re.compile(r"[A-Z0-9']+")


def looks_like(root: Path) -> bool:
    """At least one speaker folder with ``annotation/`` and ``wav/``."""
    return any((d / "annotation").is_dir() and (d / "wav").is_dir() for d in _speaker_dirs(root))


def _speaker_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")) if root.is_dir() else []


def clean_phone(label: str) -> tuple[str, bool]:
    """One raw phone label -> (normalized symbol, distortion mark seen). ``"err"`` stays ``"err"``."""
    s = label.strip().upper()
    distorted = "*" in s
    s = s.replace("*", "").rstrip("_").strip()
    s = s.rstrip("012")
    if s == "ERR":
        return UNKNOWN_SOUND, distorted
    return TYPOS.get(s, s), distorted


def parse_annotation(label: str) -> AnnotatedPhone | None:
    """One ``phones``-tier label -> :class:`AnnotatedPhone`, None for silence.

    Raises ``ValueError`` with the reason for a malformed label (the caller names the file).
    """
    parts = [p.strip() for p in label.split(",")]
    if len(parts) == 1:
        canon, star = clean_phone(parts[0])
        if canon in SILENCE:
            return None
        return AnnotatedPhone(canonical=canon, perceived=canon, kind="correct", distorted=star)
    if len(parts) != 3:
        raise ValueError(f"label {label!r} is neither a phone nor 'CPL,PPL,type'")
    kind = ERROR_TYPES.get(parts[2].strip().lower())
    if kind is None:
        raise ValueError(f"label {label!r} has error type {parts[2]!r}, expected s, d or a")
    canon, _ = clean_phone(parts[0])
    perceived, star = clean_phone(parts[1])
    if kind == "deletion":
        return AnnotatedPhone(canonical=canon, perceived="", kind=kind)
    if kind == "addition":
        return AnnotatedPhone(canonical="", perceived=perceived, kind=kind, distorted=star)
    if perceived in SILENCE:      # a substitution by silence is a deletion written the other way
        return AnnotatedPhone(canonical=canon, perceived="", kind="deletion")
    if perceived == canon and not star:
        return AnnotatedPhone(canonical=canon, perceived=canon, kind="correct")
    return AnnotatedPhone(canonical=canon, perceived=perceived, kind=kind, distorted=star)


def words_of(text: str) -> list[str]:
    """Comparable word tokens: upper case, punctuation and hyphens as separators."""
    return _WORD.findall(text.upper())


def realized_targets(annotation: list[AnnotatedPhone]) -> list[str]:
    """CTC targets for ``--targets realized``: what was heard; ``err`` (no phone symbol) keeps the canonical phone."""
    out = []
    for a in annotation:
        if a.kind == "deletion":
            continue
        if a.perceived == UNKNOWN_SOUND:
            if a.canonical:
                out.append(a.canonical)
            continue
        out.append(a.perceived)
    return out


class L2ArcticCorpus:
    """The annotated utterances of an L2-ARCTIC v5 tree (see the module docstring)."""

    kind = "l2arctic"

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.problems: list[Problem] = []
        self.items: list[tuple[str, str, Path]] = []      # (speaker, stem, annotation TextGrid)
        self.excluded: list[dict] = []
        speakers = [d for d in _speaker_dirs(self.root) if (d / "annotation").is_dir()]
        if not speakers:
            raise CorpusError(f"{self.root}: no SPEAKER/annotation/ folders; point at the L2-ARCTIC v5 root "
                              "(the folder holding ABA/, BWC/, ...)")
        unknown = []
        for d in speakers:
            spk = d.name.upper()
            if spk not in SPEAKERS:
                unknown.append(d.name)
            for tg in sorted(p for p in (d / "annotation").iterdir() if p.suffix.lower() == ".textgrid"):
                if (spk, tg.stem) in KNOWN_BROKEN:
                    self.excluded.append({"utt_id": f"{spk}_{tg.stem}", "reason": "known broken annotation, "
                                          "left out as in the L2-ARCTIC MDD recipe"})
                    continue
                self.items.append((d.name, tg.stem, tg))
        for name in unknown:
            self.problems.append(Problem("warning", str(self.root / name),
                                         f"speaker {name} is not one of L2-ARCTIC's 24; it goes to train"))
        present = {d.name.upper() for d in speakers}
        complete = set(SPEAKERS) <= present and not unknown
        missing_test = [s for s in TEST_SPEAKERS if s not in present]
        if missing_test:
            self.problems.append(Problem("warning", str(self.root),
                                         f"test speaker(s) {', '.join(missing_test)} missing: the test split is not "
                                         "the MDD literature's, numbers are not comparable"))
        self.spec = CorpusSpec(
            name="l2arctic", benchmark="L2-ARCTIC MDD" + ("" if complete else " (incomplete copy: not comparable)"),
            protocols=("per", "mdd"), phone_set=PHONES, scoring_map=None,
            scored_on="39 CMU phones, stress and silences removed", standard=complete,
            dev={"speakers": sorted(s for s in DEV_SPEAKERS if s in present), "source": SPLIT_SOURCE},
            citations=["Zhao et al. 2018, L2-ARCTIC: A Non-native English Speech Corpus, Interspeech",
                       SPLIT_SOURCE],
            notes=["audio is 44.1 kHz on disk; extraction resamples it to 16 kHz with torchaudio.functional.resample",
                   "PER is computed against the annotated (perceived) phones; canonical phones are the prompt's",
                   "distortions (X*) are scored as X; 'err' (unlabelled sound) can never be diagnosed correctly"],
        )

    def __len__(self) -> int:
        return len(self.items)

    @property
    def skipped(self) -> list[dict]:
        return list(self.excluded)

    def records(self) -> Iterator[RawRecord]:
        for spk_dir, stem, tg in self.items:
            spk = spk_dir.upper()
            utt_id = f"{spk}_{stem}"
            wav = self.root / spk_dir / "wav" / f"{stem}.wav"
            facts, problems = inspect_audio(utt_id, wav, str(wav))
            # 44.1 kHz is the corpus' rate: one corpus note instead of a warning per utterance
            problems = [p for p in problems if p.is_error or "Hz" not in p.message]
            split = "test" if spk in TEST_SPEAKERS else "dev" if spk in DEV_SPEAKERS else "train"
            l1, gender = SPEAKERS.get(spk, ("", ""))
            yield RawRecord(utt_id=utt_id, split=split, speaker=spk, entry={"textgrid": tg, "l1": l1},
                            audio=str(wav), audio_facts=facts, problems=problems, gender=gender,
                            origin=str(tg))

    def build(self, rec: RawRecord, mappings: list[dict]):
        """The manifest row of one annotated utterance (``mappings`` is unused: no phone is expanded)."""
        tg_path: Path = rec.entry["textgrid"]
        if rec.audio_facts is None:
            return utterance_from(rec, text="", phones=[], realized=[]), []   # raises the audio error
        try:
            tiers = read_textgrid(tg_path)
        except CorpusError as e:      # one unreadable file loses one utterance (--on-error skip), not the corpus
            raise UtteranceError(rec.utt_id, str(e)) from None
        if "phones" not in tiers:
            raise UtteranceError(rec.utt_id, f"{tg_path}: no 'phones' tier (tiers: {', '.join(tiers) or 'none'}); "
                                             "restore the annotation TextGrid")
        annotation: list[AnnotatedPhone] = []
        duration = rec.audio_facts.duration
        for k, iv in enumerate(tiers["phones"], start=1):
            if iv.end > duration + 0.05:
                raise UtteranceError(rec.utt_id, f"{tg_path}: phones interval {k} ends at {iv.end:.3f} s, past the "
                                                 f"audio end ({duration:.3f} s); the TextGrid belongs to another "
                                                 "recording: restore it")
            try:
                a = parse_annotation(iv.label)
            except ValueError as e:
                raise UtteranceError(rec.utt_id, f"{tg_path}: phones interval {k}: {e}; fix the label") from None
            if a is not None:
                annotation.append(a)
        for a in annotation:
            for field, value in (("canonical", a.canonical), ("perceived", a.perceived)):
                if value and value != UNKNOWN_SOUND and value not in PHONES:
                    raise UtteranceError(rec.utt_id, f"{tg_path}: {field} phone {value!r} is not an ARPAbet phone "
                                                     "(39 CMU phones); fix the label or remove the utterance")
        canonical = [a.canonical for a in annotation if a.kind != "addition"]
        check_phone_set(rec.utt_id, canonical, PHONES, str(tg_path))
        if not canonical:
            raise UtteranceError(rec.utt_id, f"{tg_path}: the phones tier holds no phone; restore the annotation")
        words = [iv.label for iv in tiers.get("words", []) if iv.label.strip().upper() not in SILENCE]
        transcript = tg_path.parent.parent / "transcript" / f"{tg_path.stem}.txt"
        text = transcript.read_text(encoding="utf-8", errors="replace").strip() if transcript.exists() else ""
        if text and "words" in tiers and words_of(" ".join(words)) != words_of(text):
            raise UtteranceError(rec.utt_id, f"{tg_path}: the words tier says {' '.join(words)!r} but {transcript} "
                                             f"says {text!r}; fix the TextGrid or the transcript")
        if not text:
            text = " ".join(words)
        return utterance_from(rec, text=text, phones=canonical, realized=realized_targets(annotation),
                              words=[Word(text=w, phones=[], phone_accuracy=[]) for w in words],
                              annotation=annotation), []
