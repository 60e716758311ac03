"""Import lhotse manifests (any corpus with a lhotse recipe) plus a pronunciation lexicon.

ROOT holds the manifests a lhotse recipe writes, per part: either ``*_cuts_PART.jsonl.gz`` or
``*_recordings_PART.jsonl.gz`` + ``*_supervisions_PART.jsonl.gz``. Parts map to splits by name
(``train*`` -> train, ``dev*``/``valid*`` -> dev, ``test*``/``eval*`` -> test) or explicitly with
``parts="train=train-clean-100,dev=dev-clean,test=test-clean"``; one part per split. Without a dev
part, dev is carved from train's speakers.

One utterance per supervision (cuts are trimmed to their supervisions). A supervision that covers
a whole single-channel file is referenced in place; any other (an offset, a channel, a URL source)
is loaded through lhotse (``Cut.load_audio``) and written as FLAC to ``OUT/audio/`` at its own
sampling rate. Targets: the supervision text through ``lexicon`` (first pronunciation wins).
lhotse is an optional extra: ``pip install 'phonecli[lhotse]'``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from phonecli.data.kaldi import encode_flac, lexicon_spec
from phonecli.data.lexicon import lexicon_utterance, required_lexicon
from phonecli.data.normalize import AudioFacts, Problem, RawRecord, error
from phonecli.errors import CorpusError

_MANIFEST = re.compile(r"^(?:.*_)?(cuts|recordings|supervisions)_(.+)\.jsonl(?:\.gz)?$")
_SPLIT_OF = (("train", "train"), ("dev", "dev"), ("valid", "dev"), ("test", "test"), ("eval", "test"))


def _manifests(root: Path) -> dict[str, dict[str, Path]]:
    """``{part: {"cuts"|"recordings"|"supervisions": path}}`` of the lhotse manifests in ``root``."""
    out: dict[str, dict[str, Path]] = {}
    if not root.is_dir():
        return out
    for p in sorted(root.iterdir()):
        m = _MANIFEST.match(p.name)
        if m:
            out.setdefault(m.group(2), {})[m.group(1)] = p
    return out


def looks_like(root: Path) -> bool:
    return any("cuts" in v or ("recordings" in v and "supervisions" in v) for v in _manifests(root).values())


def _require_lhotse():
    try:
        import lhotse
    except ModuleNotFoundError as e:
        raise CorpusError("importing lhotse manifests needs lhotse: pip install 'phonecli[lhotse]'") from e
    return lhotse


class LhotseCorpus:
    """lhotse manifests under ``root``; ``lexicon`` (paths) gives the phone targets."""

    kind = "lhotse"

    def __init__(self, root: str | Path, lexicon: list[str] | tuple[str, ...] | str | None = None,
                 parts: str | None = None):
        lhotse = _require_lhotse()
        self.root = Path(root).resolve()
        paths, self.lexicon = required_lexicon(self.root, lexicon, "an import of lhotse manifests")
        self.lexicon_paths = paths
        self.problems: list[Problem] = []
        found = _manifests(self.root)
        chosen = self._assign(found, parts)
        self.cuts: dict[str, object] = {}
        for split, part in chosen.items():
            files = found[part]
            if "cuts" in files:
                cuts = lhotse.load_manifest(files["cuts"])
            else:
                cuts = lhotse.CutSet.from_manifests(recordings=lhotse.load_manifest(files["recordings"]),
                                                    supervisions=lhotse.load_manifest(files["supervisions"]))
            self.cuts[split] = cuts.trim_to_supervisions(keep_overlapping=False).to_eager()
        if "train" not in self.cuts or "test" not in self.cuts:
            raise CorpusError(f"{self.root}: needs a train and a test part (found: {', '.join(found) or 'none'}); "
                              "name them with --parts train=NAME,test=NAME[,dev=NAME]")
        dev = None
        if "dev" in self.cuts:
            dev = {"speakers": sorted({c.supervisions[0].speaker or "" for c in self.cuts["dev"]}),
                   "source": f"lhotse part {chosen['dev']}"}
        self.spec = lexicon_spec("lhotse", self.lexicon, paths, dev)
        self.spec.notes.append("parts: " + ", ".join(f"{s}={p}" for s, p in chosen.items()))

    def _assign(self, found: dict[str, dict[str, Path]], parts: str | None) -> dict[str, str]:
        usable = {p for p, v in found.items() if "cuts" in v or ("recordings" in v and "supervisions" in v)}
        chosen: dict[str, str] = {}
        if parts:
            for item in parts.split(","):
                split, _, part = item.partition("=")
                split, part = split.strip(), part.strip()
                if split not in ("train", "dev", "test") or part not in usable:
                    raise CorpusError(f"--parts {parts!r}: {item!r} should be train|dev|test=PART with PART one of "
                                      f"{', '.join(sorted(usable))}")
                chosen[split] = part
            return chosen
        for part in sorted(usable):
            for prefix, split in _SPLIT_OF:
                if part.lower().startswith(prefix):
                    if split in chosen:
                        raise CorpusError(f"{self.root}: parts {chosen[split]} and {part} both look like {split}; "
                                          "choose with --parts train=NAME,dev=NAME,test=NAME")
                    chosen[split] = part
                    break
        return chosen

    def __len__(self) -> int:
        return sum(len(c) for c in self.cuts.values())

    def records(self) -> Iterator[RawRecord]:
        for split, cuts in self.cuts.items():
            for cut in cuts:
                sup = cut.supervisions[0]
                utt_id = sup.id
                problems: list[Problem] = []
                if not (sup.text or "").strip():
                    problems.append(error(utt_id, "supervision without text"))
                yield RawRecord(utt_id=utt_id, split=split, speaker=sup.speaker or "", entry={"cut": cut,
                                "words": sup.text or ""}, audio="", audio_facts=None, problems=problems,
                                gender=(sup.gender or "").lower()[:1], origin=f"lhotse cut {cut.id}")

    def build(self, rec: RawRecord, mappings: list[dict]):
        cut = rec.entry["cut"]
        if not any(p.is_error for p in rec.problems):
            _attach_audio(rec, cut)
        return lexicon_utterance(rec, rec.entry["words"], self.lexicon, ", ".join(self.lexicon_paths)), []


def _attach_audio(rec: RawRecord, cut) -> None:
    """Reference the source file when the cut is all of it; otherwise load the cut and store FLAC bytes."""
    recording = cut.recording
    src = recording.sources[0] if len(recording.sources) == 1 else None
    whole = (src is not None and src.type == "file" and recording.num_channels == 1 and cut.start == 0
             and abs(cut.duration - recording.duration) < 1e-3)
    if whole and Path(src.source).exists():
        rec.audio = str(Path(src.source).resolve())
        rec.audio_facts = AudioFacts(num_samples=recording.num_samples, sample_rate=recording.sampling_rate,
                                     channels=1)
        return
    try:
        x = cut.load_audio()          # (channels, samples) float32
    except (OSError, RuntimeError, ValueError) as e:
        rec.problems.append(error(rec.utt_id, f"lhotse cannot load cut {cut.id} ({str(e).splitlines()[0]}); "
                                              "check the recording paths in the manifest"))
        return
    mono = x.mean(axis=0) if x.shape[0] > 1 else x[0]
    rec.payload = encode_flac(mono, cut.sampling_rate)
    rec.audio = f"audio/{rec.utt_id}.flac"
    rec.audio_facts = AudioFacts(num_samples=len(mono), sample_rate=cut.sampling_rate, channels=1)
