"""Readers of L2-ARCTIC, TIMIT, LibriSpeech, Kaldi data dirs and lhotse manifests on generated
miniatures in the real file formats (tests/miniatures.py), their quirks and their bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
from click.testing import CliRunner

from miniatures import make_kaldi, make_l2arctic, make_librispeech, make_timit
from phonecli.cli import main
from phonecli.data.manifest import Manifest
from phonecli.data.phones import PHONES, Vocabulary
from phonecli.data.prepare import prepare_corpus
from phonecli.errors import CorpusError, UtteranceError


@pytest.fixture(scope="module")
def l2(tmp_path_factory):
    root = tmp_path_factory.mktemp("l2arctic")
    return root, make_l2arctic(root)


@pytest.fixture(scope="module")
def timit(tmp_path_factory):
    root = tmp_path_factory.mktemp("timit")
    return root, make_timit(root)


@pytest.fixture(scope="module")
def libri(tmp_path_factory):
    root = tmp_path_factory.mktemp("libri")
    return root, make_librispeech(root)


@pytest.fixture(scope="module")
def kaldi(tmp_path_factory):
    root = tmp_path_factory.mktemp("kaldi")
    return root, make_kaldi(root)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------- L2-ARCTIC
def test_l2arctic_annotation_units_splits_and_manifest(l2, tmp_path):
    root, expected = l2
    res = CliRunner().invoke(main, ["data", "prepare", str(root), "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert "L2-ARCTIC MDD" in res.output
    m = Manifest.load(tmp_path / "m")
    assert m.corpus.name == "l2arctic" and m.corpus.protocols == ("per", "mdd")
    assert not m.corpus.standard and "not comparable" in m.corpus.benchmark      # 9 of 24 speakers
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["version"] == 2
    assert set(u.utt_id for u in m) == set(expected)
    for u in m:
        e = expected[u.utt_id]
        assert u.split == e["split"]
        # every quirk (lower case, stray spaces, stress digits, sil/sp/"" tiers) normalized away
        assert [(a.canonical, a.perceived, a.kind, a.distorted) for a in u.annotation] == e["units"]
        assert u.canonical_phones == e["canonical"]
        assert u.sample_rate == 44100
        assert "err" not in u.realized_phones and set(u.realized_phones) <= set(PHONES)
    assert m.dev["speakers"] == ["MBMPS", "THV"] and "Fu et al. 2021" in m.dev["source"]
    assert {u.speaker for u in m.split("test")} == {"NJS", "TLV", "TNI"}
    kinds = {a.kind for u in m for a in u.annotation}
    assert kinds == {"correct", "substitution", "deletion", "addition"}
    assert any(a.perceived == "err" for u in m for a in u.annotation)
    assert any(a.distorted for u in m for a in u.annotation)


def test_l2arctic_bad_inputs_are_one_line_naming_the_file(l2, tmp_path):
    root = _copy(l2[0], tmp_path / "l2")
    tg = root / "NJS" / "annotation" / "arctic_a0019.TextGrid"
    text = tg.read_text()
    transcript = root / "NJS" / "transcript" / "arctic_a0019.txt"
    prompt = transcript.read_text()
    # 1. words tier disagreeing with the transcript
    transcript.write_text("Something else entirely.")
    with pytest.raises(UtteranceError) as e:
        prepare_corpus(root, tmp_path / "o1")
    msg = str(e.value)
    assert "\n" not in msg and str(tg) in msg and "words tier" in msg and "transcript" in msg
    # skip drops it and records why
    m = prepare_corpus(root, tmp_path / "o2", on_error="skip")
    assert [s["utt_id"] for s in m.skipped] == ["NJS_arctic_a0019"]
    # 2. an unknown phone
    transcript.write_text(prompt)
    tg.write_text(text.replace('text = "SIL"', 'text = "QQ"', 1))
    with pytest.raises(UtteranceError, match=r"canonical phone 'QQ' is not an ARPAbet phone"):
        prepare_corpus(root, tmp_path / "o3")
    # 3. a malformed error label and an unreadable TextGrid
    tg.write_text(text.replace('text = "SIL"', 'text = "M,N"', 1))
    with pytest.raises(UtteranceError, match=r"neither a phone nor 'CPL,PPL,type'"):
        prepare_corpus(root, tmp_path / "o4")
    tg.write_text("garbage")
    with pytest.raises(UtteranceError, match=r"not a readable Praat TextGrid"):
        prepare_corpus(root, tmp_path / "o5")
    # 4. a phone tier running past the audio
    tiers = text.splitlines()
    last = max(i for i, line in enumerate(tiers) if line.strip().startswith("xmax ="))
    tiers[last] = "            xmax = 99.0 "
    tg.write_text("\n".join(tiers))
    with pytest.raises(UtteranceError, match=r"past the audio end"):
        prepare_corpus(root, tmp_path / "o6")


def test_l2arctic_known_broken_files_are_left_out_and_the_typos_mapped(tmp_path):
    root = tmp_path / "l2"
    make_l2arctic(root, speakers={"YDCK": "dev", "NJS": "test", "ABA": "train"}, per_speaker=1)
    ydck = root / "YDCK" / "annotation"
    broken = ydck / "arctic_a0209.TextGrid"
    broken.write_text("garbage")                                  # the release's broken annotation
    for d in ("wav", "transcript"):
        src = next((root / "YDCK" / d).iterdir())
        shutil.copy(src, src.with_name("arctic_a0209" + src.suffix))
    tg = root / "NJS" / "annotation" / "arctic_a0002.TextGrid"
    # the leading silence becomes the corpus typo "AH)" (first 'text = "sil"' is the phones tier's)
    tg.write_text(tg.read_text().replace('text = "sil"', 'text = "AH)"', 1))
    m = prepare_corpus(root, tmp_path / "m")
    assert m.skipped == [{"utt_id": "YDCK_arctic_a0209", "reason": "known broken annotation, left out as in "
                                                                  "the L2-ARCTIC MDD recipe"}]
    assert "YDCK_arctic_a0209" not in m
    assert m["NJS_arctic_a0002"].canonical_phones[0] == "AH"


# ------------------------------------------------------------------------------------------ TIMIT
@pytest.mark.parametrize("lower", [False, True])
def test_timit_splits_folding_and_sphere(tmp_path, lower):
    root = tmp_path / "timit"
    expected = make_timit(root, lower=lower)
    m = prepare_corpus(root, tmp_path / "m")
    from phonecli.data.timit import FOLDING, PHONES39, PHONES48

    assert m.corpus.name == "timit" and m.corpus.protocols == ("per",)
    assert m.corpus.phone_set == PHONES48 and len(PHONES48) == 48 and len(PHONES39) == 39
    assert {m.corpus.scoring_map[p] for p in PHONES48} == set(PHONES39)
    assert set(u.utt_id for u in m) == set(expected)            # SA1 and the unused test speaker MRJO0 left out
    for u in m:
        assert u.split == expected[u.utt_id]["split"]
        assert u.canonical_phones == [FOLDING[p][0] for p in expected[u.utt_id]["phn61"]]
        assert "q" not in u.canonical_phones and u.canonical_phones[0] == "sil"    # h# -> sil, q deleted
        assert sf.info(u.audio).format == "NIST"
    assert m.corpus.fold(["ao", "zh", "cl", "vcl", "epi", "ix", "el"]) == ["aa", "sh", "sil", "sil", "sil", "ih", "l"]
    assert {u.speaker for u in m.split("test")} == {"MDAB0", "FELC0", "MTAS1"}
    assert {u.speaker for u in m.split("dev")} == {"FAKS0", "FDAC1"}
    assert not m.corpus.standard and "Lee & Hon" in " ".join(m.corpus.citations)


def test_timit_phone_set_option_and_bad_inputs(timit, tmp_path):
    root = _copy(timit[0], tmp_path / "t")
    m61 = prepare_corpus(root, tmp_path / "m61", options={"phone_set": "61"})
    assert "pcl" in m61.corpus.phone_set and m61.corpus.scoring_map["pcl"] == "sil"
    phn = root / "TEST" / "DR1" / "MDAB0" / "SI100.PHN"
    good = phn.read_text()
    n = sf.info(root / "TEST" / "DR1" / "MDAB0" / "SI100.WAV").frames
    phn.write_text(good.replace(f" {n} h#", f" {n + 500} h#"))
    with pytest.raises(UtteranceError) as e:
        prepare_corpus(root, tmp_path / "o1")
    assert str(phn) in str(e.value) and "past the audio end" in str(e.value) and "\n" not in str(e.value)
    phn.write_text(good.replace(" h#\n", " xx\n", 1))
    with pytest.raises(UtteranceError, match=r"'xx' is not one of TIMIT's 61 phones"):
        prepare_corpus(root, tmp_path / "o2")
    phn.write_text(good)
    # a shorten-compressed SPHERE file: one clear line, not noise
    wav = root / "TEST" / "DR1" / "MDAB0" / "SI100.WAV"
    head = bytearray(wav.read_bytes()[:1024])
    head = head.replace(b"sample_coding -s3 pcm", b"sample_coding -s26 pcm,embedded-shorten-v2.00")
    wav.write_bytes(bytes(head[:1024]) + wav.read_bytes()[1024:])
    with pytest.raises(UtteranceError, match=r"shorten.*sph2pipe"):
        prepare_corpus(root, tmp_path / "o3")
    with pytest.raises(CorpusError, match=r"--lexicon does not apply to a timit corpus"):
        prepare_corpus(root, tmp_path / "o4", options={"lexicon": ["x"]})


# ------------------------------------------------------------------------------------ LibriSpeech
def test_librispeech_superb_targets_first_pronunciation_and_oov(libri, tmp_path):
    from phonecli.data.librispeech import SUPERB_PHONES

    root, expected = libri
    with pytest.raises(UtteranceError, match=r"word 'SAILS' is not in the lexicon"):
        prepare_corpus(root, tmp_path / "o1")
    m = prepare_corpus(root, tmp_path / "m", on_error="skip")
    assert [s["utt_id"] for s in m.skipped] == ["84-100-0002"]
    assert m.corpus.phone_set == SUPERB_PHONES and len(SUPERB_PHONES) == 71
    assert m.corpus.scoring_map is None and m.corpus.protocols == ("per",)
    by_word = {}
    for u in m:
        assert u.split == expected[u.utt_id]["split"]
        for w in u.words:
            by_word[w.text] = w.phones
    assert by_word["READ"] == ["R", "EH1", "D"]                 # the first file's first pronunciation wins
    assert by_word["SHIP"] == ["SH", "IH0", "P"]                # only in the second lexicon
    assert any(p[-1].isdigit() for u in m for p in u.canonical_phones)   # stress kept, as SUPERB does
    assert all(sf.info(u.audio).format == "FLAC" for u in m)


# ----------------------------------------------------------------------------------- Kaldi, lhotse
def test_kaldi_dirs_segments_and_lexicon(kaldi, tmp_path):
    root, expected = kaldi
    with pytest.raises(CorpusError, match=r"needs --lexicon"):
        prepare_corpus(root / "data", tmp_path / "o1")
    m = prepare_corpus(root / "data", tmp_path / "m", options={"lexicon": [str(root / "lexicon.txt")]})
    assert m.corpus.name == "kaldi" and set(u.utt_id for u in m) == set(expected)
    assert m.dev["speakers"] == ["deva", "devb"]
    for u in m.split("test"):               # cut out of the recordings at their segment times
        assert u.audio == f"audio/{u.utt_id}.flac" and (tmp_path / "m" / u.audio).exists()
        assert abs(u.num_samples - expected[u.utt_id]["samples"]) <= 1
    w = m.split("train")[0].words[0]
    assert w.phones and all(not p[-1].isdigit() for p in w.phones)       # lexiconp probability dropped
    scp = root / "data" / "train" / "wav.scp"
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    first = scp.read_text().splitlines()[0].split()[0]
    (bad / "data" / "train" / "wav.scp").write_text(scp.read_text().replace(
        scp.read_text().splitlines()[0], f"{first} sox x.wav -t wav - |"))
    with pytest.raises(UtteranceError, match=r"piped commands are not supported"):
        prepare_corpus(bad / "data", tmp_path / "o2", options={"lexicon": [str(root / "lexicon.txt")]})


def test_lhotse_manifests_import(kaldi, tmp_path):
    import lhotse                      # the [lhotse] extra; [dev] installs it
    from lhotse.kaldi import load_kaldi_data_dir

    root, expected = kaldi
    man = tmp_path / "manifests"
    man.mkdir()
    for split in ("train", "dev", "test"):
        d = tmp_path / f"kaldi_{split}"
        shutil.copytree(root / "data" / split, d)
        scp = d / "wav.scp"
        scp.write_text("\n".join(f"{a} {root / b}" for a, b in (ln.split() for ln in scp.read_text().splitlines())))
        recs, sups, _ = load_kaldi_data_dir(d, sampling_rate=16000)
        recs.to_file(man / f"mini_recordings_{split}.jsonl.gz")
        sups.to_file(man / f"mini_supervisions_{split}.jsonl.gz")
    m = prepare_corpus(man, tmp_path / "m", options={"lexicon": [str(root / "lexicon.txt")]})
    assert m.corpus.name == "lhotse" and set(u.utt_id for u in m) == set(expected)
    for u in m:
        assert u.split == expected[u.utt_id]["split"]
        if u.split == "test":                # segments: loaded through lhotse and stored as FLAC
            # lhotse clips a segment that ends at the recording's end to its own duration arithmetic: <= 1 ms
            assert u.audio.startswith("audio/") and abs(u.num_samples - expected[u.utt_id]["samples"]) <= 16
        else:                                # whole files: referenced in place
            assert Path(u.audio).is_absolute()
    assert lhotse.__version__


# ------------------------------------------------------------------------------- manifest, vocab
def test_v1_manifests_stay_readable_with_the_cmu_vocabulary(tiny_corpus, tmp_path):
    d = json.loads((Path(tiny_corpus) / "manifest.json").read_text())
    for k in ("corpus",):
        d.pop(k, None)
    d["version"] = 1
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    m = Manifest.load(tmp_path)
    assert m.corpus.protocols == ("seed", "phone") and m.vocab.symbols == ("<blank>", *PHONES)
    assert m.corpus_id == Manifest.load(tiny_corpus).corpus_id       # v2 fields do not move the fingerprint
    v = Vocabulary(("sil", "aa"))
    assert v.encode(["aa", "sil"]) == [2, 1] and v.decode([0, 2, 1]) == ["aa", "sil"] and len(v) == 3
