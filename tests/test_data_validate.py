"""`data validate`: one test per bad input, asserting the exact line users see and the exit code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from data_corpus import make_openslr, to_parquet, write_wav
from phonecli.cli import main
from phonecli.data import validate_corpus


def _scores(root: Path, fn) -> None:
    p = root / "resource/scores.json"
    d = json.loads(p.read_text())
    fn(d)
    p.write_text(json.dumps(d))


def _append(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def _wav(root: Path, utt: str) -> Path:
    return root / f"WAVE/SPEAKER{utt[:4]}/{utt}.WAV"


# (name, mutation, regex of the one expected problem line, exit code). Utterance 000100001 is
# "MARK CALL"; 000100000 is "WE CALL BEAR".
CASES = [
    ("missing audio", lambda r: _wav(r, "000100001").unlink(),
     r"^error: utterance 000100001: audio file not found: .*/WAVE/SPEAKER0001/000100001\.WAV; check wav\.scp", 1),
    ("unreadable audio", lambda r: _wav(r, "000100001").write_bytes(b"RIFF....garbage"),
     r"^error: utterance 000100001: unreadable audio .*000100001\.WAV \(.*\); re-encode it", 1),
    ("empty audio", lambda r: write_wav(_wav(r, "000100001"), 0.0),
     r"^error: utterance 000100001: empty audio .*\(0 samples\)", 1),
    ("too short audio", lambda r: write_wav(_wav(r, "000100001"), 0.05),
     r"^error: utterance 000100001: audio too short .*\(0\.050 s < 0\.1 s\)", 1),
    ("8 kHz audio", lambda r: write_wav(_wav(r, "000100001"), 0.3, sr=8000),
     r"^warning: utterance 000100001: .*000100001\.WAV is 8000 Hz, not 16000 Hz; extraction resamples it", 0),
    ("stereo audio", lambda r: write_wav(_wav(r, "000100001"), 0.3, channels=2),
     r"^warning: utterance 000100001: .*000100001\.WAV has 2 channels; extraction downmixes to mono", 0),
    ("id in wav.scp, not in scores.json", lambda r: _scores(r, lambda d: d.pop("000100001")),
     r"^error: utterance 000100001: listed in .*train/wav\.scp:2 but missing from .*resource/scores\.json", 1),
    ("id in scores.json, in no wav.scp", lambda r: _scores(r, lambda d: d.__setitem__("000999999", d["000100000"])),
     r"^error: .*resource/scores\.json: utterance 000999999 has scores but is in no wav\.scp", 1),
    ("duplicate id", lambda r: _append(r / "train/wav.scp", "000100001 WAVE/SPEAKER0001/000100001.WAV"),
     r"^error: utterance 000100001: duplicate id in .*train/wav\.scp:5 \(first listed at train/wav\.scp line 2\)", 1),
    ("speaker in both released splits", lambda r: (r / "test/utt2spk").write_text(
        (r / "test/utt2spk").read_text().replace("050000001 0500", "050000001 0001")),
     r"^warning: .*test/utt2spk: speaker 0001 is in both train and test; the released splits should be", 0),
    ("missing from utt2spk", lambda r: (r / "train/utt2spk").write_text(
        "".join(l + "\n" for l in (r / "train/utt2spk").read_text().splitlines() if not l.startswith("000100001"))),
     r"^error: utterance 000100001: missing from .*train/utt2spk", 1),
    ("malformed wav.scp line", lambda r: _append(r / "train/wav.scp", "000777777"),
     r"^error: .*train/wav\.scp:5: malformed line '000777777' \(expected '<key> <value>'\)", 1),
    ("phone outside the inventory", lambda r: _scores(r, lambda d: d["000100001"]["words"][1]["phones"].__setitem__(2, "LL")),
     r"^error: utterance 000100001: word 1 \('CALL'\): phone 2 'LL' is outside the 39-phone inventory", 1),
    ("phones / phones-accuracy length mismatch",
     lambda r: _scores(r, lambda d: d["000100001"]["words"][0]["phones-accuracy"].append(2.0)),
     r"^error: utterance 000100001: word 0 \('MARK'\): 4 phones but 5 phones-accuracy values", 1),
    ("text / words length mismatch", lambda r: (_scores(r, lambda d: d["000100001"].__setitem__("text", "MARK CALL ME")),
                                                (r / "train/text").unlink()),
     r"^error: utterance 000100001: text has 3 words but 'words' has 2 entries", 1),
    ("mispronunciation index out of range", lambda r: _scores(r, lambda d: d["000100001"]["words"][1][
        "mispronunciations"].append({"canonical-phone": "L", "index": 3, "pronounced-phone": "N"})),
     r"^error: utterance 000100001: word 1 \('CALL'\): mispronunciation index 3 outside its 3 phones", 1),
    ("unknown pronounced phone", lambda r: _scores(r, lambda d: d["000100001"]["words"][1][
        "mispronunciations"].append({"canonical-phone": "L", "index": 2, "pronounced-phone": "QQ"})),
     r"^error: utterance 000100001: word 1 \('CALL'\): pronounced phone 'QQ' is outside", 1),
    ("missing utterance score", lambda r: _scores(r, lambda d: d["000100001"].pop("fluency")),
     r"^error: utterance 000100001: missing or non-numeric utterance score 'fluency'", 1),
    ("Kaldi text disagrees with scores.json", lambda r: (r / "train/text").write_text(
        (r / "train/text").read_text().replace("000100001 MARK CALL", "000100001 MARK BALL")),
     r"^warning: utterance 000100001: train/text says 'MARK BALL' but scores\.json says 'MARK CALL'", 0),
    ("malformed JSON", lambda r: (r / "resource/scores.json").write_text('{"000100000": {"text": "WE",}'),
     r"^error: /.*/resource/scores\.json: malformed JSON at line 1 column 29 \(Expecting property name", 1),
]


@pytest.mark.parametrize("name,mutate,pattern,code", CASES, ids=[c[0] for c in CASES])
def test_each_bad_input_gets_one_clear_line(tmp_path, name, mutate, pattern, code):
    root = tmp_path / "c"
    make_openslr(root, n_train_speakers=2, n_test_speakers=1)
    mutate(root)
    r = CliRunner().invoke(main, ["data", "validate", str(root)])
    lines = r.stdout.strip().splitlines()
    problems, summary = lines[:-1], lines[-1]
    assert len(problems) == 1, r.stdout                    # exactly the one problem, nothing else
    assert re.search(pattern, problems[0]), problems[0]
    assert r.exit_code == code, r.stdout
    assert summary == f"{root}: {code} error(s), {1 - code} warning(s)"


def test_clean_corpus_and_sample_validate(tmp_path):
    root = tmp_path / "c"
    make_openslr(root, n_train_speakers=2, n_test_speakers=1)
    assert validate_corpus(root) == []
    r = CliRunner().invoke(main, ["data", "validate", "sample"])
    assert r.exit_code == 0 and r.stdout.strip() == "sample: 0 error(s), 0 warning(s)"


def test_many_problems_are_all_reported_and_prepare_stops_on_the_first(tmp_path):
    root = tmp_path / "c"
    make_openslr(root, n_train_speakers=2, n_test_speakers=1)
    _wav(root, "000100000").unlink()
    _scores(root, lambda d: d["000200001"]["words"][0]["phones"].__setitem__(0, "XX"))
    problems = validate_corpus(root)
    assert [(p.severity, p.utt_id) for p in problems] == [("error", "000100000"), ("error", "000200001")]
    r = CliRunner().invoke(main, ["data", "prepare", str(root), "--out", str(tmp_path / "m")])
    assert r.exit_code == 1 and "utterance 000100000: audio file not found" in r.output


def test_parquet_sources_are_validated(tmp_path):
    root = tmp_path / "c"
    make_openslr(root, n_train_speakers=2, n_test_speakers=1)
    _wav(root, "000100001").write_bytes(b"junk")
    to_parquet(root, tmp_path / "hf")
    problems = validate_corpus(tmp_path / "hf")
    assert len(problems) == 1
    assert re.match(r"error: utterance 000100001: unreadable audio train-00000-of-00001\.parquet:000100001\.wav", str(problems[0]))
    # a shard without the mispeech columns is refused as a whole
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"text": ["A"], "audio": [{"bytes": b"", "path": "x.wav"}]}), bad / "train-0.parquet")
    (p,) = validate_corpus(bad)
    assert "missing column(s) accuracy, completeness, fluency, prosodic, total, words, speaker" in str(p)
    unsplit = tmp_path / "unsplit"
    unsplit.mkdir()
    pq.write_table(pa.table({"text": ["A"]}), unsplit / "validation-0.parquet")
    (p,) = validate_corpus(unsplit)
    assert "cannot tell the split" in str(p)


def test_not_a_corpus(tmp_path):
    r = CliRunner().invoke(main, ["data", "validate", str(tmp_path)])
    assert r.exit_code == 1 and "neither an OpenSLR corpus" in r.stdout
