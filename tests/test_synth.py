"""The synthetic corpus generator (`phonecli data synth`) and the bundled sample corpus."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from scipy.stats import pearsonr

from phonecli.data.phones import PHONES, strip_stress
from phonecli.data.synth import (
    INSTALL_HINT,
    SynthError,
    _CONSONANTS_ESPEAK,
    _VOWELS_ESPEAK,
    generate,
    plan_corpus,
    sample_corpus_path,
    synthesize,
)

KALDI_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "spk2age", "spk2gender")
# Generating needs the apt tools; the bundled-corpus checks run everywhere.
needs_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason=f"espeak-ng/sox not installed: {INSTALL_HINT}",
)
STRESSED_VOWEL = re.compile(r"^(AA|AE|AH|AO|AW|AY|EH|ER|EY|IH|IY|OW|OY|UH|UW)[012]$")


def _kv(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.strip().partition(" ") if "\t" not in line else line.strip().partition("\t")
        rows.append((key, value.strip()))
    return rows


def check_corpus_structure(root: Path) -> dict:
    """Assert the OpenSLR-101 layout and the scores.json schema; return parsed pieces."""
    assert "SYNTHETIC" in (root / "README.txt").read_text()
    scores = json.loads((root / "resource" / "scores.json").read_text())
    wav_ids: dict[str, str] = {}
    spk_of: dict[str, str] = {}
    split_speakers: dict[str, set[str]] = {}
    for split in ("train", "test"):
        d = root / split
        for name in KALDI_FILES:
            assert (d / name).is_file(), f"missing {split}/{name}"
        scp = _kv(d / "wav.scp")
        ids = [k for k, _ in scp]
        assert len(ids) == len(set(ids)), f"duplicate ids in {split}/wav.scp"
        assert not set(ids) & set(wav_ids), "an utterance is listed in both splits"
        for utt, rel in scp:
            assert not Path(rel).is_absolute(), "wav.scp paths must be relative to the corpus root"
            assert (root / rel).is_file(), f"{rel} missing"
            wav_ids[utt] = rel
        utt2spk = dict(_kv(d / "utt2spk"))
        assert set(utt2spk) == set(ids)
        spk2utt = {k: v.split() for k, v in _kv(d / "spk2utt")}
        assert {u: s for s, us in spk2utt.items() for u in us} == utt2spk
        assert set(dict(_kv(d / "spk2age"))) == set(spk2utt) == set(dict(_kv(d / "spk2gender")))
        assert set(dict(_kv(d / "spk2gender")).values()) <= {"m", "f"}
        for utt, spk in utt2spk.items():
            assert wav_ids[utt].startswith(f"WAVE/SPEAKER{spk}/{utt}.")
            assert utt.startswith(spk) and len(utt) == 9
        texts = dict(_kv(d / "text"))
        assert set(texts) == set(ids)
        for utt, t in texts.items():
            assert t == scores[utt]["text"] and t == t.upper()
        spk_of.update(utt2spk)
        split_speakers[split] = set(spk2utt)
    assert not split_speakers["train"] & split_speakers["test"], "speakers must be split-disjoint"
    assert set(scores) == set(wav_ids), "wav.scp ids and scores.json keys differ"

    lexicon = {}
    for line in (root / "resource" / "lexicon.txt").read_text().splitlines():
        word, *phones = line.split()
        lexicon.setdefault(word, set()).add(" ".join(phones))
    text_phone = dict(_kv(root / "resource" / "text-phone"))
    for utt, s in scores.items():
        assert set(s) == {"text", "accuracy", "completeness", "fluency", "prosodic", "total", "words"}
        for key in ("accuracy", "fluency", "prosodic", "total"):
            assert 0 <= s[key] <= 10
        assert [w["text"] for w in s["words"]] == s["text"].split()
        for i, w in enumerate(s["words"]):
            assert set(w) == {"text", "accuracy", "stress", "total", "phones", "phones-accuracy", "mispronunciations"}
            assert isinstance(w["phones"], list) and w["phones"]
            for p in w["phones"]:
                assert strip_stress(p) in PHONES
                if strip_stress(p) in _VOWELS_ESPEAK:
                    assert STRESSED_VOWEL.match(p), f"{utt}: vowel {p} lacks a stress digit"
            acc = w["phones-accuracy"]
            assert len(acc) == len(w["phones"])
            for a in acc:
                assert 0.0 <= a <= 2.0 and abs(a * 5 - round(a * 5)) < 1e-9, f"{utt}: {a} not a 0.2 step"
            assert w["stress"] in (5, 10) and 0 <= w["accuracy"] <= 10 and 0 <= w["total"] <= 10
            labelled = {}
            for m in w["mispronunciations"]:
                assert set(m) == {"canonical-phone", "index", "pronounced-phone"}
                j = m["index"]
                assert strip_stress(m["canonical-phone"]) == strip_stress(w["phones"][j])
                pron = m["pronounced-phone"]
                assert pron in ("<DEL>", "<unk>") or strip_stress(pron.rstrip("*")) in PHONES
                labelled[j] = pron
            # the corpus' own rule: an entry exactly for the phones scored below 0.5
            assert set(labelled) == {j for j, a in enumerate(acc) if a < 0.5}, utt
            assert " ".join(w["phones"]) in lexicon[w["text"]]
            tagged = text_phone[f"{utt}.{i}"].split()
            assert [t.rsplit("_", 1)[0] for t in tagged] == w["phones"]
            assert tagged[0].endswith("_S" if len(tagged) == 1 else "_B")
    return {"scores": scores, "wav": wav_ids, "speaker": spk_of, "split_speakers": split_speakers}


def _check_audio(root: Path, rels) -> None:
    for rel in rels:
        x, sr = sf.read(str(root / rel), dtype="float32", always_2d=True)
        assert sr == 16000 and x.shape[1] == 1, rel
        assert 0.5 < x.shape[0] / sr < 4.0, rel
        assert np.sqrt(np.mean(x ** 2)) > 0.01, f"{rel} is (nearly) silent"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "corpus"
    summary = generate(root, 12, seed=3, utts_per_speaker=3)
    return root, summary


@needs_tools
def test_small_corpus_layout_and_audio(small):
    root, summary = small
    parsed = check_corpus_structure(root)
    assert len(parsed["scores"]) == summary["utterances"] == 12
    assert summary["splits"]["train"]["speakers"] >= 2 and summary["splits"]["test"]["speakers"] >= 1
    _check_audio(root, parsed["wav"].values())
    assert all(rel.endswith(".flac") for rel in parsed["wav"].values())


@needs_tools
def test_same_seed_identical_files_other_seed_differs(small, tmp_path):
    root, _ = small
    again = tmp_path / "again"
    generate(again, 12, seed=3, utts_per_speaker=3)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (root / rel).read_bytes() == (again / rel).read_bytes(), f"{rel} differs between runs"
    _, plans_other = plan_corpus(12, seed=4, utts_per_speaker=3)
    _, plans_same = plan_corpus(12, seed=3, utts_per_speaker=3)
    assert [p.scores for p in plans_other] != [p.scores for p in plans_same]


@needs_tools
def test_audio_is_synthesized_from_the_realized_phones(small, tmp_path):
    root, _ = small
    info = json.loads((root / "synth-info.json").read_text())
    speakers = {s["speaker"]: s for s in info["speakers"]}
    scores = json.loads((root / "resource" / "scores.json").read_text())
    # an utterance with an injected substitution (not a deletion/unk) exists for seed 3
    sub_utts = [u for u, s in scores.items()
                if any(m["pronounced-phone"] not in ("<DEL>", "<unk>") for w in s["words"] for m in w["mispronunciations"])]
    assert sub_utts
    utt = sub_utts[0]
    entry, spk = info["utterances"][utt], speakers[info["utterances"][utt]["speaker"]]
    assert entry["espeak"] != entry["espeak_canonical"]
    rel = f"WAVE/SPEAKER{spk['speaker']}/{utt}.flac"
    corpus_audio, _ = sf.read(str(root / rel), dtype="int16")
    synthesize(entry["espeak"], spk["voice"], spk["pitch"], spk["speed"], tmp_path / "real.flac")
    synthesize(entry["espeak_canonical"], spk["voice"], spk["pitch"], spk["speed"], tmp_path / "canon.flac")
    realized, _ = sf.read(str(tmp_path / "real.flac"), dtype="int16")
    canonical, _ = sf.read(str(tmp_path / "canon.flac"), dtype="int16")
    np.testing.assert_array_equal(corpus_audio, realized)
    assert canonical.shape != realized.shape or np.abs(canonical.astype(int) - realized).max() > 1000


@needs_tools
def test_th_to_s_substitution_changes_the_spectrum(tmp_path):
    """[[s'INk]] vs [[T'INk]]: /s/ has far more energy above 4 kHz than /th/ (independent check)."""
    energies = {}
    for name, phon in (("s", "[[s'INk]]"), ("th", "[[T'INk]]")):
        synthesize(phon, "en-us+m3", 50, 150, tmp_path / f"{name}.flac")
        x, sr = sf.read(str(tmp_path / f"{name}.flac"), dtype="float32")
        onset = x[: int(0.25 * sr)]  # the fricative is at the start (after 0.12 s padding)
        spec = np.abs(np.fft.rfft(onset)) ** 2
        freqs = np.fft.rfftfreq(len(onset), 1 / sr)
        energies[name] = spec[freqs > 4000].sum() / spec.sum()
    assert energies["s"] > 2 * energies["th"], energies


@needs_tools
def test_labels_realized_phones_and_scores_agree(small):
    root, _ = small
    info = json.loads((root / "synth-info.json").read_text())
    scores = json.loads((root / "resource" / "scores.json").read_text())
    for utt, s in scores.items():
        expected = []
        for w in s["words"]:
            by_index = {m["index"]: m["pronounced-phone"] for m in w["mispronunciations"]}
            for j, p in enumerate(w["phones"]):
                pron = by_index.get(j)
                if pron == "<DEL>":
                    continue
                expected.append("<unk>" if pron == "<unk>" else strip_stress((pron or p).rstrip("*")))
        assert [strip_stress(p) if p != "<unk>" else p for p in info["utterances"][utt]["realized_phones"]] == expected


def test_bundled_sample_corpus():
    root = sample_corpus_path()
    parsed = check_corpus_structure(root)
    scores = parsed["scores"]
    assert len(scores) >= 240
    assert len(parsed["split_speakers"]["train"]) >= 20  # room for a 10 % speaker-disjoint dev split
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size <= 15 * 1024 * 1024
    rels = sorted(parsed["wav"].values())
    _check_audio(root, rels[::6])
    infos = [sf.info(str(root / r)) for r in rels]
    assert {(i.samplerate, i.channels) for i in infos} == {(16000, 1)}
    acc = np.array([s["accuracy"] for s in scores.values()])
    n_err = np.array([sum(len(w["mispronunciations"]) for w in s["words"]) for s in scores.values()])
    r, p = pearsonr(acc, n_err)
    assert r < -0.5 and p < 1e-6, (r, p)
    assert (acc >= 8).sum() >= 40 and (acc <= 6).sum() >= 30  # HQ and "positive" utterances both present
    kinds = [m["pronounced-phone"] for s in scores.values() for w in s["words"] for m in w["mispronunciations"]]
    assert "<DEL>" in kinds and "<unk>" in kinds and any(k.endswith("*") for k in kinds)
    pairs = {(strip_stress(m["canonical-phone"]), m["pronounced-phone"])
             for s in scores.values() for w in s["words"] for m in w["mispronunciations"]}
    assert {("TH", "S"), ("DH", "D"), ("R", "L"), ("IH", "IY"), ("V", "W")} <= pairs


def test_espeak_mapping_covers_the_inventory():
    assert set(_VOWELS_ESPEAK) | set(_CONSONANTS_ESPEAK) == set(PHONES)


def test_missing_tools_one_clear_line(tmp_path, monkeypatch):
    from phonecli.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))  # neither espeak-ng nor sox on PATH
    with pytest.raises(SynthError, match=re.escape(INSTALL_HINT)):
        generate(tmp_path / "c", 6)
    res = CliRunner().invoke(main, ["data", "synth", "--out", str(tmp_path / "c"), "--utterances", "6"])
    assert res.exit_code != 0
    assert INSTALL_HINT in res.output and len(res.output.strip().splitlines()) == 1


@needs_tools
def test_cli_refuses_nonempty_out_and_overwrites(tmp_path):
    from phonecli.cli import main

    runner = CliRunner()
    out = tmp_path / "c"
    out.mkdir()
    (out / "keep.txt").write_text("x")

    def invoke(*args):      # through the root group, which turns errors into one line
        return runner.invoke(main, ["data", "synth", *args])

    res = invoke("--out", str(out), "--utterances", "3")
    assert res.exit_code != 0 and "--overwrite" in res.output
    res = invoke("--out", str(out), "--utterances", "3", "--overwrite", "--format", "wav")
    assert res.exit_code == 0, res.output
    assert "wrote 3 utterances" in res.output
    assert (out / "keep.txt").exists()  # only the generator's own entries are replaced
    assert all(rel.endswith(".wav") for _, rel in _kv(out / "train" / "wav.scp"))


@needs_tools
def test_openslr_reader_realizes_the_phones_the_audio_contains(small, tmp_path):
    """`data prepare` on a generated corpus: the manifest's realized phones are the audio's phones.

    The one documented exception is ``<unk>``: the manifest keeps the canonical phone (there is
    no symbol for an unidentifiable sound) while the audio has a schwa or glottal stop.
    """
    from phonecli.data.prepare import prepare_corpus

    root, _ = small
    info = json.loads((root / "synth-info.json").read_text())
    manifest = prepare_corpus(root, tmp_path / "prepared", progress=False)
    assert {u.utt_id for u in manifest.utterances} == set(info["utterances"])
    assert not manifest.skipped
    for u in manifest.utterances:
        audio_phones = info["utterances"][u.utt_id]["realized_phones"]
        assert len(audio_phones) == len(u.realized_phones), u.utt_id
        for a, m in zip(audio_phones, u.realized_phones):
            assert a == "<unk>" or strip_stress(a) == m, u.utt_id
        assert u.sample_rate == 16000 and abs(u.duration - info["utterances"][u.utt_id]["duration"]) < 1e-3
        assert u.speaker == info["utterances"][u.utt_id]["speaker"]
