"""Reader for Hugging Face parquet shards with the ``mispeech/speechocean762`` schema.

Columns: ``accuracy completeness fluency prosodic text total words speaker gender age audio``
where ``audio`` is a struct ``{bytes, path}`` and ``words`` a list of structs shaped like
scores.json words. There is no utterance-id column: the id is the stem of ``audio.path``
(``000030012.wav`` -> ``000030012``). The split comes from the shard name
(``data/train-00000-of-00001.parquet``) or its parent directory (``train/0000.parquet``).

Audio bytes are not decoded here: ``soundfile.info`` reads the header from memory and
``prepare`` writes the bytes unchanged to ``OUT/audio/<audio.path>``, so sample counts are
identical to the OpenSLR files they came from.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Iterator

from phonecli.data.normalize import UTTERANCE_SCORES, CorpusError, Problem, RawRecord, error, inspect_audio

REQUIRED_COLUMNS = ("text", *UTTERANCE_SCORES, "words", "speaker", "audio")
OPTIONAL_COLUMNS = ("gender", "age")
_SPLIT = re.compile(r"^(train|test)(?:[-_.]|$)")
AUDIO_DIR = "audio"
BATCH_ROWS = 64  # rows decoded to Python at a time: bounds memory with ~100 kB of audio per row


def parquet_shards(root: str | Path) -> list[Path]:
    root = Path(root)
    return sorted(root.rglob("*.parquet")) if root.is_dir() else []


def shard_split(path: Path) -> str:
    for name in (path.name, path.parent.name):
        m = _SPLIT.match(name)
        if m:
            return m.group(1)
    raise CorpusError(f"{path}: cannot tell the split; name shards train-*.parquet / test-*.parquet "
                      "(or put them in train/ and test/ directories)")


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError as e:
        raise CorpusError("reading parquet shards needs pyarrow: pip install pyarrow") from e
    return pq


class ParquetCorpus:
    """HF parquet shards under ``root`` (searched recursively). Layout problems raise
    :class:`CorpusError` at construction; ``problems`` holds non-fatal corpus-level findings."""

    kind = "parquet"

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.shards = parquet_shards(self.root)
        if not self.shards:
            raise CorpusError(f"{root}: no *.parquet shards found")
        order = {"train": 0, "test": 1}
        self.shards.sort(key=lambda p: (order[shard_split(p)], str(p)))
        self.problems: list[Problem] = []
        pq = _pyarrow_parquet()
        self._rows = 0
        for shard in self.shards:
            try:
                meta = pq.ParquetFile(shard)
            except Exception as e:  # pyarrow.ArrowInvalid and friends
                raise CorpusError(f"{shard}: unreadable parquet shard ({e}); download it again") from e
            names = set(meta.schema_arrow.names)
            missing = [c for c in REQUIRED_COLUMNS if c not in names]
            if missing:
                raise CorpusError(f"{shard}: missing column(s) {', '.join(missing)}; "
                                  "expected the mispeech/speechocean762 schema")
            self._rows += meta.metadata.num_rows

    def __len__(self) -> int:
        return self._rows

    def records(self) -> Iterator[RawRecord]:
        """One :class:`RawRecord` per row (train shards, then test); ``audio`` is ``audio/<file>``
        relative to the output directory and ``payload`` holds the bytes to write there."""
        pq = _pyarrow_parquet()
        seen: dict[str, str] = {}
        for shard in self.shards:
            split = shard_split(shard)
            pf = pq.ParquetFile(shard)
            columns = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in pf.schema_arrow.names]
            row = 0
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                for r in batch.to_pylist():
                    origin = f"{shard.name} row {row}"
                    row += 1
                    yield self._record(r, split, shard, origin, seen)

    def _record(self, r: dict, split: str, shard: Path, origin: str, seen: dict[str, str]) -> RawRecord:
        audio = r.get("audio") or {}
        path = audio.get("path") if isinstance(audio, dict) else None
        if not path:
            utt_id = f"{shard.name}#{origin.rsplit(' ', 1)[1]}"
            return RawRecord(utt_id=utt_id, split=split, speaker=str(r.get("speaker") or ""), entry=None,
                             audio="", audio_facts=None, origin=origin,
                             problems=[error(utt_id, f"{shard}: {origin} has no audio.path, so no utterance id")])
        name = Path(path).name
        utt_id = Path(name).stem
        problems: list[Problem] = []
        if utt_id in seen:
            problems.append(error(utt_id, f"duplicate id at {shard.name} {origin} (first at {seen[utt_id]})"))
        seen.setdefault(utt_id, origin)
        payload = audio.get("bytes")
        facts = None
        if not payload:
            problems.append(error(utt_id, f"{shard}: {origin} has no audio bytes; re-export the shard with audio"))
        else:
            facts, aprob = inspect_audio(utt_id, io.BytesIO(payload), f"{shard.name}:{name}")
            problems += aprob
        if not r.get("speaker"):
            problems.append(error(utt_id, f"{shard}: {origin} has an empty 'speaker'"))
        entry = {k: r.get(k) for k in ("text", *UTTERANCE_SCORES, "words")}
        age = r.get("age")
        return RawRecord(
            utt_id=utt_id, split=split, speaker=str(r.get("speaker") or ""), entry=entry,
            audio=f"{AUDIO_DIR}/{name}", audio_facts=facts, problems=problems,
            gender=str(r.get("gender") or ""), age=int(age) if isinstance(age, int) else None,
            origin=origin, payload=payload,
        )
