"""Greedy CTC decoding and phone error rate (the dev criterion of the probe loop)."""

from __future__ import annotations

import numpy as np


def greedy_ids(log_probs) -> list[int]:
    """``(frames, vocab)`` log-posteriors (numpy or torch) -> phone ids: argmax, collapse repeats, drop blank 0."""
    best = np.asarray(log_probs.argmax(-1).tolist() if hasattr(log_probs, "detach") else log_probs.argmax(-1))
    if best.size == 0:
        return []
    keep = np.ones(best.shape[0], dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(i) for i in best[keep] if i != 0]


def phone_error_rate(refs: list[list[int]], hyps: list[list[int]]) -> float:
    """Corpus PER in percent: total Levenshtein edits / total reference phones * 100.

    Edit distance from ``torchaudio.functional.edit_distance`` (an independent, tested
    implementation; evaluation uses the same definition).
    """
    from torchaudio.functional import edit_distance

    total = sum(len(r) for r in refs)
    if total == 0:
        raise ValueError("PER is undefined: every reference phone sequence is empty")
    return 100.0 * sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / total


def ctc_min_frames(target: list[int]) -> int:
    """Frames CTC needs to emit ``target``: one per label plus one blank between equal neighbours."""
    return len(target) + sum(1 for a, b in zip(target, target[1:]) if a == b)
