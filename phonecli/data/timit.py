"""Reader for TIMIT (LDC93S1): phone recognition with the standard 61 -> 48 -> 39 folding.

Layout (upper- or lower-case names, as copies differ)::

    ROOT/TRAIN/DR1/FCJF0/SI1027.WAV   NIST SPHERE, 16 kHz 16-bit
                        SI1027.PHN   "start end phone" per line, sample offsets at 16 kHz
                        SI1027.WRD   "start end word"
                        SI1027.TXT   "start end Sentence text."
    ROOT/TEST/DR1/...

Protocol (Lee & Hon 1989, "Speaker-independent phone recognition using hidden Markov models",
IEEE TASSP 37(11); as implemented by the Kaldi recipe egs/timit/s5):

* the SA1/SA2 sentences (read by every speaker) are excluded;
* train = all TRAIN speakers (462, 3,696 utterances); test = the 24-speaker core test set (192
  utterances, TIMIT documentation / Kaldi ``conf/test_spk.list``); dev = the 50-speaker
  development set (400 utterances, Kaldi ``conf/dev_spk.list``); the other TEST speakers are unused;
* targets are the 61 TIMIT phones folded to 48 (``q`` deleted; closures to ``cl``/``vcl``,
  ``h#``/``pau`` to ``sil``...) and PER is scored after folding both reference and hypothesis to
  39 (Kaldi ``conf/phones.60-48-39.map``), so ``sil`` is a scored phone, as in that recipe.

``phone_set="61"`` trains on the 61 phones (q deleted) and ``"39"`` on the 39 directly; the
scoring folding to 39 is recorded in the manifest either way.

libsndfile (``soundfile``) reads NIST SPHERE; shorten-compressed SPHERE files (some LDC
distributions) it cannot decode, and the reader says so instead of reading noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from phonecli.data.corpus import CorpusSpec, check_phone_set, utterance_from
from phonecli.data.manifest import Word
from phonecli.data.normalize import Problem, RawRecord, error, inspect_audio
from phonecli.errors import CorpusError, UtteranceError

# TIMIT phone -> (48-phone class, 39-phone class); q is deleted. Kaldi egs/timit/s5/conf/phones.60-48-39.map
FOLDING: dict[str, tuple[str, str]] = {
    "aa": ("aa", "aa"), "ae": ("ae", "ae"), "ah": ("ah", "ah"), "ao": ("ao", "aa"), "aw": ("aw", "aw"),
    "ax": ("ax", "ah"), "ax-h": ("ax", "ah"), "axr": ("er", "er"), "ay": ("ay", "ay"), "b": ("b", "b"),
    "bcl": ("vcl", "sil"), "ch": ("ch", "ch"), "d": ("d", "d"), "dcl": ("vcl", "sil"), "dh": ("dh", "dh"),
    "dx": ("dx", "dx"), "eh": ("eh", "eh"), "el": ("el", "l"), "em": ("m", "m"), "en": ("en", "n"),
    "eng": ("ng", "ng"), "epi": ("epi", "sil"), "er": ("er", "er"), "ey": ("ey", "ey"), "f": ("f", "f"),
    "g": ("g", "g"), "gcl": ("vcl", "sil"), "h#": ("sil", "sil"), "hh": ("hh", "hh"), "hv": ("hh", "hh"),
    "ih": ("ih", "ih"), "ix": ("ix", "ih"), "iy": ("iy", "iy"), "jh": ("jh", "jh"), "k": ("k", "k"),
    "kcl": ("cl", "sil"), "l": ("l", "l"), "m": ("m", "m"), "n": ("n", "n"), "ng": ("ng", "ng"),
    "nx": ("n", "n"), "ow": ("ow", "ow"), "oy": ("oy", "oy"), "p": ("p", "p"), "pau": ("sil", "sil"),
    "pcl": ("cl", "sil"), "r": ("r", "r"), "s": ("s", "s"), "sh": ("sh", "sh"), "t": ("t", "t"),
    "tcl": ("cl", "sil"), "th": ("th", "th"), "uh": ("uh", "uh"), "uw": ("uw", "uw"), "ux": ("uw", "uw"),
    "v": ("v", "v"), "w": ("w", "w"), "y": ("y", "y"), "z": ("z", "z"), "zh": ("zh", "sh"),
}
DELETED = {"q"}
PHONES61 = tuple(sorted(FOLDING))
PHONES48 = tuple(sorted({v[0] for v in FOLDING.values()}))
PHONES39 = tuple(sorted({v[1] for v in FOLDING.values()}))
FOLD_48_TO_39 = {v[0]: v[1] for v in FOLDING.values()}

# The 24-speaker core test set (TIMIT documentation; Kaldi egs/timit/s5/conf/test_spk.list)
CORE_TEST = ("MDAB0", "MWBT0", "FELC0", "MTAS1", "MWEW0", "FPAS0", "MJMP0", "MLNT0", "FPKT0", "MLLL0", "MTLS0",
             "FJLM0", "MBPM0", "MKLT0", "FNLP0", "MCMJ0", "MJDH0", "FMGD0", "MGRT0", "MNJM0", "FDHC0", "MJLN0",
             "MPAM0", "FMLD0")
# The 50-speaker development set (Kaldi egs/timit/s5/conf/dev_spk.list)
DEV = ("FAKS0", "FDAC1", "FJEM0", "MGWT0", "MJAR0", "MMDB1", "MMDM2", "MPDF0", "FCMH0", "FKMS0", "MBDG0", "MBWM0",
       "MCSH0", "FADG0", "FDMS0", "FEDW0", "MGJF0", "MGLB0", "MRTK0", "MTAA0", "MTDT0", "MTHC0", "MWJG0", "FNMR0",
       "FREW0", "FSEM0", "MBNS0", "MMJR0", "MDLS0", "MDLF0", "MDVC0", "MERS0", "FMAH0", "FDRW0", "MRCS0", "MRJM4",
       "FCAL1", "MMWH0", "FJSJ0", "MAJC0", "MJSW0", "MREB0", "FGJD0", "FJMG0", "MROA0", "MTEB0", "MJFC0", "MRJR0",
       "FMML0", "MRWS1")
N_TRAIN_SPEAKERS = 462
SOURCE = ("Lee & Hon 1989 (IEEE TASSP 37(11)) folding; core test (24 speakers) and dev (50 speakers) lists of "
          "the Kaldi recipe egs/timit/s5/conf/{test,dev}_spk.list")
SPHERE_UNSUPPORTED = ("shorten", "wavpack", "ulaw", "alaw")


def _child(d: Path, name: str) -> Path | None:
    """The entry of ``d`` called ``name`` in any letter case."""
    for p in d.iterdir():
        if p.name.lower() == name.lower():
            return p
    return None


def find_root(root: Path) -> Path | None:
    """``root`` or the folder one level down holding ``TRAIN/`` or ``TEST/`` with ``DR*`` folders."""
    for cand in [root, *(sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else [])]:
        for split in ("train", "test"):
            d = _child(cand, split) if cand.is_dir() else None
            if d is not None and d.is_dir() and any(p.name.lower().startswith("dr") for p in d.iterdir()):
                return cand
    return None


def looks_like(root: Path) -> bool:
    return find_root(root) is not None


def sphere_coding(path: Path) -> str | None:
    """The ``sample_coding`` field of a NIST SPHERE header, or None (not SPHERE / no field).

    Read by hand because soundfile does not expose it: the header is 1024 ASCII bytes starting
    ``NIST_1A``, one ``name -type value`` field per line up to ``end_head``.
    """
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head.startswith(b"NIST_1A"):
        return None
    for line in head.decode("ascii", errors="replace").splitlines():
        parts = line.split(None, 2)
        if parts and parts[0] == "end_head":
            break
        if len(parts) == 3 and parts[0] == "sample_coding":
            return parts[2].strip()
    return None


def read_segments(path: Path, what: str) -> list[tuple[int, int, str]]:
    """``start end label`` lines of a .PHN/.WRD file; ``ValueError`` with the line for a malformed one."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise ValueError(f"{path}:{n}: malformed {what} line {line.strip()!r} (expected 'start end label')")
        a, b = int(parts[0]), int(parts[1])
        if b < a:
            raise ValueError(f"{path}:{n}: segment ends ({b}) before it starts ({a})")
        out.append((a, b, parts[2]))
    return out


class TimitCorpus:
    """A TIMIT tree (see the module docstring). ``phone_set``: ``"48"`` (default), ``"61"`` or ``"39"``."""

    kind = "timit"

    def __init__(self, root: str | Path, phone_set: str = "48"):
        found = find_root(Path(root))
        if found is None:
            raise CorpusError(f"{root}: no TRAIN/ or TEST/ folder with DR* dialect folders; point at the TIMIT root")
        if str(phone_set) not in ("48", "61", "39"):
            raise CorpusError(f"--phone-set {phone_set!r}: TIMIT trains on 48 (default), 61 or 39 phones")
        self.root = found.resolve()
        self.phone_set = str(phone_set)
        self.problems: list[Problem] = []
        self.items: list[tuple[str, str, dict[str, Path]]] = []     # (split, speaker, {ext: path})
        speakers = {"train": set(), "dev": set(), "test": set()}
        unused_test = set()
        for released in ("train", "test"):
            split_dir = _child(self.root, released)
            if split_dir is None:
                continue
            for dr in sorted(p for p in split_dir.iterdir() if p.is_dir() and p.name.lower().startswith("dr")):
                for spk_dir in sorted(p for p in dr.iterdir() if p.is_dir()):
                    spk = spk_dir.name.upper()
                    split = "train" if released == "train" else "test" if spk in CORE_TEST else \
                        "dev" if spk in DEV else None
                    if split is None:
                        unused_test.add(spk)
                        continue
                    speakers[split].add(spk)
                    files: dict[str, dict[str, Path]] = {}
                    for f in spk_dir.iterdir():
                        stem, ext = f.stem.upper(), f.suffix.lower()
                        if stem.startswith("SA") or ext not in (".wav", ".phn", ".wrd", ".txt") or \
                                f.name.lower().endswith(".wav.wav"):
                            continue
                        files.setdefault(stem, {})[ext] = f
                    for stem in sorted(files):
                        self.items.append((split, spk, files[stem] | {"stem": stem}))
        if not self.items:
            raise CorpusError(f"{self.root}: no SI/SX utterance found under TRAIN/ or TEST/")
        complete = (len(speakers["train"]) == N_TRAIN_SPEAKERS and speakers["test"] == set(CORE_TEST)
                    and speakers["dev"] == set(DEV))
        if not complete:
            self.problems.append(Problem("warning", str(self.root), (
                f"{len(speakers['train'])} train / {len(speakers['dev'])} dev / {len(speakers['test'])} core-test "
                f"speakers instead of {N_TRAIN_SPEAKERS} / {len(DEV)} / {len(CORE_TEST)}: not the standard TIMIT "
                "split, numbers are not comparable with published ones")))
        train_map = {"48": {k: v[0] for k, v in FOLDING.items()}, "61": {k: k for k in FOLDING},
                     "39": {k: v[1] for k, v in FOLDING.items()}}[self.phone_set]
        self.train_map = train_map
        phones = {"48": PHONES48, "61": PHONES61, "39": PHONES39}[self.phone_set]
        scoring = {"48": FOLD_48_TO_39, "61": {k: v[1] for k, v in FOLDING.items()}, "39": None}[self.phone_set]
        self.spec = CorpusSpec(
            name="timit", benchmark="TIMIT PR (core test)" + ("" if complete else " (incomplete copy: not comparable)"),
            protocols=("per",), phone_set=phones, scoring_map=scoring,
            scored_on="39 phones (Lee & Hon 1989)", standard=complete,
            dev={"speakers": sorted(speakers["dev"]), "source": SOURCE},
            citations=["Lee & Hon 1989, Speaker-independent phone recognition using hidden Markov models, "
                       "IEEE TASSP 37(11):1641-1648", "Garofolo et al. 1993, TIMIT (LDC93S1)", SOURCE],
            notes=[f"trained on {self.phone_set} phones, scored on 39 (sil included, q deleted)",
                   "SA1/SA2 excluded", f"{len(unused_test)} TEST speakers outside the core test and dev sets unused"],
        )

    def __len__(self) -> int:
        return len(self.items)

    def records(self) -> Iterator[RawRecord]:
        for split, spk, files in self.items:
            utt_id = f"{spk}_{files['stem']}"
            problems: list[Problem] = []
            for ext in (".wav", ".phn", ".txt"):
                if ext not in files:
                    problems.append(error(utt_id, f"{files['stem']}{ext.upper()} missing next to the other files of "
                                                  f"speaker {spk}; restore it from the TIMIT release"))
            facts = None
            wav = files.get(".wav")
            if wav is not None:
                coding = sphere_coding(wav)
                if coding and any(c in coding.lower() for c in SPHERE_UNSUPPORTED):
                    problems.append(error(utt_id, f"{wav} is SPHERE with sample_coding {coding!r}, which libsndfile "
                                                  "cannot decode; convert the corpus with `sph2pipe -f wav` first"))
                else:
                    facts, aprob = inspect_audio(utt_id, wav, str(wav))
                    problems += aprob
            yield RawRecord(utt_id=utt_id, split=split, speaker=spk, entry=files, audio=str(wav or ""),
                            audio_facts=facts, problems=problems, gender=spk[0].lower(), origin=str(wav))

    def build(self, rec: RawRecord, mappings: list[dict]):
        files = rec.entry
        if rec.audio_facts is None or any(p.is_error for p in rec.problems):
            return utterance_from(rec, text="", phones=[], realized=[]), []   # raises the first error
        n = rec.audio_facts.num_samples
        if rec.audio_facts.sample_rate != 16000:
            raise UtteranceError(rec.utt_id, f"{rec.audio} is {rec.audio_facts.sample_rate} Hz, but .PHN offsets count "
                                             "16 kHz samples; use the original 16 kHz TIMIT audio")
        try:
            segs = read_segments(files[".phn"], "PHN")
            words = read_segments(files[".wrd"], "WRD") if ".wrd" in files else []
        except ValueError as e:
            raise UtteranceError(rec.utt_id, f"{e}; restore the file from the TIMIT release") from None
        for path, ss in ((files[".phn"], segs), (files.get(".wrd"), words)):
            for a, b, lab in ss:
                if b > n:
                    raise UtteranceError(rec.utt_id, f"{path}: segment {lab!r} ends at sample {b}, past the audio "
                                                     f"end ({n} samples); the label file belongs to another "
                                                     "recording: restore it")
        phones = []
        for k, (_, _, lab) in enumerate(segs, start=1):
            p = lab.lower()
            if p in DELETED:
                continue
            if p not in FOLDING:
                raise UtteranceError(rec.utt_id, f"{files['.phn']}: line {k}: {lab!r} is not one of TIMIT's 61 "
                                                 "phones; fix the label")
            phones.append(self.train_map[p])
        check_phone_set(rec.utt_id, phones, self.spec.phone_set, str(files[".phn"]))
        if not phones:
            raise UtteranceError(rec.utt_id, f"{files['.phn']}: no phone; restore the file")
        txt = files[".txt"].read_text(encoding="utf-8", errors="replace").split(None, 2)
        text = txt[2].strip() if len(txt) == 3 else ""
        return utterance_from(rec, text=text, phones=phones, realized=phones,
                              words=[Word(text=w, phones=[], phone_accuracy=[]) for _, _, w in words]), []
