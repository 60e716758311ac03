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
    """``(phones, 3)`` float64 array of ``lpp, lpr, duration`` (see module docstring)."""
    lp = np.asarray(log_probs, dtype=np.float64)
    vocab = lp.shape[1]
    out = np.zeros((len(ids), 3), dtype=np.float64)
    for k, (p, (s, e)) in enumerate(zip(ids, spans)):
        if e <= s:
            out[k] = (-math.log(vocab), 0.0, 0.0)
            continue
        seg = lp[s:e]
        competitors = seg.copy()
        competitors[:, 0] = -np.inf
        competitors[:, p] = -np.inf
        out[k, 0] = seg[:, p].mean()
        out[k, 1] = (seg[:, p] - competitors.max(axis=1)).mean()
        out[k, 2] = e - s
    return out
