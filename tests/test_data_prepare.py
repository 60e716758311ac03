"""`data prepare`: normalization, both readers giving identical manifests, --on-error, CLI."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from data_corpus import make_openslr, to_parquet
from phonecli.cli import main
from phonecli.data import load_manifest, prepare_corpus
from phonecli.data.manifest import Manifest
from phonecli.data.normalize import CorpusError, UtteranceError
from phonecli.data.phones import PHONES
from phonecli.errors import ConfigError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("so762")
    return root, make_openslr(root)


def _rows(m: Manifest) -> list[dict]:
    """Manifest rows without the audio location (the only field allowed to differ between readers)."""
    out = []
    for u in m:
        d = asdict(u)
        d.pop("audio")
        out.append(d)
    return out


def test_openslr_values_match_the_files(corpus, tmp_path):
    root, truth = corpus
    m = prepare_corpus(root, tmp_path / "m", dev_fraction=0.2, seed=0)
    listed = set(truth)
    assert {u.utt_id for u in m} == listed            # wav.scp is iterated, the unlisted WAVE file is not
    assert "999999999" not in m
    for u in m:
        t = truth[u.utt_id]
        e = t["entry"]
        assert u.speaker == t["speaker"]
        assert (u.split == "test") == (t["split"] == "test")
        assert u.num_samples == t["samples"] and u.sample_rate == 16000
        assert u.duration == pytest.approx(t["samples"] / 16000)
        assert Path(u.audio).is_absolute() and Path(u.audio).exists()
        assert u.text == e["text"]
        assert (u.accuracy, u.completeness, u.fluency, u.prosodic, u.total) == tuple(
            float(e[k]) for k in ("accuracy", "completeness", "fluency", "prosodic", "total"))
        assert u.gender in ("m", "f") and u.age in (8, 30)
        assert [w.text for w in u.words] == e["text"].split()
        for w, ew in zip(u.words, e["words"]):
            assert w.phones == [p.rstrip("012") for p in ew["phones"]]     # stress stripped
            assert w.phone_accuracy == ew["phones-accuracy"]
            assert all(p in PHONES for p in w.phones)
            got = [(mm.index, mm.canonical, mm.pronounced) for mm in w.mispronunciations]
            want = [(x["index"], ew["phones"][x["index"]].rstrip("012"), x["pronounced-phone"].rstrip("012"))
                    for x in sorted(ew["mispronunciations"], key=lambda x: x["index"])]
            assert got == want                                              # sorted by phone index
        # realized phones by hand: substitution replaces, <DEL> removes, X* is X
        realized = []
        for ew in e["words"]:
            by = {x["index"]: x["pronounced-phone"] for x in ew["mispronunciations"]}
            for i, p in enumerate(ew["phones"]):
                q = by.get(i, p)
                if q != "<DEL>":
                    realized.append(q.rstrip("*").rstrip("012"))
        assert u.realized_phones == realized
    assert any(u.realized_phones != u.canonical_phones for u in m)
    assert m.source == {"kind": "openslr", "path": str(root.resolve()), "synthetic": False}
    # the audio content hash is the SHA-256 of each file's bytes (hashlib directly)
    import hashlib
    assert all(u.audio_sha256 == hashlib.sha256(Path(u.audio).read_bytes()).hexdigest() for u in m)
    again = load_manifest(tmp_path / "m")
    assert again.corpus_id == m.corpus_id and _rows(again) == _rows(m)


def test_both_readers_give_identical_manifests(corpus, tmp_path):
    root, _ = corpus
    shards = to_parquet(root, tmp_path / "hf", rows_per_shard=7)   # several shards per split
    assert len(shards) > 2
    a = prepare_corpus(root, tmp_path / "a")
    b = prepare_corpus(tmp_path / "hf", tmp_path / "b")
    assert b.source["kind"] == "parquet"
    assert a.corpus_id == b.corpus_id
    assert _rows(a) == _rows(b)
    assert a.dev == b.dev and a.phone_mappings == b.phone_mappings == [] and a.skipped == b.skipped == []
    # parquet audio is written unchanged into OUT/audio/, relative to the manifest
    u = b.utterances[0]
    assert u.audio == f"audio/{u.utt_id.lower()}.wav"
    x, _ = sf.read(b.audio_path(u))
    y, _ = sf.read(a.audio_path(a[u.utt_id]))
    np.testing.assert_array_equal(x, y)
    # the manifest.json files differ only in audio and source
    da, db = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("a", "b"))
    for d in (da, db):
        d.pop("source")
        for r in d["utterances"]:
            r.pop("audio")
    assert da == db


def test_bundled_sample_through_both_readers(tmp_path):
    from phonecli.data.prepare import sample_corpus_dir

    a = prepare_corpus("sample", tmp_path / "a")
    assert a.source["kind"] == "sample" and len(a) >= 200
    to_parquet(sample_corpus_dir(), tmp_path / "hf")
    b = prepare_corpus(tmp_path / "hf", tmp_path / "b")
    assert a.corpus_id == b.corpus_id and _rows(a) == _rows(b)


def test_phones_as_space_separated_string(corpus, tmp_path):
    root, _ = corpus
    old = tmp_path / "old"
    make_openslr(old, phones_as_string=True)
    assert isinstance(json.loads((old / "resource/scores.json").read_text())["000100000"]["words"][0]["phones"], str)
    a = prepare_corpus(root, tmp_path / "a")
    b = prepare_corpus(old, tmp_path / "b")
    assert a.corpus_id == b.corpus_id and _rows(a) == _rows(b)


def test_absolute_wav_scp_paths(tmp_path):
    root = tmp_path / "abs"
    make_openslr(root, absolute=True, n_train_speakers=2, n_test_speakers=1)
    assert (root / "train/wav.scp").read_text().split()[1].startswith("/")
    m = prepare_corpus(root, tmp_path / "m", dev_fraction=0)
    assert len(m) == 6 and all(Path(u.audio).exists() for u in m)


def _edit_scores(root: Path, fn) -> None:
    p = root / "resource/scores.json"
    d = json.loads(p.read_text())
    fn(d)
    p.write_text(json.dumps(d))


def test_non_cmu_phones_are_mapped_and_recorded(tmp_path):
    root = tmp_path / "c"
    make_openslr(root, n_train_speakers=2, n_test_speakers=1)

    def edit(d):
        w = d["000100000"]["words"][2]                 # BEAR: B EH1 R -> B IR (older copies)
        w.update(phones=["B", "IR"], **{"phones-accuracy": [2.0, 0.4]},
                 mispronunciations=[{"canonical-phone": "IR", "index": 1, "pronounced-phone": "IY"}])
    _edit_scores(root, edit)
    m = prepare_corpus(root, tmp_path / "m", dev_fraction=0)
    w = m["000100000"].words[2]
    assert w.phones == ["B", "IH", "R"] and w.phone_accuracy == [2.0, 0.4, 0.4]
    # IR pronounced IY: first part substituted, the remaining part deleted
    assert [(x.index, x.canonical, x.pronounced) for x in w.mispronunciations] == [(1, "IH", "IY"), (2, "R", "<DEL>")]
    assert m["000100000"].realized_phones[-2:] == ["B", "IY"]
    assert m.phone_mappings == [{"utt_id": "000100000", "word_index": 2, "phone_index": 1, "field": "phones",
                                 "from": "IR", "to": ["IH", "R"]}]
    saved = json.loads((tmp_path / "m/manifest.json").read_text())
    assert saved["phone_mappings"] == m.phone_mappings


def test_unknown_phone_fails_naming_the_utterance_or_is_skipped(tmp_path):
    root = tmp_path / "u"
    make_openslr(root, n_train_speakers=2, n_test_speakers=1)
    _edit_scores(root, lambda d: d["000200001"]["words"][0]["phones"].__setitem__(1, "QX"))
    with pytest.raises(UtteranceError, match=r"utterance 000200001: word 0 \('WE'\): phone 1 'QX' is outside"):
        prepare_corpus(root, tmp_path / "m")
    assert not (tmp_path / "m/manifest.json").exists()
    m = prepare_corpus(root, tmp_path / "m", on_error="skip")
    assert "000200001" not in m and len(m) == 5
    assert m.skipped == [{"utt_id": "000200001", "reason": m.skipped[0]["reason"]}]
    assert "'QX'" in m.skipped[0]["reason"]
    assert load_manifest(tmp_path / "m").skipped == m.skipped


def test_on_error_skip_lists_every_bad_utterance_via_cli(tmp_path):
    root = tmp_path / "s"
    make_openslr(root, n_train_speakers=4, n_test_speakers=2)
    (root / "WAVE/SPEAKER0001/000100001.WAV").unlink()                      # missing audio
    (root / "WAVE/SPEAKER0002/000200000.WAV").write_bytes(b"not a wav")     # unreadable audio
    _edit_scores(root, lambda d: d["000300000"]["words"][0]["phones-accuracy"].pop())   # length mismatch
    runner = CliRunner()
    r = runner.invoke(main, ["data", "prepare", str(root), "--out", str(tmp_path / "m")])
    assert r.exit_code != 0
    assert "utterance 000100001: audio file not found" in r.output and "--on-error skip" in r.output
    r = runner.invoke(main, ["data", "prepare", str(root), "--out", str(tmp_path / "m"), "--on-error", "skip"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().splitlines()[-1] == str((tmp_path / "m/manifest.json").resolve())
    m = load_manifest(tmp_path / "m")
    reasons = {s["utt_id"]: s["reason"] for s in m.skipped}
    assert set(reasons) == {"000100001", "000200000", "000300000"}
    assert "unreadable audio" in reasons["000200000"]
    assert "word 0 ('MARK'): 4 phones but 3 phones-accuracy values" in reasons["000300000"]
    assert len(m) == 12 - 3


def test_duplicate_id_is_an_error_or_skipped(tmp_path):
    root = tmp_path / "d"
    make_openslr(root, n_train_speakers=2, n_test_speakers=1)
    with open(root / "test/wav.scp", "a") as f:
        f.write("000100000\tWAVE/SPEAKER0001/000100000.WAV\n")
    with pytest.raises(UtteranceError, match=r"000100000: duplicate id in .*test/wav.scp:3 \(first listed at train/wav.scp line 1\)"):
        prepare_corpus(root, tmp_path / "m")
    m = prepare_corpus(root, tmp_path / "m", on_error="skip", dev_fraction=0)
    assert m["000100000"].split == "train" and [s["utt_id"] for s in m.skipped] == ["000100000"]


def test_bad_sources_give_one_clear_line(tmp_path):
    with pytest.raises(CorpusError, match="neither an OpenSLR corpus"):
        prepare_corpus(tmp_path, tmp_path / "m")
    with pytest.raises(CorpusError, match="no such directory"):
        prepare_corpus(tmp_path / "nope", tmp_path / "m")
    with pytest.raises(ConfigError, match="--dev-fraction 1.5: must be in"):
        prepare_corpus("sample", tmp_path / "m", dev_fraction=1.5)
    with pytest.raises(ConfigError, match="--on-error 'ignore'"):
        prepare_corpus("sample", tmp_path / "m", on_error="ignore")


def test_cli_prepare_sample_and_info_json(tmp_path):
    runner = CliRunner()
    out = tmp_path / "X"
    r = runner.invoke(main, ["data", "prepare", "sample", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().splitlines()[-1] == str((out / "manifest.json").resolve())
    r = runner.invoke(main, ["data", "info", str(out), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    m = load_manifest(out)
    assert set(info["splits"]) == {"train", "dev", "test"}
    for s, st in info["splits"].items():
        assert st["utterances"] == len(m.split(s)) > 0
    assert sum(st["utterances"] for st in info["splits"].values()) == len(m)
    r = runner.invoke(main, ["data", "info", str(out)])
    assert r.exit_code == 0 and "HQ(>=8)" in r.output and m.corpus_id in r.output
    r = runner.invoke(main, ["data", "info", str(tmp_path)])
    assert r.exit_code != 0 and "no manifest here" in r.output


def test_parquet_skip_writes_no_audio_for_skipped_rows_and_reruns_are_stable(tmp_path):
    root = tmp_path / "c"
    make_openslr(root, n_train_speakers=2, n_test_speakers=1)
    _edit_scores(root, lambda d: d["050000001"]["words"][0]["phones"].__setitem__(0, "ZZ"))
    to_parquet(root, tmp_path / "hf")
    with pytest.raises(UtteranceError, match=r"utterance 050000001: .*'ZZ'"):
        prepare_corpus(tmp_path / "hf", tmp_path / "m")
    m = prepare_corpus(tmp_path / "hf", tmp_path / "m", on_error="skip")
    assert [s["utt_id"] for s in m.skipped] == ["050000001"]
    assert sorted(p.name for p in (tmp_path / "m/audio").iterdir()) == sorted(f"{u.utt_id}.wav" for u in m)
    again = prepare_corpus(tmp_path / "hf", tmp_path / "m", on_error="skip")
    assert again.corpus_id == m.corpus_id and _rows(again) == _rows(m)


def test_resampleable_audio_is_prepared_with_a_warning(tmp_path):
    from data_corpus import write_wav

    root = tmp_path / "c"
    make_openslr(root, n_train_speakers=2, n_test_speakers=1)
    write_wav(root / "WAVE/SPEAKER0001/000100001.WAV", 0.5, sr=8000)
    write_wav(root / "WAVE/SPEAKER0002/000200000.WAV", 0.5, channels=2)
    r = CliRunner().invoke(main, ["data", "prepare", str(root), "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert "warning: utterance 000100001: " in r.stderr and "is 8000 Hz, not 16000 Hz" in r.stderr
    assert "warning: utterance 000200000: " in r.stderr and "has 2 channels" in r.stderr
    m = load_manifest(tmp_path / "m")
    u = m["000100001"]
    assert (u.sample_rate, u.num_samples, u.duration) == (8000, 4000, 0.5)
    assert m["000200000"].num_samples == 8000 and not m.skipped
    r = CliRunner().invoke(main, ["data", "prepare", str(root), "--out", str(tmp_path / "m"), "--quiet"])
    assert r.exit_code == 0 and "warning" not in r.stderr
