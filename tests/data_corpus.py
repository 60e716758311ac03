"""Builders for the data-layer tests: a small OpenSLR-layout corpus written by hand, and its
conversion to HF parquet shards with the mispeech/speechocean762 schema (pyarrow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# Three words re-used by every utterance; phones carry stress digits like the release.
WORDS = {
    "WE": ["W", "IY0"],
    "CALL": ["K", "AO1", "L"],
    "BEAR": ["B", "EH1", "R"],
    "MARK": ["M", "AA0", "R", "K"],
}


def entry_for(i: int) -> dict:
    """A scores.json entry; utterance ``i`` gets a deterministic mix of scores and errors."""
    texts = [["WE", "CALL", "BEAR"], ["MARK", "CALL"], ["WE", "BEAR"]]
    words = []
    for wi, w in enumerate(texts[i % 3]):
        phones = list(WORDS[w])
        acc = [2.0] * len(phones)
        mis = []
        if (i + wi) % 4 == 0:            # a substitution by a stressed phone
            acc[0] = 0.4
            mis.append({"canonical-phone": phones[0], "index": 0, "pronounced-phone": "AH0"})
        if (i + wi) % 5 == 1:            # a deletion of the last phone
            acc[-1] = 0.0
            mis.append({"canonical-phone": phones[-1], "index": len(phones) - 1, "pronounced-phone": "<DEL>"})
        if (i + wi) % 7 == 2:            # a distortion "close to X"
            acc[1] = 1.0
            mis.append({"canonical-phone": phones[1].rstrip("012"), "index": 1, "pronounced-phone": "IY*"})
        words.append({"text": w, "accuracy": 10 - 2 * len(mis), "stress": 10, "total": 10 - 2 * len(mis),
                      "phones": phones, "phones-accuracy": acc, "mispronunciations": mis})
    accuracy = 3 + (i * 3) % 8  # 3..10: HQ (>=8) and positive (<=6) utterances both occur
    return {"text": " ".join(texts[i % 3]), "accuracy": accuracy, "completeness": 10.0, "fluency": 8,
            "prosodic": 7, "total": accuracy, "words": words}


def write_wav(path: Path, seconds: float, sr: int = 16000, channels: int = 1, seed: int = 0) -> None:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    x = 0.2 * np.sin(2 * np.pi * (150 + 10 * seed) * t) + 0.01 * rng.standard_normal(n)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), sr, format="WAV", subtype="PCM_16")


def make_openslr(root: Path, n_train_speakers: int = 10, n_test_speakers: int = 3, per_speaker: int = 2,
                 absolute: bool = False, phones_as_string: bool = False, base_seconds: float = 0.25) -> dict:
    """Write ROOT in the OpenSLR layout. Returns ``{utt_id: {"split", "speaker", "samples", "entry"}}``.

    Speakers alternate m/f and child (age 8) / adult (age 30). One extra WAVE file is not
    listed in wav.scp (like the release's 245 extra files).
    """
    root.mkdir(parents=True, exist_ok=True)
    scores, truth = {}, {}
    k = 0
    for split, n_spk, first in (("train", n_train_speakers, 1), ("test", n_test_speakers, 500)):
        d = root / split
        d.mkdir(exist_ok=True)
        scp, u2s, s2g, s2a, text = [], [], [], [], []
        for s in range(n_spk):
            spk = f"{first + s:04d}"
            s2g.append(f"{spk}\t{'m' if s % 2 == 0 else 'f'}")
            s2a.append(f"{spk}\t{8 if (s // 2) % 2 == 0 else 30}")
            for j in range(per_speaker):
                utt = f"{spk}{j:05d}"
                rel = f"WAVE/SPEAKER{spk}/{utt}.WAV"
                seconds = base_seconds + 0.05 * (k % 4)
                write_wav(root / rel, seconds, seed=k)
                e = entry_for(k)
                if phones_as_string:
                    for w in e["words"]:
                        w["phones"] = " ".join(w["phones"])
                scores[utt] = e
                truth[utt] = {"split": split, "speaker": spk, "samples": int(round(seconds * 16000)), "entry": e}
                scp.append(f"{utt}\t{(root / rel) if absolute else rel}")
                u2s.append(f"{utt} {spk}")
                text.append(f"{utt} {e['text']}")
                k += 1
        for name, lines in (("wav.scp", scp), ("utt2spk", u2s), ("spk2gender", s2g), ("spk2age", s2a), ("text", text)):
            (d / name).write_text("\n".join(lines) + "\n")
    write_wav(root / "WAVE" / "SPEAKER0001" / "999999999.WAV", 0.3)  # present on disk, listed nowhere
    (root / "resource").mkdir(exist_ok=True)
    (root / "resource" / "scores.json").write_text(json.dumps(scores, indent=2))
    return truth


def mispeech_schema():
    import pyarrow as pa

    mis = pa.struct([("canonical-phone", pa.string()), ("index", pa.int64()), ("pronounced-phone", pa.string())])
    word = pa.struct([("accuracy", pa.int64()), ("phones", pa.list_(pa.string())),
                      ("phones-accuracy", pa.list_(pa.float64())), ("stress", pa.int64()), ("text", pa.string()),
                      ("total", pa.int64()), ("mispronunciations", pa.list_(mis))])
    return pa.schema([("accuracy", pa.int64()), ("completeness", pa.float64()), ("fluency", pa.int64()),
                      ("prosodic", pa.int64()), ("text", pa.string()), ("total", pa.int64()),
                      ("words", pa.list_(word)), ("speaker", pa.string()), ("gender", pa.string()),
                      ("age", pa.int64()), ("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))])


def to_parquet(root: Path, out: Path, rows_per_shard: int | None = None) -> list[Path]:
    """Convert an OpenSLR-layout corpus to ``out/data/{train,test}-0000i-of-0000n.parquet``.

    No utterance-id column (like the Hub dataset): the id survives only as ``audio.path``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    scores = json.loads((root / "resource" / "scores.json").read_text())
    shards = []
    (out / "data").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        d = root / split
        table = lambda name: dict(l.split(maxsplit=1) for l in (d / name).read_text().splitlines() if l.strip())  # noqa: E731
        wav, u2s, s2g, s2a = table("wav.scp"), table("utt2spk"), table("spk2gender"), table("spk2age")
        rows = []
        for utt, rel in wav.items():
            e = scores[utt]
            p = Path(rel.strip())
            p = p if p.is_absolute() else root / p
            spk = u2s[utt].strip()
            words = [dict(w, phones=w["phones"].split() if isinstance(w["phones"], str) else w["phones"],
                          accuracy=int(w["accuracy"]), stress=int(w["stress"]), total=int(w["total"]))
                     for w in e["words"]]
            rows.append({"accuracy": int(e["accuracy"]), "completeness": float(e["completeness"]),
                         "fluency": int(e["fluency"]), "prosodic": int(e["prosodic"]), "text": e["text"],
                         "total": int(e["total"]), "words": words, "speaker": spk,
                         "gender": s2g.get(spk, "").strip(), "age": int(s2a[spk]) if spk in s2a else None,
                         "audio": {"bytes": p.read_bytes(), "path": p.name.lower()}})
        n = rows_per_shard or len(rows)
        chunks = [rows[i:i + n] for i in range(0, len(rows), n)]
        for i, chunk in enumerate(chunks):
            path = out / "data" / f"{split}-{i:05d}-of-{len(chunks):05d}.parquet"
            pq.write_table(pa.Table.from_pylist(chunk, schema=mispeech_schema()), path)
            shards.append(path)
    return shards
