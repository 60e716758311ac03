"""Greedy (best-path) CTC decoding of a run's log-posteriors into phone sequences."""

from __future__ import annotations

import numpy as np

from phonecli.data.phones import VOCAB


def greedy_ids(log_probs: np.ndarray, blank: int = 0) -> list[int]:
    """Best-path CTC decoding: argmax per frame, merge repeats, drop blanks.

    ``log_probs``: ``(frames, vocab)`` float log-posteriors. Returns vocabulary ids (1..39).
    A label repeated across a blank frame (``A _ A``) stays two labels, as CTC defines.
    """
    lp = np.asarray(log_probs)
    if lp.ndim != 2:
        raise ValueError(f"log-posteriors must be (frames, vocab), got shape {lp.shape}")
    if lp.shape[0] == 0:
        return []
    best = lp.argmax(axis=1)
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(i) for i in best[keep] if i != blank]


def greedy_decode(log_probs: np.ndarray, vocab=None) -> list[str]:
    """``(frames, len(vocab))`` log-posteriors -> phones (``vocab`` symbols, index 0 = blank;
    default: SpeechOcean762's ``VOCAB``)."""
    symbols = VOCAB if vocab is None else vocab
    return [symbols[i] for i in greedy_ids(log_probs)]
