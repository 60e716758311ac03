"""Late fusion: weight grids, the two rules vs scipy, exact reproduction at alpha 1/0, dev-only selection,
frame-rate alignment, refusals, the CLI. Input runs are real run directories holding synthetic posteriors
(noisy one-hot paths over the canonical phones) of the `tiny_corpus` manifest."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.special import log_softmax

from phonecli.data.manifest import Manifest
from phonecli.data.phones import VOCAB, encode
from phonecli.errors import ConfigError
from phonecli.fuse import FusionError, fuse_logprobs, fuse_late, parse_values, weight_grid
from phonecli.runs import Run


def frames_at(num_samples: int, rate: float) -> int:
    """HuBERT-style conv output at 50 fps, Kaldi fbank at 100 fps (25 ms window, 10 ms hop)."""
    if rate == 100:
        return (num_samples - 400) // 160 + 1
    hop = int(16000 / rate)
    return (num_samples - 400) // hop + 1


def synthetic_posteriors(utt, rate: float, noise: float, seed: int) -> np.ndarray:
    """``(frames, 40)`` log-posteriors: the canonical phones spread over the frames, blanks between, plus noise."""
    rng = np.random.default_rng(seed)
    t = frames_at(utt.num_samples, rate)
    ids = encode(utt.canonical_phones)
    logits = rng.normal(0.0, noise, size=(t, len(VOCAB)))
    logits[:, 0] += 5.0
    edges = np.linspace(0, t, len(ids) + 1).astype(int)
    for p, a, b in zip(ids, edges[:-1], edges[1:]):
        logits[a:max(a + 1, (a + b) // 2), p] += 8.0
    return log_softmax(logits, axis=1).astype(np.float32)


def make_run(path: Path, data: Path, *, rate: float = 50, noise: float = 1.5, seed: int = 0,
             splits=("train", "dev", "test"), corpus_id: str | None = None, drop: str | None = None) -> Run:
    m = Manifest.load(data)
    run = Run.create(path, "probe", config={"head": "synthetic", "noise": noise}, corpus_id=corpus_id or m.corpus_id,
                     data=data, frame_rate=rate, sources=[{"name": f"synthetic-{seed}"}])
    for s in splits:
        post = {u.utt_id: synthetic_posteriors(u, rate, noise, seed * 1000 + int(u.utt_id))
                for u in m.split(s) if u.utt_id != drop}
        run.write_posteriors(s, post)
    return run


@pytest.fixture(scope="module")
def runs(tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("late_runs")
    a = make_run(root / "a", tiny_corpus, noise=1.3, seed=1)
    b = make_run(root / "b", tiny_corpus, noise=1.5, seed=2)
    return a, b


def seed_metrics(run_dir) -> dict:
    from phonecli.evaluate import evaluate_run

    m = evaluate_run(run_dir, ci=False)
    return {k: m[k] for k in ("seed", "phone")}


# -- the grid -----------------------------------------------------------------------------------

def test_alphas_parser_lists_and_ranges():
    assert [float(v) for v in parse_values("0.3,0.5,0.7")] == [0.3, 0.5, 0.7]
    r = [float(v) for v in parse_values("0:1:0.1")]
    assert len(r) == 11 and r[0] == 0.0 and r[-1] == 1.0 and r[3] == 0.3      # exact, no 0.30000000000000004
    assert [float(v) for v in parse_values("0.2:0.9:0.3")] == [0.2, 0.5, 0.8]  # STOP not on the grid: not added
    assert [float(v) for v in parse_values("0.5")] == [0.5]
    assert weight_grid("0.3,0.7", 2) == [(0.3, 0.7), (0.7, 0.3)]
    assert weight_grid(None, 2)[0] == (0.0, 1.0) and len(weight_grid(None, 2)) == 11


def test_alphas_simplex_grid_for_three_runs():
    g = weight_grid("0:1:0.5", 3)
    assert sorted(g) == sorted([(1, 0, 0), (0, 1, 0), (0, 0, 1), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)])
    g = weight_grid("0:1:0.1", 3)
    assert len(g) == 66 and all(abs(sum(w) - 1) < 1e-12 for w in g)
    with pytest.raises(FusionError, match="sums to 1"):
        weight_grid("0.3,0.5,0.7", 3)


@pytest.mark.parametrize("spec, msg", [("0:1", "START:STOP:STEP"), ("a,b", "not a number"), ("1.5", r"\[0, 1\]"),
                                       ("0:1:0", "STEP must be > 0"), ("1:0:0.1", "STOP must be >= START"),
                                       ("", "empty")])
def test_alphas_parser_errors(spec, msg):
    with pytest.raises(FusionError, match=msg):
        weight_grid(spec, 2)


# -- the rules -----------------------------------------------------------------------------------

def test_rules_match_scipy_and_numpy_reference():
    rng = np.random.default_rng(0)
    a = log_softmax(rng.normal(size=(7, 40)), axis=1)
    b = log_softmax(rng.normal(size=(7, 40)) * 3, axis=1)
    got = fuse_logprobs([a, b], (0.3, 0.7), "log-linear")
    np.testing.assert_allclose(got, log_softmax(0.3 * a + 0.7 * b, axis=1), atol=1e-6)
    got = fuse_logprobs([a, b], (0.3, 0.7), "linear")
    np.testing.assert_allclose(got, np.log(0.3 * np.exp(a) + 0.7 * np.exp(b)), atol=1e-6)
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.exp(got).sum(axis=1), 1.0, atol=1e-5)


def test_zero_weight_never_multiplies_minus_inf():
    a = np.log(np.full((3, 40), 1 / 40))
    b = a.copy()
    b[:, 5] = -np.inf                       # a phone b rules out
    b = log_softmax(b, axis=1)
    for rule in ("log-linear", "linear"):
        out = fuse_logprobs([a, b], (1.0, 0.0), rule)
        assert not np.isnan(out).any()
        np.testing.assert_array_equal(out, a.astype(np.float32))
    mixed = fuse_logprobs([a, b], (0.5, 0.5), "log-linear")
    assert not np.isnan(mixed).any() and np.isneginf(mixed[:, 5]).all()          # product: still impossible
    assert np.isfinite(fuse_logprobs([a, b], (0.5, 0.5), "linear")).all()          # mixture: possible via a


# -- the sweep and the run -----------------------------------------------------------------------

@pytest.mark.parametrize("alpha, which", [("1", 0), ("0", 1)])
def test_alpha_one_and_zero_reproduce_each_input_exactly(runs, tmp_path, alpha, which):
    src = runs[which]
    fused = fuse_late(list(runs), tmp_path / "f", alphas=alpha, n_jobs=1, plot=False)
    assert fused.kind == "late-fusion" and fused.info["selection"]["weights"][which] == 1.0
    for s in ("train", "dev", "test"):
        got, want = fused.read_posteriors(s), src.read_posteriors(s)
        assert list(got) == list(want)
        for u in want:
            np.testing.assert_array_equal(got[u], want[u])
    assert seed_metrics(fused.path) == seed_metrics(src.path)


def test_renormalised_posteriors_match_input_up_to_rounding(runs):
    a = runs[0].read_posteriors("dev")
    b = runs[1].read_posteriors("dev")
    u = next(iter(a))
    # one active weight per formula, computed (not short-cut): a weight of 1 - 1e-12 on a
    out = fuse_logprobs([a[u], b[u]], (1 - 1e-12, 1e-12), "log-linear")
    np.testing.assert_allclose(out, a[u], atol=1e-5)


def _dev_per_reference(a: Run, b: Run, alpha: float, manifest: Manifest) -> float:
    """Corpus dev PER of the log-linear fusion at alpha, via torchaudio's edit distance."""
    import torchaudio.functional as AF

    from phonecli.ctc import greedy_phones

    pa, pb = a.read_posteriors("dev"), b.read_posteriors("dev")
    edits = n = 0
    for u in pa:
        fused = log_softmax(alpha * pa[u].astype(np.float64) + (1 - alpha) * pb[u].astype(np.float64), axis=1)
        ref = manifest[u].canonical_phones
        edits += AF.edit_distance(ref, greedy_phones(fused))
        n += len(ref)
    return 100.0 * edits / n


def test_weights_are_chosen_on_dev_only(runs, tmp_path, tiny_corpus):
    a, b = runs
    fused = fuse_late([a, b], tmp_path / "f", alphas="0:1:0.25", n_jobs=2)
    rows = list(csv.DictReader(open(fused.path / "sweep.csv")))
    assert len(rows) == 5 and sum(r["selected"] == "yes" for r in rows) == 1
    assert any("not used for selection" in k for k in rows[0])
    m = Manifest.load(tiny_corpus)
    ref = {float(r["alpha"]): _dev_per_reference(a, b, float(r["alpha"]), m) for r in rows}
    for r in rows:
        assert float(r["dev_per_all"]) == pytest.approx(ref[float(r["alpha"])], abs=1e-4)
    best = min(ref.values())
    chosen = fused.info["selection"]["alpha"]
    assert ref[chosen] == pytest.approx(best)
    assert (fused.path / "sweep.png").stat().st_size > 1000

    # wreck the test posteriors of both inputs: the choice must not move
    moved = []
    for r in (a, b):
        dst = tmp_path / f"{r.path.name}-badtest"
        shutil.copytree(r.path, dst)
        bad = Run.open(dst)
        test = bad.read_posteriors("test")
        bad.write_posteriors("test", {u: lp[::-1].copy() for u, lp in test.items()})
        moved.append(bad)
    again = fuse_late(moved, tmp_path / "g", alphas="0:1:0.25", n_jobs=1, plot=False)
    assert again.info["selection"]["weights"] == fused.info["selection"]["weights"]
    rows2 = list(csv.DictReader(open(again.path / "sweep.csv")))
    assert [r["dev_per_all"] for r in rows2] == [r["dev_per_all"] for r in rows]
    test_col = next(k for k in rows[0] if k.startswith("test_per_all"))
    assert [r[test_col] for r in rows2] != [r[test_col] for r in rows]


def test_select_on_other_metrics_and_unknown(runs, tmp_path):
    f = fuse_late(list(runs), tmp_path / "f", alphas="0,0.5,1", select_on="dev-ctc-loss", n_jobs=1, plot=False)
    rows = list(csv.DictReader(open(f.path / "sweep.csv")))
    best = min(rows, key=lambda r: float(r["dev_ctc_loss"]))
    assert best["selected"] == "yes" and f.info["selection"]["metric"] == "dev_ctc_loss"
    with pytest.raises(ConfigError, match=r"select_on \(--select-on\): 'bleu': choose one of dev-per, "):
        fuse_late(list(runs), tmp_path / "g", select_on="bleu")


def test_three_runs_simplex(runs, tmp_path, tiny_corpus):
    c = make_run(tmp_path / "c", tiny_corpus, noise=1.8, seed=3, splits=("dev", "test"))
    f = fuse_late([*runs, c], tmp_path / "f", alphas="0:1:0.5", n_jobs=1, plot=True)
    assert f.info["config"]["grid_size"] == 6 and len(f.info["sources"]) == 3
    assert f.posterior_splits() == ["dev", "test"]          # c has no train posteriors -> none fused
    assert abs(sum(f.info["selection"]["weights"]) - 1) < 1e-12


def test_frame_rate_mismatch_is_aligned_by_repetition(tiny_corpus, tmp_path):
    slow = make_run(tmp_path / "slow", tiny_corpus, rate=50, seed=4)
    fast = make_run(tmp_path / "fast", tiny_corpus, rate=100, seed=5)
    f = fuse_late([slow, fast], tmp_path / "f", alphas="1,0.5", n_jobs=1, plot=False, select_on="ctc-loss")
    assert f.frame_rate == 100 and f.info["sources"][0]["repeat"] == 2 and f.info["sources"][1]["repeat"] == 1
    # alpha 1 = the slow run alone, frames repeated x2, trimmed to the common length
    one = fuse_late([slow, fast], tmp_path / "one", alphas="1", n_jobs=1, plot=False)
    ps, pf, po = slow.read_posteriors("dev"), fast.read_posteriors("dev"), one.read_posteriors("dev")
    for u in ps:
        n = min(2 * len(ps[u]), len(pf[u]))
        assert abs(2 * len(ps[u]) - len(pf[u])) <= 2 and len(po[u]) == n
        np.testing.assert_array_equal(po[u], np.repeat(ps[u], 2, axis=0)[:n])
    with pytest.raises(FusionError, match="50 frames/s but .* has 100.*--align repeat"):
        fuse_late([slow, fast], tmp_path / "r", align="refuse")


def test_refusals(runs, tiny_corpus, tmp_path):
    a, b = runs
    other = make_run(tmp_path / "other", tiny_corpus, seed=6, splits=("dev", "test"), corpus_id="0123456789abcdef")
    with pytest.raises(FusionError, match="corpus_id 0123456789abcdef differs"):
        fuse_late([a, other], tmp_path / "x")
    first_dev = Manifest.load(tiny_corpus).split("dev")[0].utt_id
    fewer = make_run(tmp_path / "fewer", tiny_corpus, seed=7, splits=("dev", "test"), drop=first_dev)
    with pytest.raises(FusionError, match=f"dev utterances differ .* e.g. {first_dev}"):
        fuse_late([a, fewer], tmp_path / "x")
    odd = make_run(tmp_path / "odd", tiny_corpus, rate=33.3, seed=8, splits=("dev", "test"))
    with pytest.raises(FusionError, match="not an integer fraction"):
        fuse_late([a, odd], tmp_path / "x")
    quarter = make_run(tmp_path / "quarter", tiny_corpus, rate=25, seed=9, splits=("dev", "test"))
    shutil.copytree(quarter.path, tmp_path / "q2")
    q2 = Run.open(tmp_path / "q2")
    q2.write_posteriors("dev", {u: np.concatenate([lp, lp]) for u, lp in q2.read_posteriors("dev").items()})
    with pytest.raises(FusionError, match="frame counts disagree after alignment"):
        fuse_late([a, q2], tmp_path / "x")
    raw = make_run(tmp_path / "raw", tiny_corpus, seed=10, splits=("dev", "test"))
    raw.write_posteriors("dev", {u: lp + 3.0 for u, lp in raw.read_posteriors("dev").items()})
    with pytest.raises(FusionError, match="not log-posteriors"):
        fuse_late([a, raw], tmp_path / "x")
    with pytest.raises(FusionError, match="at least 2 runs"):
        fuse_late([a], tmp_path / "x")
    with pytest.raises(FusionError, match="given twice"):
        fuse_late([a, a], tmp_path / "x")
    with pytest.raises(FusionError, match="is one of the input runs"):
        fuse_late([a, b], a.path)
    with pytest.raises(FusionError, match="not a run directory"):
        fuse_late([a, tmp_path / "nothing"], tmp_path / "x")
    assert not (tmp_path / "x").exists()                      # nothing half-written


def test_cli_fuse_late(runs, tmp_path):
    from click.testing import CliRunner

    from phonecli.cli import main

    out = tmp_path / "late"
    res = CliRunner().invoke(main, ["fuse", "late", str(runs[0].path), str(runs[1].path), "--alphas", "0:1:0.5",
                                    "--rule", "linear", "--jobs", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == str(out)
    info = json.loads((out / "run.json").read_text())
    assert info["kind"] == "late-fusion" and info["config"]["rule"] == "linear"
    assert [s["run"] for s in info["sources"]] == [str(r.path.resolve()) for r in runs]
    assert len(list(csv.DictReader(open(out / "sweep.csv")))) == 3
    res = CliRunner().invoke(main, ["fuse", "late", str(runs[0].path), "--out", str(tmp_path / "y")])
    assert res.exit_code != 0 and "at least two runs" in res.output
    res = CliRunner().invoke(main, ["fuse", "late", str(runs[0].path), str(runs[1].path), "--alphas", "2",
                                    "--out", str(tmp_path / "y")])
    assert res.exit_code == 1 and "Error: --alphas '2'" in res.output
