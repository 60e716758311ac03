"""CTC forced alignment of canonical phones over a run's log-posteriors (torchaudio).

A CTC path for ``L`` labels needs ``L + R`` frames, ``R`` = number of adjacent repeated
labels (a blank must separate them). Utterances with fewer frames cannot be aligned; the
caller gets ``None`` and uses :func:`uniform_spans` as the documented fallback.
"""

from __future__ import annotations

import numpy as np


def min_frames(ids: list[int]) -> int:
    """Frames a CTC path needs for ``ids``: labels plus adjacent repeats."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


def forced_align(log_probs: np.ndarray, ids: list[int], blank: int = 0) -> list[tuple[int, int]] | None:
    """Viterbi CTC alignment: one ``(start, end)`` frame span (end exclusive) per label.

    ``log_probs``: ``(frames, vocab)`` float log-posteriors; ``ids``: label ids (no blank).
    Returns ``None`` when the utterance is too short for its labels (see module docstring)
    or has no labels. Frames aligned to blank belong to no phone.
    """
    import torch
    import torchaudio.functional as F

    lp = np.asarray(log_probs, dtype=np.float32)
    if not ids or lp.shape[0] < min_frames(ids):
        return None
    emission = torch.from_numpy(np.ascontiguousarray(lp))[None]
    targets = torch.tensor([ids], dtype=torch.int32)
    labels, scores = F.forced_align(emission, targets, blank=blank)
    spans = F.merge_tokens(labels[0], scores[0].exp(), blank=blank)
    if len(spans) != len(ids) or any(s.token != t for s, t in zip(spans, ids)):
        # merge_tokens splits runs at label changes only; a mismatch would mean the aligner
        # broke its contract, which must not silently mis-assign frames
        raise RuntimeError(f"forced alignment returned {len(spans)} spans for {len(ids)} labels")
    return [(int(s.start), int(s.end)) for s in spans]


def uniform_spans(frames: int, n: int) -> list[tuple[int, int]]:
    """Fallback segmentation: ``n`` equal consecutive spans over ``frames`` frames.

    When ``frames < n`` spans overlap so every phone still gets one frame; with no frames
    at all every span is empty ``(0, 0)``.
    """
    if frames <= 0:
        return [(0, 0)] * n
    out = []
    for i in range(n):
        s = min(int(np.floor(i * frames / n)), frames - 1)
        e = max(int(np.floor((i + 1) * frames / n)), s + 1)
        out.append((s, e))
    return out
