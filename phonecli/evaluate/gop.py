"""Goodness-of-pronunciation (GOP) features of aligned phones.

For a phone ``p`` aligned to frames ``[s, e)`` of natural-log posteriors ``lp (frames, 40)``:

- ``lpp``  = mean over the span of ``lp[t, p]`` (the raw GOP score reported as ``gop``);
- ``lpr``  = mean over the span of ``lp[t, p] - max_{q not in {blank, p}} lp[t, q]``
  (log posterior ratio against the best competing phone; blank is not a competitor because
  CTC spends most frames on it whatever was said);
- ``duration`` = ``e - s`` frames.

A phone with an empty span (an utterance with no frames) gets the "no evidence" values of a
uniform posterior: ``lpp = -log(40)``, ``lpr = 0``, ``duration = 0``.
"""

from __future__ import annotations

import math

import numpy as np

FEATURES = ("lpp", "lpr", "duration")


def gop_features(log_probs: np.ndarray, ids: list[int], spans: list[tuple[int, int]]) -> np.ndarray:
    """``(phones, 3)`` float64 array of ``lpp, lpr, duration`` (see module docstring).

    Vectorised over all phones of the utterance (one gather + segment sums) because it runs
    for every phone of the corpus; spans may overlap (the uniform fallback).
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    n_vocab = lp.shape[1]
    ids_a = np.asarray(ids, dtype=np.int64)
    starts = np.asarray([s for s, _ in spans], dtype=np.int64)
    dur = np.asarray([max(e - s, 0) for s, e in spans], dtype=np.int64)
    out = np.zeros((len(ids), 3), dtype=np.float64)
    out[:, 0] = -math.log(n_vocab)
    out[:, 2] = dur
    if len(ids) == 0 or dur.sum() == 0:
        return out
    # best and second-best phone (not blank) per frame: the competitor of p is the best
    # unless p is the best itself
    phones = lp[:, 1:]
    top2 = np.argpartition(-phones, 1, axis=1)[:, :2] if phones.shape[1] > 1 else np.zeros((len(lp), 2), np.int64)
    v = np.take_along_axis(phones, top2, axis=1)
    swap = v[:, 1] > v[:, 0]
    best_id = np.where(swap, top2[:, 1], top2[:, 0]) + 1
    best = np.maximum(v[:, 0], v[:, 1])
    second = np.minimum(v[:, 0], v[:, 1])
    seg = np.repeat(np.arange(len(ids)), dur)                     # phone of each gathered frame
    frames = np.arange(dur.sum()) - np.repeat(np.cumsum(dur) - dur, dur) + np.repeat(starts, dur)
    p = ids_a[seg]
    own = lp[frames, p]
    comp = np.where(best_id[frames] == p, second[frames], best[frames])
    has = dur > 0
    sums_own = np.bincount(seg, weights=own, minlength=len(ids))
    sums_ratio = np.bincount(seg, weights=own - comp, minlength=len(ids))
    out[has, 0] = sums_own[has] / dur[has]
    out[has, 1] = sums_ratio[has] / dur[has]
    return out
