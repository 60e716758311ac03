"""prepare -> extract fbank -> short probe -> evaluate -> report, on each new corpus miniature.

The probes are too short to learn much; what is checked is that every stage reads what the
previous one wrote for a corpus with its own phone set, folding and protocols, and that the
numbers in metrics.json / results.md are the ones recomputed here independently (torchaudio's
edit distance).
"""

from __future__ import annotations

import csv
import json

import pytest
from torchaudio.functional import edit_distance
from click.testing import CliRunner

from miniatures import make_kaldi, make_l2arctic, make_librispeech, make_timit
from phonecli.cli import main
from phonecli.data.manifest import Manifest


def _pipeline(src, tmp_path, *prepare_args, targets="canonical"):
    from phonecli.extract.runner import extract_features

    data, runs = tmp_path / "data", tmp_path / "runs"
    res = CliRunner().invoke(main, ["data", "prepare", str(src), "--out", str(data), "--on-error", "skip",
                                    *prepare_args])
    assert res.exit_code == 0, res.output
    cache = extract_features("fbank", data, tmp_path / "cache", device="cpu")
    res = CliRunner().invoke(main, ["probe", "--features", str(cache), "--data", str(data), "--head", "mlp",
                                    "--epochs", "2", "--targets", targets, "--out", str(runs / "fbank-mlp")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["evaluate", str(runs / "fbank-mlp"), "--bootstrap", "30"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["report", str(runs / "fbank-mlp"), "--out", str(tmp_path / "results")])
    assert res.exit_code == 0, res.output
    m = Manifest.load(data)
    metrics = json.loads((runs / "fbank-mlp" / "metrics.json").read_text())
    run = json.loads((runs / "fbank-mlp" / "run.json").read_text())
    assert run["vocab"] == list(m.vocab.symbols)
    preds = [json.loads(x) for x in (runs / "fbank-mlp" / "predictions.jsonl").read_text().splitlines()]
    md = (tmp_path / "results" / "results.md").read_text()
    with open(tmp_path / "results" / "results.csv") as f:
        row = next(csv.DictReader(f))
    return m, metrics, preds, md, row


def _check_per(m, metrics, preds, md, row):
    test = [p for p in preds if p["split"] == "test"]
    # torchaudio's edit distance over phone tokens, summed / reference phones = corpus PER
    edits = sum(edit_distance(p["ref"], p["hyp"]) for p in test)
    expected = 100.0 * edits / sum(len(p["ref"]) for p in test)
    assert metrics["per"]["per_test"] == pytest.approx(expected)
    assert metrics["benchmark"]["name"] == m.corpus.benchmark
    assert f"| fbank-mlp | {m.corpus.benchmark} | {metrics['per']['per_test']:.2f}" in md
    assert row["benchmark"] == m.corpus.benchmark and float(row["per_test"]) == pytest.approx(expected)
    assert "seed" not in metrics and "phone" not in metrics
    return test


def test_l2arctic_end_to_end(tmp_path):
    src = tmp_path / "l2"
    make_l2arctic(src)
    m, metrics, preds, md, row = _pipeline(src, tmp_path, targets="realized")
    test = _check_per(m, metrics, preds, md, row)
    perceived = {u.utt_id: [a.perceived for a in u.annotation if a.kind != "deletion"] for u in m.split("test")}
    assert all(p["ref"] == perceived[p["utt_id"]] for p in test)          # PER against the annotation
    mdd = metrics["mdd"]
    c = mdd["counts"]
    units = sum(len(u.annotation) for u in m.split("test"))
    assert c["ta"] + c["fr"] + c["fa"] + c["cd"] + c["de"] == units
    assert mdd["floors"]["accept_all"]["counts"]["cd"] == 0 and mdd["floors"]["accept_all"]["recall"] == 0
    assert "## Mispronunciation detection and diagnosis (MDD)" in md and "floor: accept all" in md
    assert "f1_ci95" in mdd and row["mdd_l2_f1"] != ""
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "runs" / "fbank-mlp"), "--protocol", "seed"])
    assert res.exit_code != 0 and "--protocol seed does not apply to L2-ARCTIC MDD" in res.output


def test_timit_end_to_end_scores_on_39_phones(tmp_path):
    from phonecli.data.timit import PHONES39

    src = tmp_path / "timit"
    make_timit(src)
    m, metrics, preds, md, row = _pipeline(src, tmp_path)
    test = _check_per(m, metrics, preds, md, row)
    assert all(set(p["ref"]) <= set(PHONES39) and set(p["hyp"]) <= set(PHONES39) for p in test)
    assert metrics["per"]["scored_on"] == "39 phones (Lee & Hon 1989)"
    assert "## Phone recognition (PER)" in md
    # a run whose vocabulary is not the manifest's (e.g. made with the CMU-39 one) is refused, not mis-decoded
    from phonecli.data.phones import VOCAB

    info_path = tmp_path / "runs" / "fbank-mlp" / "run.json"
    info = json.loads(info_path.read_text())
    info["vocab"] = list(VOCAB)
    info_path.write_text(json.dumps(info))
    res = CliRunner().invoke(main, ["evaluate", str(info_path.parent)])
    assert res.exit_code != 0 and "vocabulary differs from the 49-symbol vocabulary" in res.output


def test_librispeech_end_to_end(tmp_path):
    src = tmp_path / "libri"
    make_librispeech(src)
    m, metrics, preds, md, row = _pipeline(src, tmp_path)
    _check_per(m, metrics, preds, md, row)
    assert len(m.vocab) == 72 and "SUPERB PR" in m.corpus.benchmark


def test_kaldi_end_to_end(tmp_path):
    src = tmp_path / "kaldi"
    make_kaldi(src)
    m, metrics, preds, md, row = _pipeline(src / "data", tmp_path, "--lexicon", str(src / "lexicon.txt"))
    _check_per(m, metrics, preds, md, row)
