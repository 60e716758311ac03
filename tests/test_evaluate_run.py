"""End-to-end tests of ``evaluate_run`` / ``phonecli evaluate`` on small hand-made runs.

The runs' log-posteriors are built from the corpus' realized phones (canonical phones with
the annotated errors applied), so greedy decoding returns exactly those phones and every
metric can be recomputed independently with jiwer / scipy / scikit-learn.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jiwer
import numpy as np
import pytest
import scipy.stats
from click.testing import CliRunner
from sklearn.metrics import f1_score, roc_auc_score

from conftest import make_tiny_corpus
from phonecli.cli import main
from phonecli.data.manifest import Manifest
from phonecli.data.phones import PHONE_TO_ID, VOCAB
from phonecli.errors import ConfigError, NonFiniteError
from phonecli.evaluate import EvaluateError, evaluate_run
from phonecli.runs import Run

PHONE_FRAMES = 3


def posteriors_for(phones: list[str], p: float = 0.85, seed: int = 0) -> np.ndarray:
    """(frames, 40) log-posteriors: blank, then each phone for 3 frames followed by a blank."""
    frames = [0]
    for ph in phones:
        frames += [PHONE_TO_ID[ph]] * PHONE_FRAMES + [0]
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0.5, 1.5, size=(len(frames), len(VOCAB)))
    probs[np.arange(len(frames)), 0] *= 2
    probs /= probs.sum(1, keepdims=True)
    probs *= (1 - p)
    probs[np.arange(len(frames)), frames] = p + (1 - p) * probs[np.arange(len(frames)), frames]
    probs /= probs.sum(1, keepdims=True)
    return np.log(probs)


def make_run(path: Path, manifest: Manifest, splits=("train", "dev", "test"), short: tuple[str, ...] = (),
             drop: tuple[str, ...] = (), kind: str = "probe", config: dict | None = None,
             target: str = "realized", sources: list[dict] | None = None) -> Run:
    """A run whose posteriors spell the ``realized`` (or ``canonical``) phones of each utterance."""
    run = Run.create(path, kind, config=config or {"model": "fbank", "head": "linear"},
                     corpus_id=manifest.corpus_id, data=manifest.root, frame_rate=100, sources=sources)
    for split in splits:
        post = {}
        for k, u in enumerate(manifest.split(split)):
            if u.utt_id in drop:
                continue
            lp = posteriors_for(u.realized_phones if target == "realized" else u.canonical_phones, seed=k)
            post[u.utt_id] = lp[:1] if u.utt_id in short else lp
        run.write_posteriors(split, post)
    return run


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_corpus")
    make_tiny_corpus(root, n_train=30, n_dev=21, n_test=30, seed=3)
    return Manifest.load(root)


@pytest.fixture(scope="module")
def evaluated(corpus, tmp_path_factory):
    """A run with one unalignable test utterance; evaluated once with a small bootstrap."""
    short = corpus.split("test")[0].utt_id
    run = make_run(tmp_path_factory.mktemp("runs") / "r1", corpus, short=(short,))
    metrics = evaluate_run(run.path, n_bootstrap=200, seed=0)
    return run, metrics, short


def test_seed_protocol_matches_independent_computation(corpus, evaluated):
    run, m, short = evaluated
    test = corpus.split("test")
    hyps = {}
    preds = {json.loads(x)["utt_id"]: json.loads(x) for x in (run.path / "predictions.jsonl").read_text().splitlines()}
    for u in test:   # greedy CTC of the hand-built posteriors = realized phones (short one: 1 blank frame)
        hyps[u.utt_id] = [] if u.utt_id == short else u.realized_phones
        assert preds[u.utt_id]["hyp"] == hyps[u.utt_id]
        assert preds[u.utt_id]["ref"] == u.canonical_phones
    hq = [u for u in test if u.accuracy >= 8]
    exp_hq = 100 * jiwer.wer([" ".join(u.canonical_phones) for u in hq], [" ".join(hyps[u.utt_id]) for u in hq])
    exp_all = 100 * jiwer.wer([" ".join(u.canonical_phones) for u in test], [" ".join(hyps[u.utt_id]) for u in test])
    a = m["seed"]["task_a"]
    assert a["per_hq"] == pytest.approx(exp_hq) and a["per_all"] == pytest.approx(exp_all)
    assert a["n_hq"] == len(hq)
    per = np.array([jiwer.wer(" ".join(u.canonical_phones), " ".join(hyps[u.utt_id])) for u in test])
    acc = np.array([u.accuracy for u in test])
    b = m["seed"]["task_b"]
    assert b["pearson"] == pytest.approx(scipy.stats.pearsonr(1 - per, acc).statistic)
    assert b["spearman"] == pytest.approx(scipy.stats.spearmanr(1 - per, acc).statistic)
    c = m["seed"]["task_c"]
    assert c["auc"] == pytest.approx(roc_auc_score(acc <= 6, per))
    # the threshold is the dev F1 maximiser; F1 on test at that threshold
    dev = corpus.split("dev")
    dper = np.array([100 * jiwer.wer(" ".join(u.canonical_phones), " ".join(u.realized_phones)) for u in dev])
    dlab = np.array([u.accuracy <= 6 for u in dev])
    best_dev = max(f1_score(dlab, dper >= t) for t in np.unique(dper))
    assert f1_score(dlab, dper >= c["threshold"]) == pytest.approx(best_dev)
    assert c["f1"] == pytest.approx(f1_score(acc <= 6, 100 * per >= c["threshold"]))
    assert c["oracle_f1"] == pytest.approx(max(f1_score(acc <= 6, per >= t) for t in np.unique(per)))
    assert c["oracle_f1"] >= c["f1"] - 1e-12
    for key in ("per_hq", "per_all"):
        lo, hi = a[f"{key}_ci95"]
        assert lo <= a[key] <= hi


def test_phone_protocol_files_counts_and_metrics(corpus, evaluated):
    run, m, short = evaluated
    rows = [json.loads(x) for x in (run.path / "phone_scores.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"utt_id", "split", "index", "phone", "human", "gop", "score"}
    expected = [(u.utt_id, i, p) for s in ("dev", "test") for u in corpus.split(s) for i, p in enumerate(u.canonical_phones)]
    assert [(r["utt_id"], r["index"], r["phone"]) for r in rows] == expected      # nothing dropped
    test_rows = [r for r in rows if r["split"] == "test"]
    human = np.array([r["human"] for r in test_rows])
    gop = np.array([r["gop"] for r in test_rows])
    score = np.array([r["score"] for r in test_rows])
    p = m["phone"]
    assert p["pcc_gop"] == pytest.approx(scipy.stats.pearsonr(gop, human).statistic)
    assert p["pcc_regressor"] == pytest.approx(scipy.stats.pearsonr(score, human).statistic)
    assert p["mdd_auc"] == pytest.approx(roc_auc_score(human < 0.5, -score))
    assert p["mdd_f1"] == pytest.approx(f1_score(human < 0.5, score <= p["mdd_threshold"]))
    # mispronounced phones got other phones' posteriors, so raw GOP separates them
    assert p["mdd_auc_gop"] > 0.75 and p["pcc_gop"] > 0.3
    test = corpus.split("test")
    by_utt = {u.utt_id: [] for u in test}
    for r in test_rows:
        by_utt[r["utt_id"]].append(r["score"])
    means = [np.mean(by_utt[u.utt_id]) for u in test]
    assert p["utt_pcc"] == pytest.approx(scipy.stats.pearsonr(means, [u.accuracy for u in test]).statistic)
    # the 1-frame utterance cannot be aligned: counted, kept with the fallback segmentation
    n_short = len(corpus[short].canonical_phones)
    assert p["counts"]["n_unaligned_test_phones"] == n_short
    assert p["counts"]["n_unaligned_test_utterances"] == 1 and p["unaligned_test_utterances"] == [short]
    assert p["counts"]["n_test_phones"] == len(test_rows)
    assert p["regressor"]["fit_on"] == "train"
    assert m["bootstrap"]["unit"] == "test speaker" and m["bootstrap"]["n"] == 200
    for key in ("pcc_gop", "pcc_regressor", "mdd_auc", "mdd_f1", "utt_pcc"):
        assert len(p[f"{key}_ci95"]) == 2


def _relabel_test(corpus: Manifest, root: Path) -> Manifest:
    """A copy of ``corpus`` whose TEST utterance and phone scores are scrambled."""
    d = corpus.to_dict()
    rng = np.random.default_rng(7)
    for u in d["utterances"]:
        if u["split"] == "test":
            u["accuracy"] = float(rng.integers(0, 11))
            for w in u["words"]:
                w["phone_accuracy"] = [float(x) for x in rng.choice([0.0, 1.0, 2.0], size=len(w["phones"]))]
    (root / "audio").mkdir(parents=True, exist_ok=True)
    from phonecli.data.manifest import Utterance

    m = Manifest(utterances=[Utterance.from_dict(u) for u in d["utterances"]], source=d["source"])
    m.save(root)
    return m


def test_no_threshold_or_regressor_is_fit_on_test(corpus, evaluated, tmp_path):
    run, m, _ = evaluated
    relabelled = _relabel_test(corpus, tmp_path / "relabelled")
    assert relabelled.corpus_id != corpus.corpus_id
    run2 = make_run(tmp_path / "r2", relabelled, short=(corpus.split("test")[0].utt_id,))
    m2 = evaluate_run(run2.path, ci=False)
    assert m2["seed"]["task_c"]["threshold"] == m["seed"]["task_c"]["threshold"]
    assert m2["phone"]["mdd_threshold"] == m["phone"]["mdd_threshold"]
    s1 = [json.loads(x)["score"] for x in (run.path / "phone_scores.jsonl").read_text().splitlines()]
    s2 = [json.loads(x)["score"] for x in (run2.path / "phone_scores.jsonl").read_text().splitlines()]
    assert s1 == s2                                   # the regressor never saw a test label
    assert m2["seed"]["task_c"]["auc"] != m["seed"]["task_c"]["auc"]       # ...but test scoring did
    assert m2["phone"]["pcc_gop"] != m["phone"]["pcc_gop"]


def test_without_train_posteriors_the_regressor_is_cross_fit_on_dev(corpus, tmp_path):
    run = make_run(tmp_path / "late", corpus, splits=("dev", "test"), kind="late-fusion", config={})
    m = evaluate_run(run.path, protocol="phone", ci=False)
    assert m["phone"]["regressor"]["fit_on"] == "dev-crossfit"
    assert "seed" not in m and math.isfinite(m["phone"]["pcc_regressor"])


def test_missing_posteriors_are_reported_and_protocols_merge(corpus, tmp_path):
    gone = corpus.split("test")[1].utt_id
    run = make_run(tmp_path / "r", corpus, drop=(gone,))
    m = evaluate_run(run.path, protocol="seed", ci=False)
    assert m["missing_posteriors"]["test"] == [gone]
    assert m["seed"]["counts"]["n_test"] == len(corpus.split("test")) - 1
    assert m["seed"]["counts"]["n_test_missing_posteriors"] == 1
    m = evaluate_run(run.path, protocol="phone", ci=False)
    assert "seed" in m and "phone" in m                   # the earlier seed block is kept
    saved = json.loads((run.path / "metrics.json").read_text())
    assert saved["seed"]["task_a"]["per_all"] == m["seed"]["task_a"]["per_all"]
    make_run(tmp_path / "r", corpus, drop=(gone,), target="canonical")      # new posteriors...
    m = evaluate_run(run.path, protocol="phone", ci=False)
    assert "seed" not in m                                # ...make the old seed block stale: dropped


def test_bad_inputs_give_one_clear_error(corpus, tmp_path):
    with pytest.raises(EvaluateError, match="not a run directory"):
        evaluate_run(tmp_path / "nope")
    run = make_run(tmp_path / "nodev", corpus, splits=("test",))
    with pytest.raises(EvaluateError, match=r"no dev posteriors .*re-run"):
        evaluate_run(run.path)
    run = make_run(tmp_path / "alien", corpus, splits=("dev",))
    run.write_posteriors("test", {"999999999": np.zeros((5, 40))})
    with pytest.raises(EvaluateError, match="999999999 is not in the manifest"):
        evaluate_run(run.path)
    run = make_run(tmp_path / "nan", corpus, splits=("dev",))
    u = corpus.split("test")[0].utt_id
    with pytest.raises(NonFiniteError, match=f"utterance {u}: NaN/\\+inf log-posteriors"):
        run.write_posteriors("test", {u: np.full((5, 40), np.nan)})   # a run never writes them...
    with pytest.raises(EvaluateError, match="this run failed"):
        evaluate_run(run.path)                                        # ...and is marked failed
    with pytest.raises(ConfigError, match=r"protocol \(--protocol\): 'gop' is not one of seed, phone, per, mdd, all"):
        evaluate_run(run.path, protocol="gop")


def test_cli_evaluate_writes_files_and_reports_errors(corpus, tmp_path):
    run = make_run(tmp_path / "cli", corpus)
    res = CliRunner().invoke(main, ["evaluate", str(run.path), "--bootstrap", "50", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "PER(HQ)" in res.output and "MDD AUC" in res.output
    m = json.loads((run.path / "metrics.json").read_text())
    assert m["bootstrap"]["n"] == 50 and m["bootstrap"]["seed"] == 1
    assert {"seed", "phone"} <= set(m)
    pred = [json.loads(x) for x in (run.path / "predictions.jsonl").read_text().splitlines()]
    assert set(pred[0]) == {"utt_id", "split", "speaker", "hyp", "ref", "accuracy"}
    assert len(pred) == len(corpus.split("dev")) + len(corpus.split("test"))
    res = CliRunner().invoke(main, ["evaluate", str(run.path), "--protocol", "seed", "--no-ci"])
    assert res.exit_code == 0 and "per_hq_ci95" not in (run.path / "metrics.json").read_text()
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "missing")])
    assert res.exit_code != 0 and "not a run directory" in res.output
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "missing"), str(run.path), "--no-ci"])
    assert res.exit_code != 0 and "1 of 2 runs failed" in res.output
    assert f"{run.path}:" in res.output                # the good run was still evaluated


def test_evaluation_is_reproducible_and_the_seed_only_moves_the_cis(corpus, evaluated, tmp_path):
    run, m, _ = evaluated
    again = evaluate_run(run.path, n_bootstrap=200, seed=0)
    strip = lambda d: {k: v for k, v in d.items() if k not in ("evaluated",)}   # noqa: E731
    assert strip(again) == strip(m)
    other = evaluate_run(run.path, n_bootstrap=200, seed=5)
    assert other["seed"]["task_a"]["per_hq"] == m["seed"]["task_a"]["per_hq"]
    assert other["seed"]["task_a"]["per_hq_ci95"] != m["seed"]["task_a"]["per_hq_ci95"]
    evaluate_run(run.path, n_bootstrap=200, seed=0)      # leave the module fixture's files as they were
