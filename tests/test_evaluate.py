"""Unit tests of the evaluation building blocks against independent references.

Decoding and PER vs jiwer / torchaudio, metrics vs scipy / scikit-learn, forced alignment and
GOP on hand-built posteriors whose answer is known, threshold selection, speaker bootstrap.
"""

from __future__ import annotations

import math
import random

import jiwer
import numpy as np
import pytest
import scipy.stats
import torch
import torchaudio.functional as TAF
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from phonecli.data.phones import PHONE_TO_ID, PHONES, VOCAB
from phonecli.evaluate import metrics as M
from phonecli.ctc import min_frames
from phonecli.evaluate.align import forced_align, uniform_spans
from phonecli.evaluate.bootstrap import speaker_bootstrap
from phonecli.ctc import edit_distance, greedy_ids, greedy_phones, phone_error_rate
from phonecli.evaluate.gop import gop_features
from phonecli.evaluate.per import DEL, INS, align, edit_counts


def onehot_logp(frames: list[int], p: float = 0.9) -> np.ndarray:
    """(T, 40) log-posteriors: ``p`` on the listed label of each frame, the rest spread evenly."""
    out = np.full((len(frames), len(VOCAB)), (1 - p) / (len(VOCAB) - 1))
    out[np.arange(len(frames)), frames] = p
    return np.log(out)


# -- decoding --------------------------------------------------------------------------------
def test_greedy_decode_merges_repeats_and_keeps_blank_separated_repeats():
    a, b = PHONE_TO_ID["AA"], PHONE_TO_ID["B"]
    lp = onehot_logp([0, a, a, 0, a, b, b, 0, 0])
    assert greedy_phones(lp) == ["AA", "AA", "B"]
    assert greedy_ids(lp) == [a, a, b]
    assert greedy_phones(np.zeros((0, 40))) == []
    with pytest.raises(ValueError, match="frames, vocab"):
        greedy_ids(np.zeros(40))


# -- PER vs jiwer and torchaudio ---------------------------------------------------------------
def _random_pairs(n: int, seed: int = 0):
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        ref = [rng.choice(PHONES[:8]) for _ in range(rng.randint(1, 12))]
        hyp = [rng.choice(PHONES[:8]) for _ in range(rng.randint(1, 14))]
        pairs.append((ref, hyp))
    return pairs


def test_edit_distance_matches_torchaudio_and_alignment_is_consistent():
    for ref, hyp in _random_pairs(300):
        d = edit_distance(ref, hyp)
        assert d == TAF.edit_distance(ref, hyp)
        pairs = align(ref, hyp)
        assert [r for r, _ in pairs if r != INS] == ref
        assert [h for _, h in pairs if h != DEL] == hyp
        assert sum(r != h for r, h in pairs) == d == edit_counts(ref, hyp).edits
    assert edit_distance([], ["AA", "B"]) == 2 and edit_distance(["AA"], []) == 1


def test_phone_error_rate_matches_jiwer_wer_on_space_joined_phones():
    pairs = _random_pairs(200, seed=1)
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    expected = 100 * jiwer.wer([" ".join(r) for r in refs], [" ".join(h) for h in hyps])
    assert phone_error_rate(refs, hyps) == pytest.approx(expected, rel=1e-12)
    for ref, hyp in pairs[:50]:
        assert phone_error_rate([ref], [hyp]) == pytest.approx(100 * jiwer.wer(" ".join(ref), " ".join(hyp)))


def test_edit_counts_split_into_sub_del_ins():
    c = edit_counts(["AA", "B", "CH", "D"], ["AA", "CH", "D", "EH"])   # delete B, insert EH
    assert (c.substitutions, c.deletions, c.insertions, c.ref_len) == (0, 1, 1, 4)
    c = edit_counts(["AA", "B"], ["AE", "B"])
    assert (c.substitutions, c.deletions, c.insertions) == (1, 0, 0)


# -- metrics vs scipy / sklearn --------------------------------------------------------------
def test_correlations_and_auc_match_scipy_and_sklearn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    y = 0.5 * x + rng.normal(size=300)
    y[:20] = np.round(y[:20])     # some ties for Spearman
    assert M.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y).statistic, abs=1e-12)
    assert M.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
    labels = y > 0.3
    assert M.auc(labels, x) == pytest.approx(roc_auc_score(labels, x), abs=1e-12)
    tied = np.round(x)            # heavy ties: the rank formula must still equal sklearn
    assert M.auc(labels, tied) == pytest.approx(roc_auc_score(labels, tied), abs=1e-12)
    assert math.isnan(M.pearson([1, 1, 1], [1, 2, 3]))
    assert math.isnan(M.auc([True, True], [0.1, 0.2]))


def test_threshold_selection_maximises_f1_and_prf_matches_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.random(200) < 0.3
    scores = np.round(labels * 0.8 + rng.normal(size=200), 1)      # ties included
    t = M.select_threshold(labels, scores)
    best = max(f1_score(labels, scores >= c) for c in np.unique(scores))
    pred = scores >= t
    assert f1_score(labels, pred) == pytest.approx(best, abs=1e-12)
    prf = M.prf_at(labels, scores, t)
    assert prf["f1"] == pytest.approx(f1_score(labels, pred))
    assert prf["precision"] == pytest.approx(precision_score(labels, pred))
    assert prf["recall"] == pytest.approx(recall_score(labels, pred))
    assert M.oracle_f1(labels, scores) == pytest.approx(best)
    assert math.isnan(M.select_threshold(np.zeros(5, bool), np.arange(5.0)))


# -- forced alignment and GOP ----------------------------------------------------------------
def test_forced_alignment_recovers_known_spans_and_gop_values():
    a, b = PHONE_TO_ID["AA"], PHONE_TO_ID["S"]
    frames = [0, 0, a, a, a, 0, b, b, b, 0]
    lp = onehot_logp(frames, p=0.9)
    spans = forced_align(lp, [a, b])
    assert spans == [(2, 5), (6, 9)]
    feats = gop_features(lp, [a, b], spans)
    other = math.log(0.1 / 39)
    np.testing.assert_allclose(feats[:, 0], [math.log(0.9)] * 2)                   # lpp
    np.testing.assert_allclose(feats[:, 1], [math.log(0.9) - other] * 2)           # lpr
    np.testing.assert_allclose(feats[:, 2], [3, 3])                                # duration (frames)


def test_gop_of_a_mispronounced_phone_is_low_and_exact():
    a, b, s = PHONE_TO_ID["AA"], PHONE_TO_ID["B"], PHONE_TO_ID["S"]
    # the speaker said AA S but the canonical phones are AA B: B is aligned over S frames
    lp = onehot_logp([0, a, a, 0, s, s, 0], p=0.8)
    spans = forced_align(lp, [a, b])
    feats = gop_features(lp, [a, b], spans)
    low = math.log(0.2 / 39)
    assert feats[0, 0] == pytest.approx(math.log(0.8))
    assert feats[1, 0] == pytest.approx(low)                         # posterior of B is tiny
    assert feats[1, 1] == pytest.approx(low - math.log(0.8))         # best competitor is S
    # the per-frame path agrees with torchaudio's own alignment of the same emission
    labels, _ = TAF.forced_align(torch.from_numpy(lp.astype(np.float32))[None], torch.tensor([[a, b]], dtype=torch.int32))
    aligned_b = [t for t, x in enumerate(labels[0].tolist()) if x == b]
    assert spans[1] == (aligned_b[0], aligned_b[-1] + 1)


def test_repeats_need_a_blank_and_short_utterances_are_unalignable():
    a = PHONE_TO_ID["AA"]
    assert min_frames([a, a, a]) == 5
    lp = onehot_logp([a, 0, a], p=0.9)
    assert forced_align(lp, [a, a]) == [(0, 1), (2, 3)]
    assert forced_align(lp[:2], [a, a]) is None          # 2 frames < 3 needed
    assert forced_align(lp, [a, a, a, a]) is None
    assert forced_align(lp, []) is None


def test_uniform_fallback_spans_cover_every_phone():
    assert uniform_spans(6, 3) == [(0, 2), (2, 4), (4, 6)]
    spans = uniform_spans(2, 5)          # fewer frames than phones: overlapping 1-frame spans
    assert len(spans) == 5 and all(e - s == 1 and 0 <= s < 2 for s, e in spans)
    assert uniform_spans(0, 2) == [(0, 0), (0, 0)]
    feats = gop_features(np.zeros((0, 40)), [1, 2], uniform_spans(0, 2))
    np.testing.assert_allclose(feats, [[-math.log(40), 0, 0]] * 2)


# -- bootstrap ---------------------------------------------------------------------------------
def _mean_ci(n_speakers: int, units_per_speaker: int = 1, seed: int = 0, reps: int = 1000):
    rng = np.random.default_rng(seed + n_speakers)
    spk_values = rng.normal(0.0, 1.0, size=n_speakers)            # truth: mean 0, sd 1
    values = np.repeat(spk_values, units_per_speaker)
    speakers = np.repeat([f"S{i}" for i in range(n_speakers)], units_per_speaker)
    cis, undefined = speaker_bootstrap({"u": speakers}, lambda ix: {"mean": values[ix["u"]].mean()}, n=reps, seed=seed)
    assert undefined == {"mean": 0}
    return cis["mean"]


def test_bootstrap_ci_has_the_known_width_contains_truth_and_shrinks_with_sqrt_n():
    lo1, hi1 = _mean_ci(100)
    lo4, hi4 = _mean_ci(400)
    assert lo1 < 0 < hi1 and lo4 < 0 < hi4
    assert hi1 - lo1 == pytest.approx(2 * 1.96 / math.sqrt(100), rel=0.2)
    assert (hi1 - lo1) / (hi4 - lo4) == pytest.approx(2.0, rel=0.2)


def test_bootstrap_resamples_speakers_not_units():
    # 40 speakers x 25 identical units: the CI must be as wide as for 40 values, not 1000
    lo, hi = _mean_ci(40, units_per_speaker=25)
    assert hi - lo == pytest.approx(2 * 1.96 / math.sqrt(40), rel=0.25)
    assert _mean_ci(40, units_per_speaker=25) == [lo, hi]          # fixed seed: reproducible


def test_bootstrap_counts_undefined_replicates():
    speakers = np.array(["A", "B", "C"])
    labels = np.array([True, False, False])
    cis, undefined = speaker_bootstrap({"u": speakers}, lambda ix: {"auc": M.auc(labels[ix["u"]], ix["u"])}, n=200)
    assert 0 < undefined["auc"] < 200


def test_gop_matches_a_direct_per_phone_loop_and_spans_match_merge_tokens():
    rng = np.random.default_rng(3)
    for trial in range(20):
        T = int(rng.integers(8, 40))
        logits = rng.normal(0, 2, (T, 40))
        lp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        ids = [int(x) for x in rng.integers(1, 40, size=int(rng.integers(1, 5)))]
        spans = forced_align(lp, ids)
        emission = torch.from_numpy(lp.astype(np.float32))[None]
        labels, scores = TAF.forced_align(emission, torch.tensor([ids], dtype=torch.int32))
        ref_spans = TAF.merge_tokens(labels[0], scores[0].exp())
        assert spans == [(s.start, s.end) for s in ref_spans]
        for sp in (spans, uniform_spans(T, len(ids)), uniform_spans(2, len(ids))):
            feats = gop_features(lp, ids, sp)
            for k, (p, (s, e)) in enumerate(zip(ids, sp)):
                comp = [max(lp[t, q] for q in range(1, 40) if q != p) for t in range(s, e)]
                assert feats[k, 0] == pytest.approx(np.mean(lp[s:e, p]))
                assert feats[k, 1] == pytest.approx(np.mean(lp[s:e, p] - np.array(comp)))
                assert feats[k, 2] == e - s
