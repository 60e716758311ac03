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
    # floors: the empty output and the train split's most frequent phone (torchaudio's edit distance)
    fl = metrics["per"]["floors"]
    assert fl["all_blank"]["per_test"] == 100.0
    mfp = fl["most_frequent_phone"]["phone"]
    want = 100.0 * sum(edit_distance(p["ref"], [mfp] * len(p["ref"])) for p in test) / sum(len(p["ref"]) for p in test)
    assert fl["most_frequent_phone"]["per_test"] == pytest.approx(want)
    assert metrics["per"]["margins"]["per_test"]["margin"] == pytest.approx(want - expected)
    assert "fbank-mlp — floor: most frequent phone" in md
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
    # the probe picked its epoch on dev PER scored as evaluate reports it (48 -> 39 folded)
    selection = json.loads((tmp_path / "runs" / "fbank-mlp" / "run.json").read_text())["selection"]
    assert selection["scored_on"] == "39 phones (Lee & Hon 1989)"
    assert selection["value"] == pytest.approx(metrics["per"]["per_dev"])
    assert "## Phone recognition (PER)" in md
    _fusion_selects_on_the_folded_dev_per(tmp_path, m)
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


def _fusion_selects_on_the_folded_dev_per(tmp_path, m):
    """Late fusion picks its weights on dev PER computed the way ``evaluate`` reports TIMIT (48 -> 39 folded on
    both sides): the sweep's dev PER of alpha = 0 (run 2 unchanged) equals an independent greedy decode of
    run 2's dev posteriors, folded here with the Kaldi map, scored with torchaudio's edit distance."""
    import numpy as np

    from phonecli.fuse.late import read_sweep_csv
    from phonecli.runs import Run

    runs = tmp_path / "runs"
    res = CliRunner().invoke(main, ["probe", "--features", str(next((tmp_path / "cache").rglob("fbank.zarr"))),
                                    "--data", str(tmp_path / "data"), "--head", "linear", "--epochs", "1",
                                    "--out", str(runs / "fbank-linear")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["fuse", "late", str(runs / "fbank-mlp"), str(runs / "fbank-linear"),
                                    "--alphas", "0,0.5,1", "--out", str(runs / "fused")])
    assert res.exit_code == 0, res.output
    post = Run.open(runs / "fbank-linear").read_posteriors("dev")   # (the 2-epoch MLP still outputs blanks)
    symbols = m.vocab.symbols
    scoring = m.corpus.scoring_map
    fold = lambda ps: [scoring.get(p, p) for p in ps if scoring.get(p, p)]  # noqa: E731
    edits = ref_len = 0
    for u in m.split("dev"):
        ids = np.argmax(post[u.utt_id], axis=1).tolist()
        hyp = [symbols[i] for k, i in enumerate(ids) if i != 0 and (k == 0 or ids[k - 1] != i)]
        edits += edit_distance(fold(u.canonical_phones), fold(hyp))
        ref_len += len(fold(u.canonical_phones))
    rows = {float(r["alpha"]): r for r in read_sweep_csv(runs / "fused" / "sweep.csv")}
    assert float(rows[0.0]["dev_per_all"]) == pytest.approx(100.0 * edits / ref_len)
    from phonecli.data.timit import PHONES39
    from phonecli.fuse.late import selection_references

    refs, _ = selection_references(m)
    assert any(set(u.canonical_phones) - set(PHONES39) for u in m.split("dev"))      # 48-only phones (cl, vcl) ...
    assert all(set(refs[u.utt_id]["ref"]) <= set(PHONES39) for u in m.split("dev"))  # ... are scored folded
    info = json.loads((runs / "fused" / "run.json").read_text())
    assert info["selection"]["scored_on"] == "39 phones (Lee & Hon 1989)"
