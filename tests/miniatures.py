"""Generated miniatures of the corpus layouts phonecli reads (L2-ARCTIC, TIMIT, LibriSpeech, Kaldi).

Audio is espeak-ng speech of the phones each utterance is labelled with (phonecli.data.synth),
written in the corpus' own format (44.1 kHz WAV, NIST SPHERE, FLAC); the label files are the real
formats written by hand here (Praat long TextGrids, TIMIT .PHN/.WRD/.TXT in sample offsets, Kaldi
files), including each corpus' known quirks, so the readers are tested on what they will meet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from phonecli.data.synth import pronounce, synthesize, to_espeak

SENTENCES = [["WE", "CALL", "BEAR"], ["THE", "CAT", "SAT"], ["SHE", "WILL", "READ"], ["MARK", "THIS", "DOG"],
             ["GOOD", "FISH", "SWIM"], ["RED", "SHIP", "SAILS"]]
VOICES = ["en-us", "en-us+f3", "en-gb", "en-us+m3", "en-gb+f2", "en-us+m5"]


def speak(phones_per_word: list[list[str]], path: Path, voice: str, sr: int = 16000, fmt: str = "wav") -> np.ndarray:
    """espeak-ng audio of ARPAbet phones (with stress digits); written to ``path`` at ``sr``; returns samples."""
    tmp = path.with_suffix(".synth.wav")
    synthesize(to_espeak(phones_per_word), voice, 50, 160, tmp, fmt="wav")
    x, rate = sf.read(tmp, dtype="float32")
    tmp.unlink()
    if sr != rate:
        from scipy.signal import resample_poly

        g = np.gcd(sr, rate)
        x = resample_poly(x, sr // g, rate // g).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "sph":
        sf.write(path, x, sr, format="NIST", subtype="PCM_16")
    else:
        sf.write(path, x, sr, format=fmt.upper(), subtype="PCM_16")
    return x


def textgrid_text(xmax: float, tiers: list[tuple[str, list[tuple[float, float, str]]]]) -> str:
    """A Praat long-format TextGrid (what Praat and L2-ARCTIC's tools write)."""
    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0 ", f"xmax = {xmax} ",
           "tiers? <exists> ", f"size = {len(tiers)} ", "item []: "]
    for k, (name, ivs) in enumerate(tiers, start=1):
        out += [f"    item [{k}]:", '        class = "IntervalTier" ', f'        name = "{name}" ',
                "        xmin = 0 ", f"        xmax = {xmax} ", f"        intervals: size = {len(ivs)} "]
        for j, (a, b, lab) in enumerate(ivs, start=1):
            lab = lab.replace('"', '""')
            out += [f"        intervals [{j}]:", f"            xmin = {a} ", f"            xmax = {b} ",
                    f'            text = "{lab}" ']
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------- L2-ARCTIC
L2_SPEAKERS = {"ABA": "train", "BWC": "train", "ASI": "train", "HJK": "train",
               "MBMPS": "dev", "THV": "dev", "NJS": "test", "TLV": "test", "TNI": "test"}


def _l2_labels(words: list[list[str]], k: int) -> tuple[list[list[str]], list[list[str]], list[tuple[str, str, str, bool]]]:
    """Per word (tier labels, realized phones) and the expected (canonical, perceived, kind, distorted) units.

    Utterance ``k`` gets a deterministic mix: a substitution, a deletion, an addition, a distortion,
    an ``err``, and quirky spellings (lower case, stray spaces, stress digits, the ``AH)`` typo).
    """
    labels, realized, units = [], [], []
    for wi, phones in enumerate(words):
        wl, wr = [], []
        for pi, p in enumerate(phones):
            base = p.rstrip("012")
            mode = (k + 3 * wi + pi) % 9
            if mode == 0 and pi == 0:                    # substitution, written in lower case with spaces
                sub = "D" if base != "D" else "T"
                wl.append(f" {p.lower()} , {sub.lower()} ,s ")
                wr.append(sub)
                units.append((base, sub, "substitution", False))
            elif mode == 4 and pi == len(phones) - 1 and len(phones) > 1:   # deletion
                wl.append(f"{p},sil,d")
                units.append((base, "", "deletion", False))
            elif mode == 2 and pi == 1:                  # distortion: heard as a distorted X, scored as X
                wl.append(f"{p},{base}*,s")
                wr.append(p)
                units.append((base, base, "substitution", True))
            elif mode == 7 and pi == 0:                  # an unlabelled sound
                wl.append(f"{p},err,s")
                wr.append("AH0")
                units.append((base, "err", "substitution", False))
            else:
                wl.append(p if (k + pi) % 3 else f"  {p.lower()} ")
                wr.append(p)
                units.append((base, base, "correct", False))
        if wi == 1 and k % 2 == 0:                       # an addition after the second word's first phone
            wl.insert(1, "sil,AH0,a")
            wr.insert(1, "AH0")
            units.insert(len(units) - len(phones) + 1, ("", "AH", "addition", False))
        labels.append(wl)
        realized.append(wr)
    return labels, realized, units


def make_l2arctic(root: Path, speakers: dict[str, str] | None = None, per_speaker: int = 3) -> dict:
    """Write an L2-ARCTIC v5 miniature under ``root``. Returns ``{utt_id: {"split", "units", "canonical"}}``."""
    speakers = speakers or L2_SPEAKERS
    expected = {}
    for si, spk in enumerate(speakers):
        for j in range(per_speaker):
            k = si * per_speaker + j
            stem = f"arctic_a{k + 1:04d}"
            text = SENTENCES[k % len(SENTENCES)]
            words = [pronounce(w) for w in text]
            labels, realized, units = _l2_labels(words, k)
            wav = root / spk / "wav" / f"{stem}.wav"
            x = speak(realized, wav, VOICES[si % len(VOICES)], sr=44100)
            dur = len(x) / 44100
            # intervals: leading silence, phones spread evenly, an "sp" between words, trailing "SIL"
            n = sum(len(w) for w in labels) + len(labels) - 1
            step = (dur - 0.2) / n
            t = 0.1
            phone_ivs = [(0, 0.1, "sil" if k % 2 else "spn")]
            word_ivs = [(0, 0.1, "")]
            for wi, (w, wl) in enumerate(zip(text, labels)):
                start = t
                for lab in wl:
                    phone_ivs.append((round(t, 4), round(t + step, 4), lab))
                    t += step
                word_ivs.append((round(start, 4), round(t, 4), w.lower() if wi % 2 else w))
                if wi < len(labels) - 1:
                    phone_ivs.append((round(t, 4), round(t + step, 4), "sp" if wi % 2 else ""))
                    word_ivs.append((round(t, 4), round(t + step, 4), ""))
                    t += step
            phone_ivs.append((round(t, 4), round(dur, 4), "SIL"))
            word_ivs.append((round(t, 4), round(dur, 4), ""))
            tg = textgrid_text(round(dur, 4), [("words", word_ivs), ("phones", phone_ivs)])
            for folder in ("annotation", "textgrid"):
                (root / spk / folder).mkdir(parents=True, exist_ok=True)
            (root / spk / "annotation" / f"{stem}.TextGrid").write_text(tg)
            (root / spk / "textgrid" / f"{stem}.TextGrid").write_text(tg)
            (root / spk / "transcript").mkdir(parents=True, exist_ok=True)
            (root / spk / "transcript" / f"{stem}.txt").write_text(" ".join(text).capitalize() + ".")
            expected[f"{spk}_{stem}"] = {"split": speakers[spk], "units": units,
                                         "canonical": [c for c, _, kind, _ in units if kind != "addition"]}
    return expected


# ------------------------------------------------------------------------------------------ TIMIT
ARPA_TO_TIMIT = {"AH0": "ax", "ER0": "axr"}


def _timit_phones(words: list[list[str]]) -> list[list[str]]:
    """ARPAbet (with stress) -> TIMIT 61-set labels per word, with closures before stops."""
    out = []
    for w in words:
        t = []
        for p in w:
            lab = ARPA_TO_TIMIT.get(p, p.rstrip("012").lower())
            if lab in ("b", "d", "g", "p", "t", "k"):
                t.append(("bcl" if lab in "bdg" else "pcl") if lab in "bp" else (lab + "cl"))
            t.append(lab)
        out.append(t)
    return out


TIMIT_SPEAKERS = {"TRAIN": {"DR1": ["FCJF0", "MDPK0"], "DR2": ["FAEM0"]},
                  "TEST": {"DR1": ["MDAB0", "FELC0", "FAKS0", "MRJO0"], "DR2": ["MTAS1", "FDAC1"]}}


def make_timit(root: Path, lower: bool = False, per_speaker: int = 3) -> dict:
    """A TIMIT miniature: SPHERE .WAV (16 kHz), .PHN/.WRD in sample offsets, .TXT, SA1 files, h#/pau/q.

    Speakers: MDAB0/FELC0/MTAS1 (core test), FAKS0/FDAC1 (dev), MRJO0 (neither: unused), three train.
    ``lower`` writes lower-case folder and file names (some copies do). Returns
    ``{utt_id: {"split", "phn61": [...]}}`` for the utterances that should be in the manifest.
    """
    expected = {}
    k = 0
    for released, drs in TIMIT_SPEAKERS.items():
        for dr, spks in drs.items():
            for spk in spks:
                for j, sent in enumerate(["SA1"] + [f"SI{100 + j}" for j in range(per_speaker - 1)]):
                    text = SENTENCES[k % len(SENTENCES)]
                    k += 1
                    words = [pronounce(w) for w in text]
                    d = root / released / dr / spk
                    name = sent
                    if lower:
                        d = root / released.lower() / dr.lower() / spk.lower()
                        name = sent.lower()
                    wav = d / f"{name}.{'wav' if lower else 'WAV'}"
                    x = speak(words, wav, VOICES[k % len(VOICES)], sr=16000, fmt="sph")
                    n = len(x)
                    labels = _timit_phones(words)
                    flat = ["h#"] + [p for w in labels for p in w] + ["h#"]
                    if len(labels) > 1:                     # a pause and a glottal stop between words 1 and 2
                        i = 1 + len(labels[0])
                        flat[i:i] = ["pau", "q"]
                    step = n // len(flat)
                    phn = [f"{i * step} {(i + 1) * step if i < len(flat) - 1 else n} {p}" for i, p in enumerate(flat)]
                    wrd = []
                    t = step
                    for w, lab in zip(text, labels):
                        wrd.append(f"{t} {t + step * len(lab)} {w.lower()}")
                        t += step * len(lab)
                    ext = (lambda e: e.lower()) if lower else (lambda e: e)
                    (d / f"{name}.{ext('PHN')}").write_text("\n".join(phn) + "\n")
                    (d / f"{name}.{ext('WRD')}").write_text("\n".join(wrd) + "\n")
                    (d / f"{name}.{ext('TXT')}").write_text(f"0 {n} {' '.join(text).capitalize()}.\n")
                    split = "train" if released == "TRAIN" else "test" if spk in ("MDAB0", "FELC0", "MTAS1") else \
                        "dev" if spk in ("FAKS0", "FDAC1") else None
                    if not sent.startswith("SA") and split:
                        expected[f"{spk}_{sent}"] = {"split": split, "phn61": [p for p in flat if p != "q"]}
    return expected


# ------------------------------------------------------------------------------------ LibriSpeech
def make_librispeech(root: Path, per_chapter: int = 3) -> dict:
    """LibriSpeech miniature (FLAC + trans.txt) with two lexicon files in ``root`` (SUPERB's names).

    The first lexicon gives "READ" two pronunciations (the first wins) and lacks "SHIP", which the
    second one has; "SAILS" is in neither (an OOV word, in one dev utterance). Returns
    ``{utt_id: {"split", "text"}}``.
    """
    from phonecli.data.librispeech import LEXICONS

    words = sorted({w for s in SENTENCES for w in s})
    lex1 = [f"{w}\t{' '.join(pronounce(w))}" for w in words if w not in ("SHIP", "SAILS")]
    lex1.insert(0, "READ\tR EH1 D")       # first pronunciation of READ: the past tense
    lex2 = [f"SHIP\t{' '.join(pronounce('SHIP'))}", "READ\tR IY1 D"]
    base = root / "LibriSpeech"
    base.mkdir(parents=True, exist_ok=True)
    (base / LEXICONS[0]).write_text("\n".join(lex1) + "\n")
    (base / LEXICONS[1]).write_text("\n".join(lex2) + "\n")
    expected = {}
    k = 0
    for part, spks in (("train-clean-100", ["19", "26"]), ("dev-clean", ["84"]), ("test-clean", ["121", "237"])):
        for spk in spks:
            chapter = "100"
            d = base / part / spk / chapter
            lines = []
            for j in range(per_chapter):
                text = SENTENCES[k % len(SENTENCES)]
                if part == "dev-clean" and j == per_chapter - 1:
                    text = SENTENCES[5]                    # RED SHIP SAILS: SAILS is out of the lexicon
                else:
                    text = [w for w in text if w != "SAILS"] or ["WE"]
                k += 1
                utt = f"{spk}-{chapter}-{j:04d}"
                speak([pronounce(w) for w in text], d / f"{utt}.flac", VOICES[k % len(VOICES)], fmt="flac")
                lines.append(f"{utt} {' '.join(text)}")
                expected[utt] = {"split": {"train-clean-100": "train", "dev-clean": "dev"}.get(part, "test"),
                                 "text": text}
            (d / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return expected


# ----------------------------------------------------------------------------------------- Kaldi
def make_kaldi(root: Path, with_dev: bool = True) -> dict:
    """Kaldi data dirs: train uses whole files, test cuts two utterances out of one recording (segments)."""
    words = sorted({w for s in SENTENCES for w in s})
    (root / "lexicon.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "lexicon.txt").write_text("\n".join(f"{w} 1.0 {' '.join(p.rstrip('012') for p in pronounce(w))}"
                                                for w in words) + "\n")
    expected = {}
    audio = root / "audio"
    k = 0
    splits = ["train", "dev", "test"] if with_dev else ["train", "test"]
    for split in splits:
        d = root / "data" / split
        d.mkdir(parents=True, exist_ok=True)
        wav, text, u2s, seg = [], [], [], []
        if split != "test":
            for spk in (f"{split}a", f"{split}b"):
                for j in range(2):
                    t = SENTENCES[k % len(SENTENCES)]
                    k += 1
                    utt = f"{spk}-{j}"
                    speak([pronounce(w) for w in t], audio / f"{utt}.wav", VOICES[k % len(VOICES)])
                    wav.append(f"{utt} audio/{utt}.wav")
                    text.append(f"{utt} {' '.join(t)}")
                    u2s.append(f"{utt} {spk}")
                    expected[utt] = {"split": split, "text": t}
        else:   # one long recording per speaker, two segments each
            for spk in ("testa", "testb"):
                t1, t2 = SENTENCES[k % len(SENTENCES)], SENTENCES[(k + 1) % len(SENTENCES)]
                k += 2
                x1 = speak([pronounce(w) for w in t1], audio / "tmp1.wav", VOICES[k % len(VOICES)])
                x2 = speak([pronounce(w) for w in t2], audio / "tmp2.wav", VOICES[k % len(VOICES)])
                rec = np.concatenate([x1, np.zeros(1600, np.float32), x2])
                sf.write(audio / f"{spk}-rec.wav", rec, 16000, subtype="PCM_16")
                wav.append(f"{spk}-rec audio/{spk}-rec.wav")
                s2 = (len(x1) + 1600) / 16000
                for j, (t, a, b) in enumerate([(t1, 0.0, len(x1) / 16000), (t2, s2, s2 + len(x2) / 16000)]):
                    utt = f"{spk}-{j}"
                    seg.append(f"{utt} {spk}-rec {a:.4f} {b:.4f}")
                    text.append(f"{utt} {' '.join(t)}")
                    u2s.append(f"{utt} {spk}")
                    expected[utt] = {"split": split, "text": t, "samples": int(round((b - a) * 16000))}
            (audio / "tmp1.wav").unlink()
            (audio / "tmp2.wav").unlink()
            (d / "segments").write_text("\n".join(seg) + "\n")
        (d / "wav.scp").write_text("\n".join(wav) + "\n")
        (d / "text").write_text("\n".join(text) + "\n")
        (d / "utt2spk").write_text("\n".join(u2s) + "\n")
    return expected
