"""scores.json entries -> :class:`Word` / :class:`Utterance`; phone normalization; audio facts.

Both corpus readers (OpenSLR directory, HF parquet shards) hand every utterance to this module
as a :class:`RawRecord` (id, split, speaker, the raw scores entry, audio facts), so the two
readers cannot disagree on how an entry becomes a manifest row.

Checks are written once, in :func:`check_entry` and :func:`check_audio`, and return
:class:`Problem` objects: ``data validate`` prints them all, ``data prepare`` stops (or skips
the utterance with ``--on-error skip``) at the first error. Warnings never stop ``prepare``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phonecli.data.manifest import Mispronunciation, Utterance, Word, realize
from phonecli.data.phones import NON_CMU_MAP, UnknownPhoneError, normalize_phone, strip_stress
from phonecli.errors import CorpusError, UtteranceError  # noqa: F401  (re-exported)

TARGET_SR = 16_000
MIN_SECONDS = 0.1  # same floor as phonecli.data.audio.load_audio: shorter audio fails at extraction
UTTERANCE_SCORES = ("accuracy", "completeness", "fluency", "prosodic", "total")
SPECIAL_PRONOUNCED = {"<DEL>": "<DEL>", "<UNK>": "<unk>"}


@dataclass(frozen=True)
class Problem:
    """One finding of ``validate`` (or the reason ``prepare`` stops). ``where`` is a file or ``utterance ID``."""

    severity: str           # "error" | "warning"
    where: str
    message: str
    utt_id: str | None = None

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}" if self.where else f"{self.severity}: {self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


def error(utt_id: str, message: str) -> Problem:
    return Problem("error", f"utterance {utt_id}", message, utt_id)


def warning(utt_id: str, message: str) -> Problem:
    return Problem("warning", f"utterance {utt_id}", message, utt_id)


@dataclass
class AudioFacts:
    """What ``soundfile.info`` says about one file (header only, no decoding)."""

    num_samples: int
    sample_rate: int
    channels: int
    sha256: str = ""                # content hash of the file's bytes (the manifest's audio_sha256)

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.num_samples / self.sample_rate


@dataclass
class RawRecord:
    """One utterance as a reader found it, before normalization.

    ``audio`` is what goes into the manifest (absolute path, or relative to the manifest dir);
    ``audio_facts`` is None when the audio could not be inspected (``problems`` say why);
    ``entry`` is None when scores.json has no entry for the id (``problems`` say so).
    """

    utt_id: str
    split: str                      # "train" | "test" as released (dev is carved later)
    speaker: str
    entry: Any                      # the scores.json value (a dict when well-formed)
    audio: str
    audio_facts: AudioFacts | None
    problems: list[Problem] = field(default_factory=list)   # found by the reader (audio, listing)
    gender: str = ""
    age: int | None = None
    origin: str = ""                # human-readable location, e.g. "train/wav.scp line 12"
    payload: bytes | None = None    # encoded audio to write to ``audio`` (parquet shards), else None


# --------------------------------------------------------------------------------------- audio
def inspect_audio(utt_id: str, source: Any, label: str) -> tuple[AudioFacts | None, list[Problem]]:
    """Header facts of one audio file or file-like ``source`` (``label`` names it in messages).

    Errors: missing, unreadable, empty, shorter than ``MIN_SECONDS``. Warnings: sample rate
    other than 16 kHz (extraction resamples), more than one channel (extraction downmixes).
    """
    import io

    import soundfile as sf

    from phonecli.data.audio import content_hash

    if isinstance(source, (str, Path)) and not Path(source).exists():
        return None, [error(utt_id, f"audio file not found: {label}; check wav.scp or restore the file")]
    # the bytes are read once: hashed (corpus_id covers the audio content) and parsed from memory
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source.getvalue()
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as e:  # libsndfile raises LibsndfileError/RuntimeError with its own text
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, [error(utt_id, f"unreadable audio {label} ({msg}); re-encode it as WAV/FLAC or remove the utterance")]
    facts = AudioFacts(num_samples=int(info.frames), sample_rate=int(info.samplerate), channels=int(info.channels),
                       sha256=content_hash(data))
    problems: list[Problem] = []
    if facts.num_samples <= 0:
        problems.append(error(utt_id, f"empty audio {label} (0 samples); remove the utterance or use --on-error skip"))
    elif facts.duration < MIN_SECONDS:
        problems.append(error(utt_id, f"audio too short {label} ({facts.duration:.3f} s < {MIN_SECONDS} s); "
                                      "remove the utterance or use --on-error skip"))
    if facts.sample_rate != TARGET_SR:
        problems.append(warning(utt_id, f"{label} is {facts.sample_rate} Hz, not {TARGET_SR} Hz; "
                                        "extraction resamples it (convert the file to silence this)"))
    if facts.channels != 1:
        problems.append(warning(utt_id, f"{label} has {facts.channels} channels; extraction downmixes to mono"))
    return facts, problems


# -------------------------------------------------------------------------------------- phones
def split_phones(value: Any) -> list[str] | None:
    """``phones`` as stored: a list (current data) or a space-separated string (older copies)."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, (list, tuple)) and all(isinstance(p, str) for p in value):
        return list(value)
    return None


def normalize_pronounced(symbol: str) -> tuple[str, ...]:
    """A ``pronounced-phone`` value -> tuple of manifest symbols.

    ``<DEL>``/``<unk>`` stay as they are; ``X*`` (close to X) keeps the star on the normalized
    phone(s); a plain phone is normalized like a canonical one. Raises :class:`UnknownPhoneError`.
    """
    s = symbol.strip()
    special = SPECIAL_PRONOUNCED.get(s.upper())
    if special:
        return (special,)
    star = s.endswith("*")
    base = normalize_phone(s[:-1] if star else s)
    return tuple(p + "*" for p in base) if star else base


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def check_entry(utt_id: str, entry: Any) -> list[Problem]:
    """Every problem of one scores.json entry (errors and warnings), without building anything."""
    problems: list[Problem] = []
    if not isinstance(entry, dict):
        return [error(utt_id, f"scores entry is a {type(entry).__name__}, expected an object")]
    text = entry.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append(error(utt_id, "missing or empty 'text'"))
    for key in UTTERANCE_SCORES:
        v = _number(entry.get(key))
        if v is None:
            problems.append(error(utt_id, f"missing or non-numeric utterance score {key!r}"))
        elif not 0 <= v <= 10:
            problems.append(warning(utt_id, f"utterance score {key}={v:g} outside 0..10"))
    words = entry.get("words")
    if not isinstance(words, list) or not words:
        problems.append(error(utt_id, "missing or empty 'words' list"))
        return problems
    if isinstance(text, str) and len(text.split()) != len(words):
        problems.append(error(utt_id, f"text has {len(text.split())} words but 'words' has {len(words)} entries"))
    for wi, w in enumerate(words):
        where = f"word {wi}"
        if not isinstance(w, dict):
            problems.append(error(utt_id, f"{where} is a {type(w).__name__}, expected an object"))
            continue
        where = f"word {wi} ({w.get('text')!r})"
        if not isinstance(w.get("text"), str):
            problems.append(error(utt_id, f"{where}: missing 'text'"))
        phones = split_phones(w.get("phones"))
        if phones is None or not phones:
            problems.append(error(utt_id, f"{where}: 'phones' missing, empty or not a list/string"))
            continue
        acc = w.get("phones-accuracy")
        if not isinstance(acc, list) or any(_number(a) is None for a in acc):
            problems.append(error(utt_id, f"{where}: 'phones-accuracy' missing or not a list of numbers"))
        elif len(acc) != len(phones):
            problems.append(error(utt_id, f"{where}: {len(phones)} phones but {len(acc)} phones-accuracy values"))
        elif any(not 0 <= float(a) <= 2 for a in acc):
            problems.append(warning(utt_id, f"{where}: phones-accuracy outside 0..2: {acc}"))
        for pi, p in enumerate(phones):
            try:
                normalize_phone(p)
            except UnknownPhoneError:
                problems.append(error(utt_id, f"{where}: phone {pi} {p!r} is outside the 39-phone inventory "
                                              f"and the non-CMU map ({', '.join(NON_CMU_MAP)})"))
        for key in ("accuracy", "stress", "total"):
            if key in w and _number(w[key]) is None:
                problems.append(error(utt_id, f"{where}: word score {key!r} is not a number"))
        mis = w.get("mispronunciations", [])
        if mis is None:
            mis = []
        if not isinstance(mis, list):
            problems.append(error(utt_id, f"{where}: 'mispronunciations' is not a list"))
            continue
        for m in mis:
            if not isinstance(m, dict) or not isinstance(m.get("index"), int) or isinstance(m.get("index"), bool) \
                    or not isinstance(m.get("pronounced-phone"), str):
                problems.append(error(utt_id, f"{where}: malformed mispronunciation {m!r} "
                                              "(needs integer 'index' and string 'pronounced-phone')"))
                continue
            i = m["index"]
            if not 0 <= i < len(phones):
                problems.append(error(utt_id, f"{where}: mispronunciation index {i} outside its {len(phones)} phones"))
                continue
            try:
                normalize_pronounced(m["pronounced-phone"])
            except UnknownPhoneError:
                problems.append(error(utt_id, f"{where}: pronounced phone {m['pronounced-phone']!r} is outside "
                                              "the inventory, the non-CMU map, X*, <DEL> and <unk>"))
            canon = m.get("canonical-phone")
            if isinstance(canon, str) and strip_stress(canon) != strip_stress(phones[i]):
                problems.append(warning(utt_id, f"{where}: mispronunciation canonical-phone {canon!r} "
                                                f"differs from phone {i} {phones[i]!r}; using {phones[i]!r}"))
    return problems


def first_error(problems: list[Problem]) -> Problem | None:
    return next((p for p in problems if p.is_error), None)


def _float(value: Any) -> float:
    v = _number(value)
    return math.nan if v is None else v


def build_words(utt_id: str, entry: dict, mappings: list[dict]) -> list[Word]:
    """Normalized words of a checked entry (run :func:`check_entry` first).

    Stress digits are stripped. A non-CMU symbol expands through ``NON_CMU_MAP``: its phone
    accuracy is copied to every part, mispronunciation indices are re-numbered, and one entry
    ``{"utt_id", "word_index", "phone_index", "field", "from", "to"}`` is appended to
    ``mappings`` (``phone_index`` is the position in the original, unexpanded word).
    """
    words: list[Word] = []
    for wi, w in enumerate(entry["words"]):
        raw = split_phones(w["phones"]) or []
        phones: list[str] = []
        acc: list[float] = []
        positions: list[range] = []
        for pi, (sym, a) in enumerate(zip(raw, w["phones-accuracy"])):
            parts = normalize_phone(sym)
            if strip_stress(sym) in NON_CMU_MAP:
                mappings.append({"utt_id": utt_id, "word_index": wi, "phone_index": pi, "field": "phones",
                                 "from": sym, "to": list(parts)})
            positions.append(range(len(phones), len(phones) + len(parts)))
            phones.extend(parts)
            acc.extend([float(a)] * len(parts))
        mis: list[Mispronunciation] = []
        for m in sorted(w.get("mispronunciations") or [], key=lambda m: m["index"]):
            pron = normalize_pronounced(m["pronounced-phone"])
            sym = m["pronounced-phone"].strip().rstrip("*")
            if strip_stress(sym) in NON_CMU_MAP:
                mappings.append({"utt_id": utt_id, "word_index": wi, "phone_index": m["index"],
                                 "field": "pronounced", "from": m["pronounced-phone"], "to": list(pron)})
            targets = positions[m["index"]]
            for j, pos in enumerate(targets):
                if pron[0] in ("<DEL>", "<unk>"):
                    p = pron[0]
                else:
                    # Canonical expanded to more parts than were pronounced: the rest is deleted;
                    # extra pronounced parts have no slot (the mapping entry above keeps them).
                    p = pron[j] if j < len(pron) else "<DEL>"
                mis.append(Mispronunciation(index=pos, canonical=phones[pos], pronounced=p))
        words.append(Word(
            text=w["text"], phones=phones, phone_accuracy=acc,
            accuracy=_float(w.get("accuracy")), stress=_float(w.get("stress")), total=_float(w.get("total")),
            mispronunciations=mis,
        ))
    return words


def build_utterance(rec: RawRecord, mappings: list[dict]) -> tuple[Utterance, list[Problem]]:
    """One manifest row from a reader's record, or :class:`UtteranceError` at the first error.

    Returns the utterance and the warnings found on the way. ``mappings`` receives the non-CMU
    expansions applied (only when the utterance is accepted).
    """
    problems = list(rec.problems)
    if rec.entry is not None:
        problems += check_entry(rec.utt_id, rec.entry)
    else:
        problems.append(error(rec.utt_id, "no entry in scores.json"))
    if not rec.speaker:
        problems.append(error(rec.utt_id, "no speaker (missing from utt2spk / empty 'speaker')"))
    bad = first_error(problems)
    if bad is not None:
        raise UtteranceError(rec.utt_id, bad.message)
    assert rec.audio_facts is not None  # an audio error would have been raised above
    local: list[dict] = []
    words = build_words(rec.utt_id, rec.entry, local)
    e = rec.entry
    facts = rec.audio_facts
    utt = Utterance(
        utt_id=rec.utt_id, speaker=rec.speaker, split=rec.split, audio=rec.audio,
        duration=facts.duration, num_samples=facts.num_samples, sample_rate=facts.sample_rate,
        text=" ".join(e["text"].split()),
        accuracy=float(e["accuracy"]), completeness=float(e["completeness"]), fluency=float(e["fluency"]),
        prosodic=float(e["prosodic"]), total=float(e["total"]),
        words=words, realized_phones=realize(words), gender=rec.gender or "", age=rec.age,
        audio_sha256=facts.sha256,
    )
    mappings.extend(local)
    return utt, [p for p in problems if not p.is_error]
