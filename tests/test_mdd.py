"""MDD counting (phonecli.evaluate.mdd) against hand-computed cases and an independent alignment
(rapidfuzz's Levenshtein opcodes), the floors, and the mdd/per protocols of `phonecli evaluate`."""

from __future__ import annotations

import random

import numpy as np
import pytest
from rapidfuzz.distance import Levenshtein

from phonecli.data.manifest import AnnotatedPhone as A
from phonecli.evaluate import mdd
from phonecli.evaluate.per import DEL


def ann(*units):
    """("K",) correct; ("K", "D") substitution; ("K", "") deletion; ("", "AH") addition; 4th: distorted."""
    out = []
    for u in units:
        if len(u) == 1:
            out.append(A(u[0], u[0], "correct"))
        elif u[0] == "":
            out.append(A("", u[1], "addition"))
        elif u[1] == "":
            out.append(A(u[0], "", "deletion"))
        else:
            out.append(A(u[0], u[1], "substitution", distorted=len(u) > 2))
    return out


# TA, FR, FA, CD, DE worked out by hand from the definitions in the module docstring
HAND = [
    # all correct, recognised exactly: 3 TA
    (ann(("W",), ("IY",), ("K",)), ["W", "IY", "K"], [3, 0, 0, 0, 0]),
    # a correct phone recognised as another: FR
    (ann(("W",), ("IY",), ("K",)), ["W", "IH", "K"], [2, 1, 0, 0, 0]),
    # substitution K->D: recognised D = CD; recognised K = FA; recognised T = DE; nothing = DE
    (ann(("W",), ("K", "D"), ("AO",)), ["W", "D", "AO"], [2, 0, 0, 1, 0]),
    (ann(("W",), ("K", "D"), ("AO",)), ["W", "K", "AO"], [2, 0, 1, 0, 0]),
    (ann(("W",), ("K", "D"), ("AO",)), ["W", "T", "AO"], [2, 0, 0, 0, 1]),
    (ann(("W",), ("K", "D"), ("AO",)), ["W", "AO"], [2, 0, 0, 0, 1]),
    # deletion of L: nothing there = CD; L = FA; R = DE
    (ann(("B",), ("EH",), ("L", "")), ["B", "EH"], [2, 0, 0, 1, 0]),
    (ann(("B",), ("EH",), ("L", "")), ["B", "EH", "L"], [2, 0, 1, 0, 0]),
    (ann(("B",), ("EH",), ("L", "")), ["B", "EH", "R"], [2, 0, 0, 0, 1]),
    # addition of AH after B: inserted AH = CD; nothing = FA; IH inserted = DE
    (ann(("B",), ("", "AH"), ("L",), ("UW",)), ["B", "AH", "L", "UW"], [3, 0, 0, 1, 0]),
    (ann(("B",), ("", "AH"), ("L",), ("UW",)), ["B", "L", "UW"], [3, 0, 1, 0, 0]),
    (ann(("B",), ("", "AH"), ("L",), ("UW",)), ["B", "IH", "L", "UW"], [3, 0, 0, 0, 1]),
    # a distortion of the canonical phone counts as correct; "err" can never be diagnosed
    (ann(("S",), ("IY", "IY", "*"), ("T",)), ["S", "IY", "T"], [3, 0, 0, 0, 0]),
    (ann(("S",), ("IY", "err"), ("T",)), ["S", "IH", "T"], [2, 0, 0, 0, 1]),
    (ann(("S",), ("IY", "err"), ("T",)), ["S", "IY", "T"], [2, 0, 1, 0, 0]),
    # a spurious insertion where nobody annotated an addition is no unit (it is a PER insertion)
    (ann(("S",), ("IY",), ("T",)), ["S", "IY", "T", "T"], [3, 0, 0, 0, 0]),
]


@pytest.mark.parametrize("annotation,recognized,counts", HAND)
def test_counts_match_hand_computed_cases(annotation, recognized, counts):
    assert mdd.count(annotation, recognized).tolist() == counts


def test_rates_follow_the_hierarchy_definitions():
    # TA 70, FR 10, FA 5, CD 12, DE 3 -> TR 15
    m = mdd.metrics([70, 10, 5, 12, 3])
    assert m["precision"] == pytest.approx(15 / 25) and m["recall"] == pytest.approx(15 / 20)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert m["diagnosis_accuracy"] == pytest.approx(12 / 15) and m["diagnosis_error_rate"] == pytest.approx(3 / 15)
    assert m["frr"] == pytest.approx(10 / 80) and m["far"] == pytest.approx(5 / 20)
    assert m["detection_accuracy"] == pytest.approx(85 / 100)
    accept = mdd.metrics([80, 0, 20, 0, 0])
    assert accept["recall"] == 0 and accept["f1"] == 0 and np.isnan(accept["precision"])


def rapidfuzz_aligner(canonical, recognized):
    """The alignment contract of mdd.alignment built from rapidfuzz's Levenshtein opcodes (not phonecli's)."""
    aligned = [DEL] * len(canonical)
    inserted = [[] for _ in range(len(canonical) + 1)]
    for op in Levenshtein.opcodes(canonical, recognized):
        if op.tag in ("equal", "replace"):
            for k in range(op.src_end - op.src_start):
                aligned[op.src_start + k] = recognized[op.dest_start + k]
        elif op.tag == "insert":
            inserted[op.src_start].extend(recognized[op.dest_start:op.dest_end])
    return aligned, inserted


def _random_case(rng: random.Random):
    """Canonical phones all distinct, errors isolated between correct phones and spelled with phones
    from outside the utterance, so the minimum-edit alignment is unique and any correct aligner agrees."""
    pool = [f"P{i}" for i in range(40)]
    rng.shuffle(pool)
    n = rng.randint(6, 12)
    canon, others = pool[:n], iter(pool[n:])
    units, recog = [], []
    exact = False                     # was the previous unit a correct phone recognised as itself?
    for i, c in enumerate(canon):
        kind = rng.choice(["c", "c", "s", "d", "a", "fr"]) if exact and i < n - 1 else "c"
        truth = rng.choice(["right", "canonical", "other"])
        exact = False
        if kind == "s":
            p = next(others)
            units.append(A(c, p, "substitution"))
            recog.append({"right": p, "canonical": c, "other": next(others)}[truth])
        elif kind == "d":
            units.append(A(c, "", "deletion"))
            if truth != "right":
                recog.append(c if truth == "canonical" else next(others))
        elif kind == "a":
            p = next(others)
            units.append(A("", p, "addition"))
            if truth != "canonical":
                recog.append(p if truth == "right" else next(others))
            units.append(A(c, c, "correct"))
            recog.append(c)
        elif kind == "fr":
            units.append(A(c, c, "correct"))
            recog.append(next(others))
        else:
            units.append(A(c, c, "correct"))
            recog.append(c)
            exact = True
    return units, recog


def test_counts_equal_those_from_an_independent_alignment():
    rng = random.Random(7)
    totals = np.zeros(5, np.int64)
    for _ in range(300):
        units, recog = _random_case(rng)
        ours = mdd.count(units, recog)
        theirs = mdd.count(units, recog, aligner=rapidfuzz_aligner)
        assert ours.tolist() == theirs.tolist(), (units, recog)
        totals += ours
    assert (totals > 0).all()              # every outcome occurred


def test_floors_accept_all_and_text_prior():
    train = [ann(("TH", "S"), ("IH",), ("NG", "N")), ann(("TH", "S"), ("AE",)), ann(("TH",), ("IY",))]
    dev = [ann(("TH", "S"), ("IY",)), ann(("TH",), ("AO",), ("NG", "N"))]
    test = ann(("TH", "S"), ("IH",), ("NG",))
    assert mdd.count(test, mdd.accept_all(test)).tolist() == [2, 0, 1, 0, 0]
    prior = mdd.fit_text_prior(train, dev)
    assert prior.rate == {"TH": 2 / 3, "NG": 1.0} and prior.realization == {"TH": "S", "NG": "N"}
    # on dev, predicting TH->S and NG->N gets F1 0.8 (threshold 2/3) vs 0.67 (only NG at threshold 1)
    assert prior.threshold == pytest.approx(2 / 3)
    assert prior.recognize(test) == ["S", "IH", "N"]
    assert mdd.count(test, prior.recognize(test)).tolist() == [1, 1, 0, 1, 0]
