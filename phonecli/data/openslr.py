"""Reader for the OpenSLR 101 layout of SpeechOcean762 (also the bundled sample corpus).

::

    ROOT/resource/scores.json          {utt_id: {text, accuracy, ..., words: [...]}}
    ROOT/{train,test}/wav.scp          "<utt_id> <path>" (path relative to ROOT as released, or absolute)
    ROOT/{train,test}/utt2spk          "<utt_id> <speaker>"
    ROOT/{train,test}/spk2gender, spk2age, text   (optional)
    ROOT/WAVE/SPEAKERxxxx/<utt_id>.WAV

Utterances are the lines of ``wav.scp`` — WAVE/ holds files nobody lists (5,245 files, 5,000
utterances in the release), so it is never globbed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from phonecli.data.normalize import CorpusError, Problem, RawRecord, error, inspect_audio, warning

RELEASED_SPLITS = ("train", "test")
SCORES = Path("resource") / "scores.json"


def is_openslr(root: str | Path) -> bool:
    root = Path(root)
    return (root / SCORES).exists() or any((root / s / "wav.scp").exists() for s in RELEASED_SPLITS)


def load_scores(path: Path) -> dict:
    """Parse scores.json -> ``{utt_id: entry}``; one-line :class:`CorpusError` when malformed."""
    if not path.exists():
        raise CorpusError(f"{path}: scores.json not found; SOURCE must be the corpus root that holds resource/scores.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path}: malformed JSON at line {e.lineno} column {e.colno} ({e.msg}); "
                          "restore the file from the release") from e
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 text ({e.reason}); restore the file from the release") from e
    if not isinstance(data, dict):
        raise CorpusError(f"{path}: expected a JSON object keyed by utterance id, got a {type(data).__name__}")
    return data


def read_table(path: Path, problems: list[Problem]) -> dict[str, tuple[str, int]]:
    """A Kaldi two-column file -> ``{key: (value, line_number)}``; first occurrence wins.

    Malformed lines and duplicate keys go to ``problems`` (the duplicates of wav.scp are
    reported per utterance by the reader instead, so they are skipped here).
    """
    table: dict[str, tuple[str, int]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            problems.append(Problem("error", f"{path}:{n}", f"malformed line {line.strip()!r} (expected '<key> <value>')"))
            continue
        key, value = parts
        if key in table:
            if path.name != "wav.scp":
                problems.append(Problem("error", f"{path}:{n}", f"duplicate key {key!r} (first on line {table[key][1]})"))
            continue
        table[key] = (value.strip(), n)
    return table


def _speaker_table(path: Path, problems: list[Problem]) -> dict[str, str]:
    """spk2gender / spk2age keyed by bare speaker id (some copies write SPEAKER0001, utt2spk says 0001)."""
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for key, (value, _) in read_table(path, problems).items():
        out[key[len("SPEAKER"):] if key.upper().startswith("SPEAKER") else key] = value
    return out


class OpenSLRCorpus:
    """An OpenSLR-layout corpus. Fatal layout problems raise :class:`CorpusError` at construction;
    ``problems`` collects the corpus-level findings that do not stop ``prepare``."""

    kind = "openslr"

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise CorpusError(f"{root}: not a directory")
        self.problems: list[Problem] = []
        self.scores = load_scores(self.root / SCORES)
        self.splits = [s for s in RELEASED_SPLITS if (self.root / s / "wav.scp").exists()]
        if not self.splits:
            raise CorpusError(f"{self.root}: neither train/wav.scp nor test/wav.scp exists; "
                              "SOURCE must be the SpeechOcean762 root (OpenSLR layout)")
        self.wav: dict[str, dict[str, tuple[str, int]]] = {}
        self.utt2spk: dict[str, dict[str, str]] = {}
        self.gender: dict[str, str] = {}
        self.age: dict[str, str] = {}
        self.text: dict[str, dict[str, str]] = {}
        for s in self.splits:
            d = self.root / s
            self.wav[s] = read_table(d / "wav.scp", self.problems)
            if not (d / "utt2spk").exists():
                raise CorpusError(f"{d / 'utt2spk'}: missing; every split needs utt2spk (Kaldi data dir)")
            self.utt2spk[s] = {k: v for k, (v, _) in read_table(d / "utt2spk", self.problems).items()}
            self.gender.update(_speaker_table(d / "spk2gender", self.problems))
            self.age.update(_speaker_table(d / "spk2age", self.problems))
            if (d / "text").exists():
                self.text[s] = {k: v for k, (v, _) in read_table(d / "text", self.problems).items()}
        listed = {u for s in self.splits for u in self.wav[s]}
        for utt_id in self.scores:
            if utt_id not in listed:
                self.problems.append(Problem("error", str(self.root / SCORES),
                                             f"utterance {utt_id} has scores but is in no wav.scp", utt_id))
        spk_split: dict[str, str] = {}
        for s in self.splits:
            for spk in sorted(set(self.utt2spk[s].values())):
                if spk in spk_split and spk_split[spk] != s:
                    self.problems.append(Problem("warning", f"{self.root / s / 'utt2spk'}",
                                                 f"speaker {spk} is in both {spk_split[spk]} and {s}; "
                                                 "the released splits should be speaker-disjoint"))
                spk_split.setdefault(spk, s)

    def __len__(self) -> int:
        return sum(len(self._lines(s)) for s in self.splits)

    def _lines(self, split: str) -> list[tuple[int, str, str]]:
        """All wav.scp lines of a split, duplicates included: (line number, id, path)."""
        out = []
        path = self.root / split / "wav.scp"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            parts = line.strip().split(maxsplit=1)
            if len(parts) == 2:
                out.append((n, parts[0], parts[1].strip()))
        return out

    def records(self) -> Iterator[RawRecord]:
        """One :class:`RawRecord` per wav.scp line (train, then test, in file order)."""
        seen: dict[str, str] = {}
        for split in self.splits:
            scp = self.root / split / "wav.scp"
            for n, utt_id, rx in self._lines(split):
                origin = f"{split}/wav.scp line {n}"
                problems: list[Problem] = []
                if utt_id in seen:
                    problems.append(error(utt_id, f"duplicate id in {scp}:{n} (first listed at {seen[utt_id]})"))
                seen.setdefault(utt_id, origin)
                facts = None
                if rx.endswith("|"):
                    problems.append(error(utt_id, f"{scp}:{n}: piped wav.scp commands are not supported; "
                                                  "list audio file paths"))
                    audio = rx
                else:
                    p = Path(rx)
                    audio_path = p if p.is_absolute() else self.root / p
                    audio = str(audio_path)
                    facts, aprob = inspect_audio(utt_id, audio_path, str(audio_path))
                    problems += aprob
                entry = self.scores.get(utt_id)
                if entry is None:
                    problems.append(error(utt_id, f"listed in {scp}:{n} but missing from {self.root / SCORES}"))
                speaker = self.utt2spk[split].get(utt_id, "")
                if not speaker:
                    problems.append(error(utt_id, f"missing from {self.root / split / 'utt2spk'}"))
                kaldi_text = self.text.get(split, {}).get(utt_id)
                if kaldi_text is not None and isinstance(entry, dict) and isinstance(entry.get("text"), str) \
                        and kaldi_text.split() != entry["text"].split():
                    problems.append(warning(utt_id, f"{split}/text says {kaldi_text!r} but scores.json says "
                                                    f"{entry['text']!r}; scores.json is used"))
                age = self.age.get(speaker)
                yield RawRecord(
                    utt_id=utt_id, split=split, speaker=speaker, entry=entry, audio=audio, audio_facts=facts,
                    problems=problems, gender=self.gender.get(speaker, ""),
                    age=int(age) if age is not None and age.lstrip("-").isdigit() else None, origin=origin,
                )
