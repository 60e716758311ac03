"""Reader for Kaldi data directories plus a pronunciation lexicon: any corpus with a Kaldi recipe.

Layout::

    ROOT/train/{wav.scp, text, utt2spk}[, segments, spk2gender]
    ROOT/dev/...      (optional: without it dev is carved from train's speakers, --dev-fraction)
    ROOT/test/...

``wav.scp`` lists ``<id> <audio path>`` (relative paths resolve against ROOT or, Kaldi's convention
of running from the recipe directory, ROOT's parent); piped commands (``sox ... |``) are refused.
With ``segments`` (``<utt> <recording> <start s> <end s>``) each utterance is cut out of its
recording at prepare time and written as FLAC to ``OUT/audio/`` (no resampling), so every later
stage reads one file per utterance. Targets are the ``text`` words through ``--lexicon`` (first
pronunciation wins, :mod:`phonecli.data.lexicon`); the phone set is every phone of the lexicon.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

from phonecli.data.corpus import CorpusSpec
from phonecli.data.lexicon import lexicon_utterance, required_lexicon
from phonecli.data.normalize import AudioFacts, Problem, RawRecord, error, inspect_audio
from phonecli.data.openslr import read_table
from phonecli.errors import CorpusError

SPLIT_DIRS = {"train": ("train",), "dev": ("dev", "valid", "validation"), "test": ("test", "eval")}
MIN_SECONDS = 0.1


def _split_dir(root: Path, split: str) -> Path | None:
    for name in SPLIT_DIRS[split]:
        d = root / name
        if (d / "wav.scp").exists():
            return d
    return None


def looks_like(root: Path) -> bool:
    return root.is_dir() and _split_dir(root, "train") is not None and (_split_dir(root, "train") / "text").exists()


def encode_flac(samples, sample_rate: int) -> bytes:
    """``(samples,)`` or ``(samples, channels)`` float -> FLAC bytes (16-bit), what cut utterances are stored as."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def lexicon_spec(name: str, lexicon: dict[str, list[str]], paths: list[str], dev: dict | None) -> CorpusSpec:
    """The spec of a corpus whose targets come from a lexicon: phone set = every lexicon phone."""
    phones = tuple(sorted({p for prons in lexicon.values() for p in prons}))
    return CorpusSpec(name=name, benchmark=f"{name} corpus PR (lexicon targets)", protocols=("per",),
                      phone_set=phones, scoring_map=None, scored_on=f"{len(phones)} lexicon phones",
                      standard=False, dev=dev, notes=[f"lexicon: {', '.join(paths)} (first pronunciation wins)"])


class KaldiCorpus:
    """Kaldi data dirs ``train/ [dev/] test/`` under ``root`` with a ``lexicon`` (one or more paths)."""

    kind = "kaldi"

    def __init__(self, root: str | Path, lexicon: list[str] | tuple[str, ...] | str | None = None):
        self.root = Path(root).resolve()
        paths, self.lexicon = required_lexicon(self.root, lexicon, "a Kaldi data dir")
        self.problems: list[Problem] = []
        self.dirs = {s: _split_dir(self.root, s) for s in SPLIT_DIRS}
        if self.dirs["train"] is None or self.dirs["test"] is None:
            raise CorpusError(f"{self.root}: needs train/ and test/ Kaldi data dirs (wav.scp, text, utt2spk); "
                              "dev/ is optional")
        self.tables: dict[str, dict[str, dict]] = {}
        for split, d in self.dirs.items():
            if d is None:
                continue
            t = {}
            for name in ("wav.scp", "text", "utt2spk"):
                if not (d / name).exists():
                    raise CorpusError(f"{d / name}: missing; a Kaldi data dir needs wav.scp, text and utt2spk")
                t[name] = {k: v for k, (v, _) in read_table(d / name, self.problems).items()}
            for name in ("segments", "spk2gender"):
                if (d / name).exists():
                    t[name] = {k: v for k, (v, _) in read_table(d / name, self.problems).items()}
            self.tables[split] = t
        fatal = [p for p in self.problems if p.is_error]
        if fatal:
            raise CorpusError(str(fatal[0]))
        dev = None if self.dirs["dev"] is None else {"speakers": sorted(set(self.tables["dev"]["utt2spk"].values())),
                                                      "source": str(self.dirs["dev"])}
        self.spec = lexicon_spec("kaldi", self.lexicon, paths, dev)
        self.lexicon_paths = paths

    def __len__(self) -> int:
        return sum(len(t["text"]) for t in self.tables.values())

    def _audio_path(self, rx: str) -> Path:
        """A wav.scp path: absolute, or relative to ROOT, or to ROOT's parent (the recipe directory
        Kaldi scripts run from, when ROOT is its ``data/``), whichever exists (ROOT when neither)."""
        p = Path(rx)
        if p.is_absolute():
            return p
        for base in (self.root, self.root.parent):
            if (base / p).exists():
                return base / p
        return self.root / p

    def records(self) -> Iterator[RawRecord]:
        for split, t in self.tables.items():
            d = self.dirs[split]
            for utt_id, words in t["text"].items():
                problems: list[Problem] = []
                segs = t.get("segments")
                rec_id, span = utt_id, None
                if segs is not None:
                    if utt_id not in segs:
                        problems.append(error(utt_id, f"in {d / 'text'} but not in {d / 'segments'}"))
                    else:
                        parts = segs[utt_id].split()
                        try:
                            rec_id, span = parts[0], (float(parts[1]), float(parts[2]))
                        except (IndexError, ValueError):
                            problems.append(error(utt_id, f"{d / 'segments'}: malformed line for {utt_id} "
                                                          "(expected '<utt> <recording> <start> <end>')"))
                rx = t["wav.scp"].get(rec_id)
                facts, audio = None, ""
                if rx is None:
                    problems.append(error(utt_id, f"recording {rec_id} is not in {d / 'wav.scp'}"))
                elif rx.rstrip().endswith("|"):
                    problems.append(error(utt_id, f"{d / 'wav.scp'}: piped commands are not supported; write the "
                                                  "audio to files and list their paths"))
                else:
                    audio = str(self._audio_path(rx))
                    if span is None:
                        facts, aprob = inspect_audio(utt_id, Path(audio), audio)
                        problems += aprob
                spk = t["utt2spk"].get(utt_id, "")
                if not spk:
                    problems.append(error(utt_id, f"missing from {d / 'utt2spk'}"))
                yield RawRecord(utt_id=utt_id, split=split, speaker=spk, entry={"words": words, "span": span},
                                audio=audio, audio_facts=facts, problems=problems,
                                gender=t.get("spk2gender", {}).get(spk, ""), origin=str(d / "text"))

    def build(self, rec: RawRecord, mappings: list[dict]):
        span = rec.entry["span"]
        if span is not None and not any(p.is_error for p in rec.problems):
            cut_segment(rec, span)
        return lexicon_utterance(rec, rec.entry["words"], self.lexicon, ", ".join(self.lexicon_paths)), []


def cut_segment(rec: RawRecord, span: tuple[float, float]) -> None:
    """Cut ``span`` (seconds) out of ``rec.audio`` into ``rec.payload`` (FLAC) at ``audio/<utt>.flac``.

    Sets ``rec.audio_facts``; a segment outside the recording or too short adds an error problem.
    """
    import soundfile as sf

    src = Path(rec.audio)
    if not src.exists():
        rec.problems.append(error(rec.utt_id, f"audio file not found: {src}; check wav.scp"))
        return
    info = sf.info(str(src))
    start, end = int(round(span[0] * info.samplerate)), int(round(span[1] * info.samplerate))
    if start < 0 or end > info.frames + 1 or end - start < MIN_SECONDS * info.samplerate:
        rec.problems.append(error(rec.utt_id, f"segment {span[0]:.3f}-{span[1]:.3f} s does not fit {src} "
                                              f"({info.frames / info.samplerate:.3f} s) or is shorter than "
                                              f"{MIN_SECONDS} s; fix the segments file"))
        return
    x, sr = sf.read(str(src), start=start, stop=min(end, info.frames), dtype="float32")
    rec.payload = encode_flac(x, sr)
    rec.audio = f"audio/{rec.utt_id}.flac"
    rec.audio_facts = AudioFacts(num_samples=len(x), sample_rate=sr, channels=1 if x.ndim == 1 else x.shape[1])
