"""Scalar metrics shared by both protocols: correlations, AUC, dev-chosen thresholds.

Threshold selection and threshold scoring are separate functions on purpose: protocols call
:func:`select_threshold` with dev data only and pass the result to :func:`prf_at` for test,
so a test label can never move a threshold.
"""

from __future__ import annotations

import math

import numpy as np


def _finite(x: float) -> float:
    return float(x) if x is not None and math.isfinite(float(x)) else float("nan")


def pearson(x, y) -> float:
    """Pearson r; NaN when fewer than 2 points or either side is constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    # elementwise sums, not np.dot: BLAS threads spin-wait on a busy machine (19 ms vs 0.1 ms
    # per call for 26k phones under load), and the bootstrap calls this thousands of times
    return _finite((xc * yc).sum() / math.sqrt((xc * xc).sum() * (yc * yc).sum()))


def spearman(x, y) -> float:
    """Spearman rho (Pearson of average ranks); NaN when undefined."""
    from scipy.stats import rankdata

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return float("nan")
    return pearson(rankdata(x), rankdata(y))


def auc(labels, scores) -> float:
    """AUC-ROC as the Mann-Whitney U statistic with average ranks for ties (equal to sklearn's
    ``roc_auc_score``; tested). Written with ranks because the bootstrap calls it thousands of
    times and sklearn's input validation dominated that loop. NaN when one class is absent."""
    from scipy.stats import rankdata

    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return _finite((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def select_threshold(labels, scores) -> float:
    """The threshold maximising F1 when predicting positive for ``score >= threshold``.

    Candidates are the distinct observed scores; ties go to the lowest such threshold.
    NaN when the data has no positive (F1 undefined). Vectorised (sorted cumulative counts)
    for the bootstrap loop; the tests check it against sklearn's ``f1_score`` at every
    candidate.
    """
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True]          # end of each run of equal scores
    tp, fp, thr = tp[last], fp[last], s[last]     # predicting positive for score >= thr
    f1 = 2 * tp / (tp + fp + n_pos)
    best = np.flatnonzero(f1 == f1.max())
    return float(thr[best[-1]])                   # thresholds descend: last = lowest


def prf_at(labels, scores, threshold: float) -> dict[str, float]:
    """Precision, recall and F1 of ``score >= threshold`` (NaN threshold -> all NaN).

    Precision with no predicted positive is 0 (sklearn's ``zero_division=0``).
    """
    labels = np.asarray(labels, dtype=bool)
    if not math.isfinite(threshold) or len(labels) == 0:
        return {"precision": float("nan"), "recall": float("nan"), "f1": float("nan")}
    pred = np.asarray(scores, dtype=np.float64) >= threshold
    tp = int(np.sum(pred & labels))
    fp = int(np.sum(pred & ~labels))
    fn = int(np.sum(~pred & labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1}


def oracle_f1(labels, scores) -> float:
    """Best F1 over thresholds swept on the SAME data (the seed's test-swept F1; an oracle)."""
    t = select_threshold(labels, scores)
    return prf_at(labels, scores, t)["f1"]
