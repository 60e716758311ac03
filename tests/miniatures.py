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
            phone_ivs = [(0, 0.1, "sil")]
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
