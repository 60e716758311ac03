"""`data info`: every number checked against a count made straight from scores.json and the WAVs."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
from click.testing import CliRunner

from data_corpus import make_openslr
from phonecli.cli import main
from phonecli.data import corpus_info, prepare_corpus

REQUIRED = {"utterances", "speakers", "hours", "phones", "hq_utterances", "positive_utterances", "mispronounced_phones"}


def _hand_count(root, utts, speaker_of):
    scores = json.loads((root / "resource/scores.json").read_text())
    seconds = 0.0
    for u in utts:
        info = sf.info(str(root / f"WAVE/SPEAKER{speaker_of[u]}/{u}.WAV"))
        seconds += info.frames / info.samplerate
    acc = [a for u in utts for w in scores[u]["words"] for a in w["phones-accuracy"]]
    return {
        "utterances": len(utts),
        "speakers": len({speaker_of[u] for u in utts}),
        "hours": round(seconds / 3600, 4),
        "phones": len(acc),
        "hq_utterances": sum(scores[u]["accuracy"] >= 8 for u in utts),
        "positive_utterances": sum(scores[u]["accuracy"] <= 6 for u in utts),
        "mispronounced_phones": sum(a < 0.5 for a in acc),
    }


def test_info_numbers_match_a_hand_count(tmp_path):
    root = tmp_path / "c"
    truth = make_openslr(root, n_train_speakers=10, n_test_speakers=4, per_speaker=3)
    m = prepare_corpus(root, tmp_path / "m", dev_fraction=0.2)
    info = corpus_info(m)
    speaker_of = {u: t["speaker"] for u, t in truth.items()}
    dev_spk = set(m.dev["speakers"])
    by_split = {
        "train": [u for u, t in truth.items() if t["split"] == "train" and t["speaker"] not in dev_spk],
        "dev": [u for u, t in truth.items() if t["speaker"] in dev_spk],
        "test": [u for u, t in truth.items() if t["split"] == "test"],
    }
    assert set(info["splits"]) == {"train", "dev", "test"}
    for split, utts in by_split.items():
        got = info["splits"][split]
        assert REQUIRED <= set(got)
        want = _hand_count(root, utts, speaker_of)
        assert {k: got[k] for k in REQUIRED} == want, split
        assert got["seconds"] == pytest.approx(want["hours"] * 3600, abs=0.2)
    assert info["splits"]["dev"]["speakers"] == 2 and info["splits"]["test"]["utterances"] == 12
    # the corpus really has both kinds of utterances and some mispronounced phones
    assert all(info["total"][k] > 0 for k in ("hq_utterances", "positive_utterances", "mispronounced_phones"))
    assert info["total"]["utterances"] == len(truth) == 42
    assert info["corpus_id"] == m.corpus_id


def test_info_cli_json_shape(tmp_path):
    root = tmp_path / "c"
    make_openslr(root, n_train_speakers=3, n_test_speakers=1)
    prepare_corpus(root, tmp_path / "m", dev_fraction=0)
    r = CliRunner().invoke(main, ["data", "info", str(tmp_path / "m"), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert list(d["splits"]) == ["train", "dev", "test"]
    assert d["splits"]["dev"] == {**{k: 0 for k in REQUIRED}, "hours": 0.0, "seconds": 0,
                                  "words": 0, "annotated_mispronunciations": 0}
    assert all(REQUIRED <= set(v) for v in d["splits"].values())


def test_info_columns_follow_the_corpus_protocols_l2arctic_and_timit(tmp_path):
    """L2-ARCTIC: annotation counts per split equal the miniature's own list of units; no SpeechOcean762
    columns (HQ / positive / phone accuracy mean nothing there). TIMIT: scored phones, no MDD columns."""
    from miniatures import make_l2arctic, make_timit

    from phonecli.data.info import format_info

    truth = make_l2arctic(tmp_path / "l2")
    m = prepare_corpus(tmp_path / "l2", tmp_path / "l2m")
    info = corpus_info(m)
    assert info["corpus"]["protocols"] == ["per", "mdd"]
    for split in ("train", "dev", "test"):
        units = [x for t in truth.values() if t["split"] == split for x in t["units"]]
        got = info["splits"][split]
        assert got["annotated_utterances"] == sum(t["split"] == split for t in truth.values())
        assert (got["substitutions"], got["deletions"], got["additions"]) == tuple(
            sum(k == kind for _, _, k, _ in units) for kind in ("substitution", "deletion", "addition"))
        assert got["scored_phones"] == sum(k != "deletion" for _, _, k, _ in units)   # perceived phones
        assert got["phones"] == sum(k != "addition" for _, _, k, _ in units)           # canonical phones
        assert "hq_utterances" not in got and "mispronounced_phones" not in got
    assert info["total"]["substitutions"] > 0 and info["total"]["deletions"] > 0 and info["total"]["additions"] > 0
    text = format_info(info)
    assert "subst." in text and "HQ(>=8)" not in text and "protocols per, mdd" in text

    make_timit(tmp_path / "timit")
    t = corpus_info(prepare_corpus(tmp_path / "timit", tmp_path / "tm"))
    assert t["total"]["scored_phones"] == t["total"]["phones"] > 0   # 48 -> 39 merges labels, drops none
    assert "annotated_utterances" not in t["total"] and "hq_utterances" not in t["total"]
    res = CliRunner().invoke(main, ["data", "info", str(tmp_path / "tm")])
    assert res.exit_code == 0 and "scored phones" in res.output and "subst." not in res.output
    assert "scored on 39 phones (Lee & Hon 1989)" in res.output
