"""Reader and downloader for LibriSpeech (OpenSLR 12) with SUPERB's phone recognition (PR) targets.

Layout: ``ROOT[/LibriSpeech]/{train-clean-100,dev-clean,test-clean}/SPK/CHAPTER/SPK-CHAPTER-NNNN.flac``
plus one ``SPK-CHAPTER.trans.txt`` per chapter ("UTT-ID WORDS ..." lines, upper case).

SUPERB PR protocol (Yang et al. 2021, "SUPERB: Speech processing Universal PERformance
Benchmark", Interspeech; s3prl ``downstream/ctc/libriphone.yaml``), followed exactly:

* train = train-clean-100, dev = dev-clean, test = test-clean (other parts are ignored);
* targets = the words of the transcript through two lexicons, in this order,
  ``librispeech-lexicon-200k-g2p.txt`` and ``librispeech-lexicon-allothers-g2p.txt`` (LibriSpeech's
  official g2p, distributed by s3prl), first pronunciation of a word wins (s3prl
  ``corpus/libriphone.py``); stress digits are KEPT;
* the vocabulary is s3prl's ``vocab/phoneme.txt``: SIL, SPN and the 69 stress-marked ARPAbet
  phones (71), and PER is the word-level edit distance over phone tokens summed over test-clean
  divided by the reference length (s3prl ``metric.py``), which is phonecli's corpus PER.

An out-of-lexicon word stops the utterance (s3prl would crash on it) with one line naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

from phonecli.data.corpus import CorpusSpec
from phonecli.data.lexicon import lexicon_utterance, read_lexicons
from phonecli.data.normalize import Problem, RawRecord, error, inspect_audio
from phonecli.data.phones import PHONES, VOWELS
from phonecli.errors import CorpusError, DownloadError

PARTS = {"train-clean-100": "train", "dev-clean": "dev", "test-clean": "test"}
EXPECTED_UTTERANCES = {"train-clean-100": 28539, "dev-clean": 2703, "test-clean": 2620}
LEXICONS = ("librispeech-lexicon-200k-g2p.txt", "librispeech-lexicon-allothers-g2p.txt")
# s3prl downstream/ctc/vocab/phoneme.txt: SIL, SPN, then ARPAbet with stress on vowels, sorted
SUPERB_PHONES: tuple[str, ...] = ("SIL", "SPN", *sorted(
    [f"{v}{d}" for v in VOWELS for d in "012"] + [p for p in PHONES if p not in VOWELS]))
SOURCE = "SUPERB PR (Yang et al. 2021); s3prl downstream/ctc/libriphone.yaml"

# OpenSLR 12 archives with their SHA-256 (as published in torchaudio's LIBRISPEECH dataset)
MIRROR = "https://www.openslr.org/resources/12"
ARCHIVE_SHA256 = {
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
}
# s3prl's own download location of the two SUPERB lexicons (s3prl/util: G2P.DEFAULT_LEXICON_URL)
LEXICON_MIRROR = "https://huggingface.co/datasets/s3prl/g2p/raw/main/lexicon"
MARKER = ".phonecli-librispeech.json"


def find_root(root: Path) -> Path | None:
    """``root`` or ``root/LibriSpeech`` when it holds one of the SUPERB parts."""
    for cand in (root, root / "LibriSpeech"):
        if cand.is_dir() and any((cand / p).is_dir() for p in PARTS):
            return cand
    return None


def looks_like(root: Path) -> bool:
    return find_root(root) is not None


class LibriSpeechCorpus:
    """The SUPERB PR parts of a LibriSpeech tree. ``lexicon``: paths (default: the two SUPERB
    lexicons in ROOT, where ``phonecli data download --corpus librispeech`` puts them)."""

    kind = "librispeech"

    def __init__(self, root: str | Path, lexicon: list[str] | tuple[str, ...] | str | None = None):
        found = find_root(Path(root))
        if found is None:
            raise CorpusError(f"{root}: none of {', '.join(PARTS)} found; point at the LibriSpeech root")
        self.root = found.resolve()
        self.problems: list[Problem] = []
        if lexicon is None:
            cands = [d / name for name in LEXICONS for d in (self.root, self.root.parent)]
            lexicon = [next((c for c in cands if c.name == name and c.exists()), self.root / name) for name in LEXICONS]
            missing = [str(p) for p in lexicon if not p.exists()]
            if missing:
                raise CorpusError(f"{missing[0]}: SUPERB lexicon not found; pass --lexicon, or fetch it with "
                                  "`phonecli data download --corpus librispeech --to DIR`")
        elif isinstance(lexicon, (str, Path)):
            lexicon = [lexicon]
        self.lexicon_paths = [str(Path(p).resolve()) for p in lexicon]
        self.lexicon = read_lexicons(self.lexicon_paths)
        self.items: list[tuple[str, str, Path, str]] = []       # (split, speaker, flac, transcript words)
        counts = {}
        for part, split in PARTS.items():
            d = self.root / part
            if not d.is_dir():
                continue
            n0 = len(self.items)
            for trans in sorted(d.glob("*/*/*.trans.txt")):
                for n, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
                    parts = line.split(maxsplit=1)
                    if not parts:
                        continue
                    utt = parts[0]
                    self.items.append((split, utt.split("-")[0], trans.parent / f"{utt}.flac",
                                       parts[1] if len(parts) > 1 else ""))
            counts[part] = len(self.items) - n0
        if not self.items:
            raise CorpusError(f"{self.root}: no *.trans.txt under {', '.join(PARTS)}")
        standard = counts == EXPECTED_UTTERANCES
        if not standard:
            self.problems.append(Problem("warning", str(self.root), (
                "utterances per part " + ", ".join(f"{k} {v}" for k, v in counts.items())
                + f" differ from the release ({', '.join(f'{k} {v}' for k, v in EXPECTED_UTTERANCES.items())}): "
                "numbers are not comparable with the SUPERB leaderboard")))
        self.spec = CorpusSpec(
            name="librispeech", benchmark="SUPERB PR (LibriSpeech test-clean)" + ("" if standard else
                                                                                 " (incomplete copy: not comparable)"),
            protocols=("per",), phone_set=SUPERB_PHONES, scoring_map=None,
            scored_on="71 SUPERB phones (stress kept)", standard=standard,
            dev={"speakers": sorted({s for sp, s, _, _ in self.items if sp == "dev"}), "source": SOURCE},
            citations=["Panayotov et al. 2015, LibriSpeech, ICASSP",
                       "Yang et al. 2021, SUPERB: Speech processing Universal PERformance Benchmark, Interspeech",
                       SOURCE],
            notes=[f"lexicons: {', '.join(Path(p).name for p in self.lexicon_paths)} (first pronunciation wins)"],
        )

    def __len__(self) -> int:
        return len(self.items)

    def records(self) -> Iterator[RawRecord]:
        for split, spk, flac, words in self.items:
            utt_id = flac.stem
            facts, problems = inspect_audio(utt_id, flac, str(flac))
            yield RawRecord(utt_id=utt_id, split=split, speaker=spk, entry=words, audio=str(flac),
                            audio_facts=facts, problems=problems, origin=str(flac))

    def build(self, rec: RawRecord, mappings: list[dict]):
        if not rec.entry.strip():
            rec.problems.append(error(rec.utt_id, f"empty transcript for {rec.audio}"))
        where = ", ".join(Path(p).name for p in self.lexicon_paths)
        return lexicon_utterance(rec, rec.entry, self.lexicon, where, phone_set=SUPERB_PHONES), []


# ------------------------------------------------------------------------------------ download
def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def download_librispeech(to: str | Path, parts=tuple(PARTS), mirror: str = MIRROR,
                         lexicon_mirror: str = LEXICON_MIRROR, *, sha256: dict[str, str] | None = None,
                         retries: int = 3, timeout: float = 60.0, backoff: float = 1.0, keep_archive: bool = False,
                         progress: bool | None = None) -> Path:
    """Fetch the SUPERB PR parts (resumable, SHA-256 checked) and the two lexicons into ``to``.

    Returns the LibriSpeech root (``to/LibriSpeech``) to pass to ``phonecli data prepare``. Every
    part is recorded in ``to/.phonecli-librispeech.json`` once extracted, so a re-run skips it.
    Lexicons have no published checksum: their SHA-256 is recorded, not compared. ``sha256``
    replaces the published archive checksums (a private mirror of other archives, tests).
    """
    from phonecli.data.download import _extract, _fetch

    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    marker = to / MARKER
    done = json.loads(marker.read_text()) if marker.exists() else {}
    checksums = sha256 or ARCHIVE_SHA256
    for part in parts:
        if part not in checksums:
            raise DownloadError(f"unknown LibriSpeech part {part!r}; SUPERB PR uses {', '.join(ARCHIVE_SHA256)}")
        url = f"{mirror.rstrip('/')}/{part}.tar.gz"
        if done.get(part, {}).get("url") == url and (to / "LibriSpeech" / part).is_dir():
            continue
        archive = to / f"{part}.tar.gz"
        part_file = to / f"{part}.tar.gz.part"
        if not archive.exists():
            _fetch(url, part_file, timeout=timeout, retries=retries, backoff=backoff, progress=progress)
            os.replace(part_file, archive)
        digest = _sha256(archive)
        if digest != checksums[part]:
            archive.unlink()
            raise DownloadError(f"{url}: SHA-256 {digest} does not match the expected {checksums[part]}; "
                                "the download is corrupt or the mirror changed; re-run to download again")
        _extract(archive, to)
        if not (to / "LibriSpeech" / part).is_dir():
            raise DownloadError(f"{archive}: extracted, but no LibriSpeech/{part}/ inside; is --url a LibriSpeech mirror?")
        if not keep_archive:
            archive.unlink()
        done[part] = {"url": url, "sha256": digest, "sha256_checked": True}
        _write_marker(marker, done)
    for name in LEXICONS:
        dest = to / "LibriSpeech" / name
        url = f"{lexicon_mirror.rstrip('/')}/{name}"
        if dest.exists() and done.get(name, {}).get("url") == url:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        _fetch(url, tmp, timeout=timeout, retries=retries, backoff=backoff, progress=progress)
        os.replace(tmp, dest)
        done[name] = {"url": url, "sha256": _sha256(dest), "sha256_checked": False}
        _write_marker(marker, done)
    return (to / "LibriSpeech").resolve()


def _write_marker(marker: Path, done: dict) -> None:
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(done, indent=1))
    os.replace(tmp, marker)
