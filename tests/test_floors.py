"""Floors: what predictors that see no audio score, checked by hand, with jiwer and with scikit-learn."""

from __future__ import annotations

import math

import jiwer
import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from conftest import make_tiny_corpus
from phonecli.data.manifest import Manifest
from phonecli.evaluate import evaluate_run
from phonecli.evaluate.floors import margins, most_frequent_phone, phone_priors, protocol_floor
from test_evaluate_run import make_run


def test_margins_by_hand():
    floors = {"mfp": {"per_hq": 92.0}, "no_audio": {"auc": 0.61, "pearson": float("nan")}}
    spec = (("per_hq", "mfp", True), ("auc", "no_audio", False), ("pearson", "no_audio", False),
            ("f1", "no_audio", False))
    got = margins({"per_hq": 49.5, "auc": 0.58, "pearson": 0.3, "f1": 0.2}, floors, spec)
    assert got["per_hq"] == {"floor": "mfp", "value": 92.0, "margin": 42.5}          # PER: floor - value
    assert got["auc"]["margin"] == pytest.approx(-0.03)                              # worse than no audio
    assert got["pearson"]["margin"] is None and "f1" not in got                      # undefined / no floor
    # the generic hook: a protocol's own fit on dev and score on test
    assert protocol_floor(lambda d: sum(d), lambda t, f: {"x": f * t}, [1, 2], 3) == {"x": 9}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Tiny corpus whose phone accuracy depends on phone identity only: vowels starting with A are
    mispronounced (0), everything else correct (2) — identity priors explain everything, audio nothing."""
    root = tmp_path_factory.mktemp("floors")
    m = make_tiny_corpus(root, n_train=24, n_dev=9, n_test=12, seed=3)
    for u in m:
        for w in u.words:
            w.phone_accuracy = [0.0 if p.startswith("A") else 2.0 for p in w.phones]
            w.mispronunciations = []
        u.accuracy = float(round(10 * np.mean(u.phone_accuracy) / 2))
    m.save(root)
    return Manifest.load(root)


def test_seed_floors_by_hand_and_jiwer(corpus, tmp_path):
    run = make_run(tmp_path / "run", corpus)            # posteriors spelling the realized phones
    m = evaluate_run(run.path, ci=False)
    seed = m["seed"]
    fl = seed["floors"]
    test = corpus.split("test")
    hq = [u for u in test if u.accuracy >= 8]
    assert fl["all_blank"]["per_hq"] == (100.0 if hq else None) and fl["all_blank"]["per_all"] == 100.0
    mfp = most_frequent_phone(corpus.split("train"))
    counts = {}
    for u in corpus.split("train"):
        for p in u.canonical_phones:
            counts[p] = counts.get(p, 0) + 1
    assert counts[mfp] == max(counts.values())
    assert fl["most_frequent_phone"]["phone"] == mfp
    # by hand: a constant phone output of the reference's length costs one edit per other phone
    want = 100 * sum(len(u.canonical_phones) - u.canonical_phones.count(mfp) for u in test) / \
        sum(len(u.canonical_phones) for u in test)
    assert fl["most_frequent_phone"]["per_all"] == pytest.approx(want)
    ref = [" ".join(u.canonical_phones) for u in test]
    hyp = [" ".join([mfp] * len(u.canonical_phones)) for u in test]
    assert fl["most_frequent_phone"]["per_all"] == pytest.approx(100 * jiwer.wer(ref, hyp))
    assert seed["margins"]["per_all"]["margin"] == pytest.approx(fl["most_frequent_phone"]["per_all"]
                                                                 - seed["task_a"]["per_all"])
    assert seed["margins"]["auc"]["floor"] == "no_audio"
    assert {"pearson", "spearman", "auc", "f1", "precision", "recall"} <= set(fl["no_audio"])


def test_phone_floor_catches_what_phone_identity_explains(corpus, tmp_path):
    run = make_run(tmp_path / "run", corpus)
    phone = evaluate_run(run.path, ci=False)["phone"]
    na = phone["floors"]["no_audio"]
    assert na["fit_on"] == "train" == phone["regressor"]["fit_on"]
    # the floor's raw score is the train mean accuracy of each phone: recomputed here independently
    sums, counts = {}, {}
    for u in corpus.split("train"):
        for p, a in zip(u.canonical_phones, u.phone_accuracy):
            sums[p] = sums.get(p, 0.0) + a
            counts[p] = counts.get(p, 0) + 1
    overall = sum(sums.values()) / sum(counts.values())
    test_phones = [(p, a) for u in corpus.split("test") for p, a in zip(u.canonical_phones, u.phone_accuracy)]
    prior = np.array([sums[p] / counts[p] if p in counts else overall for p, _ in test_phones])
    human = np.array([a for _, a in test_phones])
    assert na["pcc_gop"] == pytest.approx(scipy.stats.pearsonr(prior, human)[0])
    assert na["mdd_auc_gop"] == pytest.approx(roc_auc_score(human < 0.5, -prior))
    ids_prior, _ = phone_priors(corpus.split("train"))
    from phonecli.data.phones import PHONE_TO_ID
    assert np.allclose([ids_prior[PHONE_TO_ID[p]] for p, _ in test_phones], prior)
    # identity explains the labels here, so the no-audio floor is (nearly) perfect and the margins are ~0 or less
    assert na["mdd_auc_gop"] > 0.95 and na["pcc_gop"] > 0.9
    assert phone["margins"]["mdd_auc_gop"]["margin"] == pytest.approx(phone["mdd_auc_gop"] - na["mdd_auc_gop"])
    assert all(k in phone["margins"] for k in ("pcc_gop", "pcc_regressor", "mdd_auc", "mdd_f1", "utt_pcc"))
    assert math.isfinite(na["mdd_auc"])


@pytest.mark.parametrize("source, name, anchors, words", [
    ({"kind": "openslr", "path": "/c/so762", "synthetic": False}, "speechocean762", True, "real recordings"),
    ({"kind": "sample", "path": "/pkg/sample_corpus", "synthetic": True}, "sample", False, "synthetic audio"),
    ({"kind": "openslr", "path": "/c/old"}, "speechocean762", False, "synthetic or real: not recorded"),  # older
])
def test_report_names_the_corpus_and_gates_literature_anchors(tmp_path, source, name, anchors, words):
    from phonecli.data.corpus import spec_for_v1
    from phonecli.evaluate.report import write_report

    m = make_tiny_corpus(tmp_path / "data", n_train=6, n_dev=6, n_test=6, seed=4)
    m.source, m.corpus = source, spec_for_v1(source["kind"])
    m.save(tmp_path / "data")
    run = make_run(tmp_path / "run", Manifest.load(tmp_path / "data"))
    out = write_report([run.path], tmp_path / "out", plots=False, n_bootstrap=20)
    md = out["results_md"].read_text().splitlines()
    assert md[2].startswith(f"- Corpus: **{name}** ({words}")
    assert f"corpus_id `{m.corpus_id}`" in md[2] and f"`{source['path']}`" in md[2]
    assert md[3] == "- Splits: train 6 utterances / 2 speakers; dev 6 utterances / 2 speakers; test 6 utterances / 2 speakers"
    assert ("GOPT 0.612" in "\n".join(md)) is anchors
