"""Mispronunciation detection and diagnosis (MDD) from recognised phones, the L2-ARCTIC way.

Units are the annotation's phones (:class:`~phonecli.data.manifest.AnnotatedPhone`): every
canonical phone (pronounced correctly, substituted or deleted) and every added phone. The
recognised sequence (greedy CTC output) is aligned with the canonical sequence by minimum edit
distance (:func:`phonecli.evaluate.per.align`); the annotation itself aligns canonical and
perceived phones, so each canonical phone gets the recognised phone aligned to it (or none),
and each gap between canonical phones gets the recognised phones inserted there. Then, in the
hierarchy of Li, Qian & Meng (2017, "Mispronunciation detection and diagnosis in L2 English
speech using multidistribution deep neural networks", IEEE/ACM TASLP 25(1):193-207), which the
L2-ARCTIC MDD papers report (e.g. Fu et al. 2021, arXiv:2104.08428):

* correctly pronounced phone: true acceptance (TA) if recognised as itself, else false
  rejection (FR);
* substituted phone: recognised as the perceived phone -> true rejection with correct diagnosis
  (CD); as the canonical phone -> false acceptance (FA); otherwise (another phone, or nothing)
  -> true rejection with diagnosis error (DE);
* deleted phone: nothing recognised there -> CD; the canonical phone -> FA; another phone -> DE;
* added phone: the perceived phone inserted in its gap -> CD; nothing inserted -> FA; another
  phone inserted -> DE.

TR = CD + DE. Precision = TR / (TR + FR), recall = TR / (TR + FA), F1 their harmonic mean,
diagnosis accuracy = CD / TR (diagnosis error rate = DE / TR), FRR = FR / (TA + FR), FAR =
FA / (FA + TR), detection accuracy = (TA + TR) / all units. A distorted phone (``X*`` of the
canonical X) counts as correctly pronounced and ``err`` (no phone symbol) can be detected but
never diagnosed correctly, as in Fu et al.'s scoring. Recognised phones inserted where nobody
annotated an addition are no unit (they count in PER). Anchoring on the canonical sequence
makes the floor exact: a recogniser that outputs the canonical phones scores TR = 0.

Floors (what no audio evidence gives): :func:`accept_all` (a recogniser that outputs the
canonical phones: TA + FA only, recall 0, precision undefined) and :func:`text_prior_floor`
(per canonical phone its most frequent train realization, applied where the phone's train error
rate reaches a threshold chosen on dev for F1: text and annotation statistics, no audio).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from phonecli.evaluate.per import DEL, INS, align

COUNTS = ("ta", "fr", "fa", "cd", "de")
UNKNOWN_SOUND = "err"


def is_correct(a) -> bool:
    """A correctly pronounced unit: kind ``correct``, or a distortion of the canonical phone itself."""
    return a.kind == "correct" or (a.kind == "substitution" and a.perceived == a.canonical)


def alignment(canonical: list[str], recognized: list[str]) -> tuple[list[str], list[list[str]]]:
    """Minimum-edit alignment seen from the canonical sequence.

    Returns ``(aligned, inserted)``: ``aligned[i]`` is the recognised phone aligned to canonical
    phone ``i`` (``DEL`` when none); ``inserted[g]`` the recognised phones inserted in gap ``g``
    (before canonical phone ``g``; ``g = len(canonical)`` is the end).
    """
    aligned: list[str] = []
    inserted: list[list[str]] = [[]]
    for r, h in align(canonical, recognized):
        if r == INS:
            inserted[-1].append(h)
        else:
            aligned.append(h)
            inserted.append([])
    return aligned, inserted


def count(annotation, recognized: list[str], aligner=alignment) -> np.ndarray:
    """``[TA, FR, FA, CD, DE]`` (int64) of one utterance (see the module docstring).

    ``aligner(canonical, recognized) -> (aligned, inserted)`` is :func:`alignment` (tests pass
    one built on another edit-distance library).
    """
    canonical = [a.canonical for a in annotation if a.kind != "addition"]
    aligned, inserted = aligner(canonical, list(recognized))
    left = [Counter(g) for g in inserted]
    c = np.zeros(len(COUNTS), dtype=np.int64)
    i = 0                                   # canonical phones seen so far = the gap of an addition
    for a in annotation:
        if a.kind == "addition":
            gap = left[i]
            if gap[a.perceived] > 0:
                gap[a.perceived] -= 1
                c[3] += 1
            elif sum(gap.values()) > 0:
                gap[next(p for p, n in gap.items() if n > 0)] -= 1
                c[4] += 1
            else:
                c[2] += 1
            continue
        h = aligned[i]
        i += 1
        if is_correct(a):
            c[0 if h == a.canonical else 1] += 1
        elif a.kind == "deletion":
            c[3 if h == DEL else 2 if h == a.canonical else 4] += 1
        else:      # substitution by another phone or by "err"
            c[3 if h == a.perceived else 2 if h == a.canonical else 4] += 1
    return c


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def metrics(c) -> dict[str, float]:
    """Rates of summed counts ``[TA, FR, FA, CD, DE]`` (NaN where a denominator is 0)."""
    ta, fr, fa, cd, de = (float(x) for x in c)
    tr = cd + de
    p, r = _div(tr, tr + fr), _div(tr, tr + fa)
    if np.isfinite(p) and np.isfinite(r):
        f1 = _div(2 * p * r, p + r) if p + r else 0.0
    else:        # nothing rejected at all (precision 0/0) with errors present: F1 0, like recall
        f1 = 0.0 if r == 0 else float("nan")
    return {"precision": p, "recall": r, "f1": f1, "diagnosis_accuracy": _div(cd, tr),
            "diagnosis_error_rate": _div(de, tr), "frr": _div(fr, ta + fr), "far": _div(fa, fa + tr),
            "detection_accuracy": _div(ta + tr, ta + fr + fa + tr)}


def accept_all(annotation) -> list[str]:
    """The recognition of a system that accepts everything: the canonical phones, exactly."""
    return [a.canonical for a in annotation if a.kind != "addition"]


@dataclass
class TextPrior:
    """Per canonical phone: train error rate and its most frequent erroneous realization ("" = deleted)."""

    rate: dict[str, float]
    realization: dict[str, str]
    threshold: float = float("inf")

    def recognize(self, annotation) -> list[str]:
        out = []
        for p in accept_all(annotation):
            if self.rate.get(p, 0.0) >= self.threshold:
                q = self.realization[p]
                if q:
                    out.append(q)
            else:
                out.append(p)
        return out


def fit_text_prior(train_annotations, dev_annotations) -> TextPrior | None:
    """Fit :class:`TextPrior` on train annotations, its threshold on dev F1 (ties: the higher threshold)."""
    seen: Counter = Counter()
    errs: dict[str, Counter] = defaultdict(Counter)
    for ann in train_annotations:
        for a in ann:
            if a.kind == "addition":
                continue
            seen[a.canonical] += 1
            if not is_correct(a) and a.perceived != UNKNOWN_SOUND:
                errs[a.canonical][a.perceived] += 1
    if not seen or not errs:
        return None
    prior = TextPrior(rate={p: sum(errs[p].values()) / seen[p] for p in errs},
                      realization={p: errs[p].most_common(1)[0][0] for p in errs})
    best = (-1.0, float("inf"))
    for t in sorted(set(prior.rate.values()) | {float("inf")}, reverse=True):
        prior.threshold = t
        total = sum((count(ann, prior.recognize(ann)) for ann in dev_annotations), np.zeros(len(COUNTS), np.int64))
        f1 = metrics(total)["f1"]
        f1 = f1 if np.isfinite(f1) else -1.0
        if f1 > best[0]:
            best = (f1, t)
    prior.threshold = best[1]
    return prior
