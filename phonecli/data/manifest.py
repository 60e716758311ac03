"""The normalized corpus manifest every later stage reads (format ``phonecli-manifest`` v2).

On disk: ``DIR/manifest.json``::

    {"format": "phonecli-manifest", "version": 2, "corpus_id": "<sha256[:16]>",
     "source": {"kind": "openslr"|"parquet"|"sample"|"l2arctic"|"timit"|..., "path": ...},
     "corpus": {CorpusSpec: name, benchmark, protocols, phone_set, scoring_map, ...},
     "dev": {"fraction": 0.1, "seed": 0},
     "phone_set": ["AA", ...],            # the CTC phone set (= corpus.phone_set)
     "phone_mappings": [{"utt_id", "word_index", "from", "to"}],   # non-CMU expansions applied
     "skipped": [{"utt_id", "reason"}],    # ids dropped by --on-error skip
     "utterances": [Utterance, ...]}

``audio`` is an absolute path (OpenSLR source) or a path relative to the manifest directory
(audio decoded out of parquet shards into ``DIR/audio/``). ``corpus_id`` is a content
fingerprint of ids, splits, texts, scores, phones, audio sample counts and the audio content
(``audio_sha256``: SHA-256 of each file's bytes, computed once by ``data prepare``): re-levelled
or re-encoded audio gives a new ``corpus_id``, so caches of the old audio are never reused; the
two readers (OpenSLR directory, HF parquet, whose audio bytes are written unchanged) give the
same ``corpus_id`` for the same data, whatever the audio location.

``source`` says where the corpus came from: ``kind`` (reader), ``path`` and ``synthetic`` (True
for the bundled sample and every ``data synth`` output); with ``corpus`` (below) reports say what
the numbers were computed on and print literature anchors only beside the real SpeechOcean762.
Manifests written before audio hashes existed (no ``audio_sha256``) still load; ``extract``
refuses them with "re-run `phonecli data prepare`" (:meth:`Manifest.require_audio_hashes`).

Version 2 added ``corpus`` (other corpora bring their own phone set, scoring folding and
protocols, see :mod:`phonecli.data.corpus`) and two optional utterance fields, ``phones`` (the
canonical sequence when it is not grouped into words: TIMIT's closures and pauses sit between
words) and ``annotation`` (L2-ARCTIC's per-phone canonical/perceived labels). A v1 file is read
as SpeechOcean762 with the CMU-39 phone set. The version was bumped because a v1-era phonecli
must refuse a v2 file rather than train a TIMIT manifest on the CMU-39 vocabulary.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from phonecli.errors import CorpusError, CorpusNotFoundError

if TYPE_CHECKING:
    from phonecli.data.corpus import CorpusSpec

FORMAT = "phonecli-manifest"
VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "dev", "test")


@dataclass
class Mispronunciation:
    """One annotated error inside a word. ``index`` is the position in the word's phones.

    ``pronounced`` is an inventory phone, ``"X*"`` (close to phone X), ``"<unk>"`` or ``"<DEL>"``.
    """

    index: int
    canonical: str
    pronounced: str


@dataclass
class Word:
    text: str
    phones: list[str]                 # canonical phones, stress stripped, inventory only
    phone_accuracy: list[float]       # per phone, mean of 5 experts' 0/1/2 (0..2)
    accuracy: float = float("nan")    # 0..10
    stress: float = float("nan")      # 5 or 10
    total: float = float("nan")       # 0..10
    mispronunciations: list[Mispronunciation] = field(default_factory=list)


@dataclass
class AnnotatedPhone:
    """One unit of a phone-level error annotation (L2-ARCTIC's ``CPL,PPL,type`` labels).

    ``kind``: ``correct`` | ``substitution`` | ``deletion`` | ``addition``. ``canonical`` is ""
    for an addition, ``perceived`` is "" for a deletion; ``perceived`` may be ``"err"`` (a sound
    the annotators could not label with a phone). ``distorted``: the perceived phone carried the
    corpus' distortion mark (``X*``); it is then scored as the phone X (see the MDD docs).
    """

    canonical: str
    perceived: str
    kind: str
    distorted: bool = False


@dataclass
class Utterance:
    utt_id: str
    speaker: str
    split: str                        # train | dev | test
    audio: str                        # see module docstring
    duration: float                   # seconds
    num_samples: int                  # at sample_rate
    sample_rate: int                  # of the file on disk (extraction resamples to 16 kHz)
    text: str
    accuracy: float
    completeness: float
    fluency: float
    prosodic: float
    total: float
    words: list[Word]
    realized_phones: list[str]        # canonical with substitutions/deletions applied
    gender: str = ""
    age: int | None = None
    phones: list[str] | None = None                     # v2: canonical phones when not word-grouped
    annotation: list[AnnotatedPhone] | None = None      # v2: phone-level error annotation (MDD)
    audio_sha256: str = ""            # SHA-256 of the audio file's bytes ("" in manifests made before hashes)

    @property
    def canonical_phones(self) -> list[str]:
        if self.phones is not None:
            return list(self.phones)
        return [p for w in self.words for p in w.phones]

    @property
    def phone_accuracy(self) -> list[float]:
        return [a for w in self.words for a in w.phone_accuracy]

    @property
    def is_hq(self) -> bool:
        """Seed protocol: high-quality utterance (accuracy >= 8)."""
        return self.accuracy >= 8

    @property
    def is_positive(self) -> bool:
        """Seed protocol, Task C: a mispronounced utterance (accuracy <= 6)."""
        return self.accuracy <= 6

    def audio_path(self, root: str | Path) -> Path:
        """Absolute audio path; ``root`` is the manifest directory."""
        p = Path(self.audio)
        return p if p.is_absolute() else Path(root) / p

    @staticmethod
    def from_dict(d: dict) -> "Utterance":
        d = dict(d)
        words = []
        for w in d.pop("words"):
            w = dict(w)
            w["mispronunciations"] = [Mispronunciation(**m) for m in w.get("mispronunciations", [])]
            words.append(Word(**w))
        if d.get("annotation") is not None:
            d["annotation"] = [AnnotatedPhone(**a) for a in d["annotation"]]
        return Utterance(words=words, **d)


def realize(words: list[Word]) -> list[str]:
    """Apply annotated errors to the canonical phones (the ``realized`` CTC targets).

    Substitution by an inventory phone replaces it; ``"X*"`` (a distorted X) becomes X;
    ``"<DEL>"`` removes the phone; ``"<unk>"`` (unidentifiable sound) keeps the canonical
    phone because there is no symbol for it.
    """
    from phonecli.data.phones import PHONE_TO_ID, strip_stress

    out: list[str] = []
    for w in words:
        by_index = {m.index: m.pronounced for m in w.mispronunciations}
        for i, p in enumerate(w.phones):
            pron = by_index.get(i)
            if pron is None or pron == "<unk>":
                out.append(p)
            elif pron == "<DEL>":
                continue
            else:
                q = strip_stress(pron.rstrip("*"))
                out.append(q if q in PHONE_TO_ID else p)
    return out


@dataclass
class Manifest:
    """A loaded manifest: utterances in a fixed order (split, then utterance id)."""

    utterances: list[Utterance]
    corpus_id: str = ""
    source: dict = field(default_factory=dict)
    dev: dict = field(default_factory=dict)
    phone_mappings: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    root: Path | None = None          # directory the manifest was loaded from
    corpus: "CorpusSpec | None" = None  # None: SpeechOcean762 (what every v1 manifest is)

    def __post_init__(self) -> None:
        order = {s: i for i, s in enumerate(SPLITS)}
        self.utterances.sort(key=lambda u: (order.get(u.split, 99), u.utt_id))
        self._by_id = {u.utt_id: u for u in self.utterances}
        if not self.corpus_id:
            self.corpus_id = fingerprint(self.utterances)
        if self.corpus is None:
            from phonecli.data.corpus import spec_for_v1

            self.corpus = spec_for_v1(self.source.get("kind", ""))

    @property
    def vocab(self):
        """The CTC :class:`~phonecli.data.phones.Vocabulary` of this corpus' phone set."""
        from phonecli.data.phones import Vocabulary

        return Vocabulary(tuple(self.corpus.phone_set))

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)

    def __getitem__(self, utt_id: str) -> Utterance:
        return self._by_id[utt_id]

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self._by_id

    def split(self, name: str) -> list[Utterance]:
        return [u for u in self.utterances if u.split == name]

    def splits(self) -> list[str]:
        return [s for s in SPLITS if any(u.split == s for u in self.utterances)]

    def require_audio_hashes(self, data: str | Path | None = None) -> None:
        """Raise :class:`~phonecli.errors.DataError` unless every utterance has its audio content hash."""
        from phonecli.errors import DataError

        missing = [u.utt_id for u in self.utterances if not u.audio_sha256]
        if missing:
            where = data or self.root or "the manifest"
            raise DataError(f"{where}: manifest written by an older phonecli without audio content hashes "
                            f"({len(missing)} utterances, e.g. {missing[0]}); re-run `phonecli data prepare` so "
                            "the corpus_id covers the audio (caches made from it are then re-extracted)")

    def audio_path(self, utt: Utterance | str) -> Path:
        u = self[utt] if isinstance(utt, str) else utt
        return u.audio_path(self.root or Path.cwd())

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "corpus_id": self.corpus_id,
            "source": self.source,
            "corpus": self.corpus.to_dict(),
            "dev": self.dev,
            "phone_set": list(self.corpus.phone_set),
            "phone_mappings": self.phone_mappings,
            "skipped": self.skipped,
            "utterances": [_utterance_dict(u) for u in self.utterances],
        }

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=True))
        tmp.replace(path)  # atomic: a crash never leaves half a manifest
        self.root = directory.resolve()
        return path

    @staticmethod
    def load(path: str | Path) -> "Manifest":
        """Load ``DIR/manifest.json`` (``path`` may be the directory or the file)."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        if not path.exists():
            raise CorpusNotFoundError(
                f"{path}: no manifest here; create one with `phonecli data prepare SOURCE --out {path.parent}`"
            )
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}: malformed manifest JSON ({e}); re-run `phonecli data prepare`") from e
        if d.get("format") != FORMAT:
            raise CorpusError(f"{path}: not a phonecli manifest (format={d.get('format')!r})")
        if d.get("version") not in READABLE_VERSIONS:
            raise CorpusError(f"{path}: manifest version {d.get('version')} is not supported "
                             f"(this phonecli reads {', '.join(map(str, READABLE_VERSIONS))}); upgrade phonecli")
        from phonecli.data.corpus import CorpusSpec

        return Manifest(
            corpus=CorpusSpec.from_dict(d["corpus"]) if d.get("corpus") else None,
            utterances=[Utterance.from_dict(u) for u in d["utterances"]],
            corpus_id=d["corpus_id"],
            source=d.get("source", {}),
            dev=d.get("dev", {}),
            phone_mappings=d.get("phone_mappings", []),
            skipped=d.get("skipped", []),
            root=path.parent.resolve(),
        )


#: v2 utterance fields: left out of the file and the fingerprint when unset, so a SpeechOcean762
#: manifest keeps the corpus_id (and the caches) it had under v1
_OPTIONAL_V2 = ("phones", "annotation")


def _utterance_dict(u: Utterance) -> dict:
    d = asdict(u)
    for k in _OPTIONAL_V2:
        if d.get(k) is None:
            d.pop(k, None)
    return d


def fingerprint(utterances: list[Utterance]) -> str:
    """Content fingerprint (16 hex chars) independent of where the audio lives."""
    h = hashlib.sha256()
    for u in sorted(utterances, key=lambda u: u.utt_id):
        d = _utterance_dict(u)
        d.pop("audio")
        d.pop("duration")  # derived from num_samples / sample_rate
        h.update(json.dumps(d, sort_keys=True, allow_nan=True).encode())
    return h.hexdigest()[:16]
