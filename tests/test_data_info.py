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
