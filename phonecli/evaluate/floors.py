"""Floors: what a predictor with NO audio evidence scores on each protocol, and every number's margin.

A phone-level PCC of 0.5 means little if phone identity alone gets 0.45. Every evaluation
therefore scores, on the same test utterances/phones and through the protocol's own fit (dev or
train) and score (test) functions, predictors that never see the audio:

Seed protocol (utterance level)
  - ``all_blank``: the empty output for every utterance (Task A: PER 100).
  - ``most_frequent_phone``: the train split's most frequent canonical phone, once per canonical
    phone of the utterance (the best PER any constant-phone output reaches: substitutions only).
  - ``no_audio``: Tasks B/C from a regressor of utterance accuracy fit on TRAIN utterances on
    features known without listening: phone count, word count, utterance length in seconds and
    seconds per phone (file metadata, never a sample value), the train mean phone accuracy of
    its canonical phones (mean and minimum: the phone-identity prior) and its phone histogram.
    Its predicted accuracy stands in for PER_utt (``100 * (1 - accuracy/10)``) in the seed
    protocol's Pearson / AUC / dev-chosen threshold.

Phone protocol
  - ``no_audio``: the phone protocol's own regressor (same model, same fit split, same
    dev-chosen MDD threshold) on no-audio phone features: the phone-identity prior (train mean
    human accuracy of the phone; also the floor's raw "GOP"), position in the utterance
    (absolute, relative), position in the word, word and utterance length in phones, seconds per
    phone of the utterance, plus the phone one-hot the real regressor also gets.

``margins`` pairs each headline number with its floor: ``margin`` > 0 means better than the
floor (for PER: floor minus value). :func:`protocol_floor` and :func:`margins` are generic: a new
protocol passes its own fit/score functions and a no-audio input (see the MDD protocol).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Callable

import numpy as np

from phonecli.data.phones import PHONE_TO_ID, PHONES
from phonecli.evaluate import phone_protocol, seed_protocol

#: Seed protocol: (metric, floor it is compared with, lower is better)
SEED_MARGINS = (("per_hq", "most_frequent_phone", True), ("per_all", "most_frequent_phone", True),
                ("pearson", "no_audio", False), ("spearman", "no_audio", False), ("auc", "no_audio", False),
                ("f1", "no_audio", False))
#: Phone protocol: every headline metric against the no-audio predictor
PHONE_MARGINS = tuple((m, "no_audio", False) for m in ("pcc_gop", "pcc_regressor", "mdd_auc", "mdd_auc_gop",
                                                       "mdd_f1", "utt_pcc"))


def protocol_floor(fit: Callable, score: Callable, dev_input, test_input) -> dict[str, float]:
    """A protocol's own ``fit(dev_input)`` and ``score(test_input, fitted)`` on a floor predictor's inputs."""
    return score(test_input, fit(dev_input))


def margins(values: dict, floors: dict[str, dict], spec) -> dict[str, dict]:
    """``{metric: {"floor": name, "value": floor value, "margin": better-by}}`` for ``spec``'s metrics.

    ``spec``: ``(metric, floor name, lower_is_better)`` triples. ``margin`` is None when either
    number is undefined (NaN/None).
    """
    out = {}
    for metric, name, lower in spec:
        if metric not in values or name not in floors or metric not in floors[name]:
            continue
        v, f = values[metric], floors[name][metric]
        ok = all(x is not None and np.isfinite(x) for x in (v, f))
        out[metric] = {"floor": name, "value": f, "margin": (f - v if lower else v - f) if ok else None}
    return out


# ------------------------------------------------------------------------------ priors fit on train
def phone_priors(train_utts) -> tuple[np.ndarray, float]:
    """Train mean human accuracy per phone id (index = vocabulary id; unseen phones: the overall mean)."""
    sums = np.zeros(len(PHONES) + 1)
    counts = np.zeros(len(PHONES) + 1)
    for u in train_utts:
        for p, a in zip(u.canonical_phones, u.phone_accuracy):
            sums[PHONE_TO_ID[p]] += a
            counts[PHONE_TO_ID[p]] += 1
    overall = float(sums.sum() / counts.sum()) if counts.sum() else 2.0
    prior = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
    return prior, overall


def most_frequent_phone(train_utts) -> str:
    """The train split's most frequent canonical phone (ties: alphabetical)."""
    c = Counter(p for u in train_utts for p in u.canonical_phones)
    return min(c, key=lambda p: (-c[p], p)) if c else PHONES[0]


# ------------------------------------------------------------------------------ seed protocol
def _utterance_features(u, prior: np.ndarray) -> np.ndarray:
    ids = [PHONE_TO_ID[p] for p in u.canonical_phones]
    n = max(len(ids), 1)
    hist = np.bincount(np.asarray(ids, dtype=np.int64), minlength=len(PHONES) + 1)[1:] / n
    pr = prior[ids] if ids else np.array([prior.mean()])
    return np.concatenate([[len(ids), len(u.words), u.duration, u.duration / n, pr.mean(), pr.min()], hist])


def _regress(x_fit: np.ndarray, y_fit: np.ndarray, seed: int):
    with phone_protocol._one_thread():
        return phone_protocol._regressor(seed).fit(x_fit, y_fit)


def _pseudo_table(table: seed_protocol.UttTable, per: np.ndarray) -> seed_protocol.UttTable:
    """The same utterances with ``per_utt`` replaced by ``per`` (expected edits per reference phone)."""
    ref = np.maximum(table.ref_len, 1)
    return replace(table, edits=per / 100.0 * ref, ref_len=ref)


def seed_floors(manifest, dev: seed_protocol.UttTable, test: seed_protocol.UttTable, seed: int = 0) -> dict:
    """``{"all_blank", "most_frequent_phone", "no_audio"}`` seed-protocol metrics on ``test``'s utterances."""
    train = manifest.split("train")
    rows = lambda t, hyp: [{"utt_id": u, "speaker": s, "accuracy": a, "ref": manifest[u].canonical_phones,  # noqa: E731
                            "hyp": hyp(manifest[u])} for u, s, a in zip(t.utt_ids, t.speakers, t.accuracy)]

    def constant(hyp) -> dict:
        d, t = seed_protocol.UttTable.build(rows(dev, hyp)), seed_protocol.UttTable.build(rows(test, hyp))
        return protocol_floor(seed_protocol.fit, lambda x, f: seed_protocol.score(x, f, oracle=False), d, t)

    mfp = most_frequent_phone(train)
    out = {"all_blank": {"description": "empty output for every utterance", **constant(lambda u: [])},
           "most_frequent_phone": {"description": f"the train split's most frequent phone ({mfp}) once per "
                                                  "canonical phone", "phone": mfp,
                                   **constant(lambda u: [mfp] * len(u.canonical_phones))}}
    if len(train) >= 2:
        prior, _ = phone_priors(train)
        x_fit = np.stack([_utterance_features(u, prior) for u in train])
        model = _regress(x_fit, np.asarray([u.accuracy for u in train], dtype=np.float64), seed)

        def pseudo(t: seed_protocol.UttTable) -> seed_protocol.UttTable:
            x = np.stack([_utterance_features(manifest[u], prior) for u in t.utt_ids]) if t.utt_ids else x_fit[:0]
            with phone_protocol._one_thread():
                acc = np.clip(model.predict(x), 0.0, 10.0) if len(x) else np.zeros(0)
            return _pseudo_table(t, 100.0 * (1.0 - acc / 10.0))

        flat = protocol_floor(seed_protocol.fit, lambda x, f: seed_protocol.score(x, f, oracle=False),
                              pseudo(dev), pseudo(test))
        out["no_audio"] = {"description": "utterance accuracy regressed on train from phone counts, length, "
                                          "seconds per phone and phone-identity priors (no audio)",
                           **{k: flat[k] for k in ("pearson", "spearman", "auc", "f1", "precision", "recall")}}
    return out


# ------------------------------------------------------------------------------ phone protocol
def no_audio_phone_table(t: phone_protocol.PhoneTable, manifest, prior: np.ndarray) -> phone_protocol.PhoneTable:
    """``t``'s phones (same order) with no-audio features; column 0 (the floor's "GOP") = phone prior."""
    feats = np.zeros((len(t), 7))
    row = 0
    for utt_id in t.utt_order:
        u = manifest[utt_id]
        n = len(u.canonical_phones)
        k = 0
        for w in u.words:
            for j, p in enumerate(w.phones):
                feats[row] = [prior[PHONE_TO_ID[p]], k, k / max(n - 1, 1), j, len(w.phones), n,
                              u.duration / max(n, 1)]
                row += 1
                k += 1
    assert row == len(t), "phone table and manifest disagree"  # build_table takes every canonical phone
    return replace(t, features=feats)


def phone_floors(manifest, tables: dict[str, phone_protocol.PhoneTable], fit_on: str, seed: int = 0) -> dict:
    """``{"no_audio": metrics}``: the phone protocol's regressor, threshold and scores on no-audio features.

    ``fit_on`` mirrors the real regressor (``"train"`` or ``"dev-crossfit"``) so both saw the same data.
    """
    prior, _ = phone_priors(manifest.split("train"))
    floor = {s: no_audio_phone_table(t, manifest, prior) for s, t in tables.items()}
    train = floor.get("train") if fit_on == "train" else None
    fitted = phone_protocol.fit(train, floor["dev"], seed=seed)
    test = floor["test"]
    scores = fitted.predict(test)
    flat = phone_protocol.score(test, scores, phone_protocol.utterance_means(test, scores), fitted)
    return {"no_audio": {"description": "the phone protocol's regressor on phone identity prior, position in "
                                        "word/utterance, lengths and seconds per phone (no audio); its raw "
                                        "score (pcc_gop, mdd_auc_gop) is the phone-identity prior",
                         "fit_on": fitted.fit_on, **flat}}


def attach(block: dict, flat: dict, floors: dict, spec) -> dict:
    """Add ``floors`` and their ``margins`` (see :func:`margins`) to a protocol's metrics block."""
    block["floors"] = floors
    block["margins"] = margins(flat, floors, spec)
    return block


# ------------------------------------------------------------------------------ per protocol (other corpora)
PER_MARGINS = (("per_test", "most_frequent_phone", True),)


def per_floors(test_refs: list[list[str]], train_refs: list[list[str]]) -> dict:
    """PER protocol floors on the (folded) test references: the empty output and the train split's most
    frequent (folded) reference phone once per reference phone, through the same edit distance."""
    from phonecli.ctc import edit_distance

    total = sum(len(r) for r in test_refs)
    counts = Counter(p for r in train_refs for p in r) or Counter(p for r in test_refs for p in r)
    mfp = min(counts, key=lambda p: (-counts[p], p)) if counts else ""
    mfp_edits = sum(edit_distance(r, [mfp] * len(r)) for r in test_refs)
    nan = float("nan")
    return {"all_blank": {"description": "empty output for every utterance", "per_test": 100.0 if total else nan},
            "most_frequent_phone": {"description": f"the train split's most frequent phone ({mfp}) once per "
                                                   "reference phone", "phone": mfp,
                                    "per_test": 100.0 * mfp_edits / total if total else nan}}
