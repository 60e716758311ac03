"""CTC forced alignment of canonical phones over a run's log-posteriors (torchaudio).

A CTC path for ``L`` labels needs ``L + R`` frames, ``R`` = number of adjacent repeated
labels (a blank must separate them; :func:`phonecli.ctc.min_frames`). Utterances with fewer
frames cannot be aligned; the caller gets ``None`` and uses :func:`uniform_spans` as the
documented fallback.
"""

from __future__ import annotations

import numpy as np

from phonecli import ctc


def forced_align(log_probs: np.ndarray, ids: list[int], blank: int = 0) -> list[tuple[int, int]] | None:
    """Viterbi CTC alignment: one ``(start, end)`` frame span (end exclusive) per label.

    ``log_probs``: ``(frames, vocab)`` float log-posteriors; ``ids``: label ids (no blank).
    Returns ``None`` when the utterance is too short for its labels (see module docstring)
    or has no labels. Frames aligned to blank belong to no phone.
    """
    import torch
    import torchaudio.functional as F

    lp = np.asarray(log_probs, dtype=np.float32)
    if not ctc.feasible(ids, lp.shape[0]):
        return None
    emission = torch.from_numpy(np.ascontiguousarray(lp))[None]
    targets = torch.tensor([ids], dtype=torch.int32)
    labels, _ = F.forced_align(emission, targets, blank=blank)
    path = labels[0].numpy()
    # runs of one non-blank label = one token (CTC puts a blank between equal neighbours);
    # the same spans as torchaudio's merge_tokens, without its per-span score tensors
    change = np.flatnonzero(np.r_[True, path[1:] != path[:-1]])
    ends = np.r_[change[1:], len(path)]
    keep = path[change] != blank
    starts, ends, tokens = change[keep], ends[keep], path[change][keep]
    if len(tokens) != len(ids) or (tokens != np.asarray(ids)).any():
        # a mismatch would mean the aligner broke its contract: never mis-assign frames silently
        raise RuntimeError(f"forced alignment returned {len(tokens)} spans for {len(ids)} labels")
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


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
