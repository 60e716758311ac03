"""Edit-distance *alignment* of a hypothesis against a reference (which phone became which).

PER itself (edit counts, the empty-reference rule) is :mod:`phonecli.ctc`. The Levenshtein
alignment is written out here (not taken from jiwer/torchaudio) because the report needs the
operations themselves for per-phone error rates and the confusion matrix; jiwer only aligns
whitespace-joined strings and torchaudio's ``edit_distance`` returns only the count. The tests
check that the alignment's edit count equals ``phonecli.ctc.edit_distance`` and jiwer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

DEL = "<del>"   # hypothesis side of a deletion
INS = "<ins>"   # reference side of an insertion


@dataclass(frozen=True)
class EditCounts:
    substitutions: int
    deletions: int
    insertions: int
    ref_len: int

    @property
    def edits(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def _table(ref: Sequence[str], hyp: Sequence[str]) -> np.ndarray:
    n, m = len(ref), len(hyp)
    d = np.zeros((n + 1, m + 1), dtype=np.int64)
    d[:, 0] = np.arange(n + 1)
    d[0, :] = np.arange(m + 1)
    h = np.asarray(hyp, dtype=object)
    for i in range(1, n + 1):
        sub = d[i - 1, :-1] + (h != ref[i - 1])
        row = np.minimum(sub, d[i - 1, 1:] + 1)       # substitution/match vs deletion
        # insertions chain along the row; done in a loop because each depends on its left cell
        out = d[i]
        for j in range(1, m + 1):
            out[j] = min(row[j - 1], out[j - 1] + 1)
    return d


def align(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[str, str]]:
    """Minimum-edit alignment as ``(ref_phone | "<ins>", hyp_phone | "<del>")`` pairs in order.

    Ties prefer match/substitution, then deletion, then insertion (deterministic).
    """
    d = _table(ref, hyp)
    i, j = len(ref), len(hyp)
    pairs: list[tuple[str, str]] = []
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i, j] == d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and d[i, j] == d[i - 1, j] + 1:
            pairs.append((ref[i - 1], DEL))
            i -= 1
        else:
            pairs.append((INS, hyp[j - 1]))
            j -= 1
    pairs.reverse()
    return pairs


def edit_counts(ref: Sequence[str], hyp: Sequence[str]) -> EditCounts:
    s = dl = ins = 0
    for r, h in align(ref, hyp):
        if r == INS:
            ins += 1
        elif h == DEL:
            dl += 1
        elif r != h:
            s += 1
    return EditCounts(s, dl, ins, len(ref))
