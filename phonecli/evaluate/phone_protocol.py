"""The phone protocol (GOPT-style): forced alignment, GOP features, phone scores, MDD.

Definitions (test split unless stated):

- Canonical phones are forced-aligned over the run's log-posteriors (:mod:`.align`); each
  phone gets GOP features ``lpp, lpr, duration`` (:mod:`.gop`). Phones of an utterance too
  short for CTC alignment get the same features over a uniform segmentation (fallback),
  are counted as ``unaligned`` and are kept in every metric.
- ``gop`` = ``lpp`` (mean log posterior of the canonical phone over its frames).
- ``score`` = a scikit-learn ``HistGradientBoostingRegressor`` (early stopping on 10% of the fit split) on ``[lpp, lpr, duration,
  one-hot(phone)]`` predicting the human phone accuracy (0-2, clipped), fit on the TRAIN
  split's phones. Runs without train posteriors (e.g. late fusion) fit it on dev with
  speaker-grouped 5-fold cross-fitting instead (out-of-fold dev scores choose the threshold;
  the model refit on all of dev scores test); ``regressor.fit_on`` records which.
- ``pcc_gop`` / ``pcc_regressor`` = Pearson of ``gop`` / ``score`` with human phone accuracy.
- MDD: positive = human phone accuracy < 0.5; detection score = ``-score``; ``mdd_auc`` =
  AUC-ROC; ``mdd_f1/precision/recall`` at the threshold maximising dev F1 (a phone is
  flagged when ``score <= mdd_threshold``). ``mdd_auc_gop`` = the same AUC from ``-gop``.
- ``utt_pcc`` = Pearson of the mean ``score`` of an utterance's phones with utterance accuracy.

:func:`fit` reads train/dev only; :func:`score` is the only place test labels are read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from phonecli.data.phones import PHONE_TO_ID, PHONES, VOCAB
from phonecli.evaluate import metrics as M
from phonecli.evaluate.align import forced_align, uniform_spans
from phonecli.evaluate.gop import gop_features
from phonecli.errors import EvaluateError

MISPRONOUNCED_BELOW = 0.5


@dataclass
class PhoneTable:
    """Every canonical phone of one split; arrays have shape ``(phones,)`` unless noted."""

    split: str
    utt_ids: list[str] = field(default_factory=list)
    speakers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # position in utterance
    phone_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    human: np.ndarray = field(default_factory=lambda: np.zeros(0))            # 0..2
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))     # lpp, lpr, duration
    aligned: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    utt_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # into utt_* arrays
    utt_order: list[str] = field(default_factory=list)                         # utterance ids
    utt_accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0))     # (utterances,)
    utt_speakers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    unaligned_utts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.phone_ids)

    @property
    def gop(self) -> np.ndarray:
        return self.features[:, 0]

    @property
    def phones(self) -> list[str]:
        return [VOCAB[i] for i in self.phone_ids]


def build_table(split: str, utterances, posteriors: dict[str, np.ndarray], progress: bool = False) -> PhoneTable:
    """Align and featurise the canonical phones of ``utterances`` that have posteriors."""
    from tqdm.auto import tqdm

    cols: dict[str, list] = {k: [] for k in ("utt", "spk", "idx", "pid", "hum", "feat", "ali", "uix")}
    t = PhoneTable(split)
    acc, spk = [], []
    for u in tqdm([u for u in utterances if u.utt_id in posteriors], desc=f"align {split}", unit="utt",
                  disable=not progress, leave=False):
        ids = [PHONE_TO_ID[p] for p in u.canonical_phones]
        if not ids:
            continue
        if len(u.phone_accuracy) != len(ids):
            raise EvaluateError(f"utterance {u.utt_id} has {len(u.phone_accuracy)} phone scores for {len(ids)} "
                             f"canonical phones; re-run `phonecli data prepare`")
        lp = posteriors[u.utt_id]
        spans = forced_align(lp, ids)
        ok = spans is not None
        if not ok:
            spans = uniform_spans(lp.shape[0], len(ids))
            t.unaligned_utts.append(u.utt_id)
        k = len(t.utt_order)
        t.utt_order.append(u.utt_id)
        acc.append(u.accuracy)
        spk.append(u.speaker)
        n = len(ids)
        cols["utt"] += [u.utt_id] * n
        cols["spk"] += [u.speaker] * n
        cols["idx"] += list(range(n))
        cols["pid"] += ids
        cols["hum"] += list(u.phone_accuracy)
        cols["feat"].append(gop_features(lp, ids, spans))
        cols["ali"] += [ok] * n
        cols["uix"] += [k] * n
    t.utt_ids = cols["utt"]
    t.speakers = np.asarray(cols["spk"], dtype=object)
    t.index = np.asarray(cols["idx"], dtype=np.int64)
    t.phone_ids = np.asarray(cols["pid"], dtype=np.int64)
    t.human = np.asarray(cols["hum"], dtype=np.float64)
    t.features = np.concatenate(cols["feat"]) if cols["feat"] else np.zeros((0, 3))
    t.aligned = np.asarray(cols["ali"], dtype=bool)
    t.utt_index = np.asarray(cols["uix"], dtype=np.int64)
    t.utt_accuracy = np.asarray(acc, dtype=np.float64)
    t.utt_speakers = np.asarray(spk, dtype=object)
    return t


def design_matrix(t: PhoneTable) -> np.ndarray:
    """``(phones, 3 + 39)``: GOP features then the phone identity one-hot."""
    onehot = np.zeros((len(t), len(PHONES)))
    onehot[np.arange(len(t)), t.phone_ids - 1] = 1.0
    return np.hstack([t.features, onehot])


def _regressor(seed: int):
    from sklearn.ensemble import HistGradientBoostingRegressor

    # gradient boosting: handles the unscaled mix of log-probabilities, frame counts and
    # one-hots without a scaler; early stopping holds out 10% of the FIT split (never test)
    return HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, max_leaf_nodes=31,
                                         min_samples_leaf=20, l2_regularization=1.0, early_stopping=True,
                                         validation_fraction=0.1, n_iter_no_change=10, random_state=seed)


def _one_thread():
    """sklearn's OpenMP threads spin-wait on a busy machine (measured 7x slower on 2 shared
    cores for 50k phones); the trees are small, so one thread is as fast when idle."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


@dataclass
class PhoneFit:
    """What the phone protocol chooses before looking at test."""

    model: object
    fit_on: str                 # "train" | "dev-crossfit"
    n_fit: int
    threshold: float            # flag a phone when score <= threshold; NaN if dev has no positive
    dev_scores: np.ndarray      # the scores the threshold was chosen on

    def predict(self, t: PhoneTable) -> np.ndarray:
        if len(t) == 0:
            return np.zeros(0)
        with _one_thread():
            return np.clip(self.model.predict(design_matrix(t)), 0.0, 2.0)


def fit(train: PhoneTable | None, dev: PhoneTable, seed: int = 0) -> PhoneFit:
    """Fit the regressor (train, or dev cross-fitting) and choose the MDD threshold on dev."""
    if len(dev) == 0:
        raise EvaluateError("phone protocol: the dev split has no phones with posteriors; it is needed to choose "
                            "thresholds")
    with _one_thread():
        return _fit(train, dev, seed)


def _fit(train: PhoneTable | None, dev: PhoneTable, seed: int) -> PhoneFit:
    if train is not None and len(train) > 0:
        model = _regressor(seed).fit(design_matrix(train), train.human)
        fitted = PhoneFit(model, "train", len(train), float("nan"), np.zeros(0))
        dev_scores = fitted.predict(dev)
    else:
        from sklearn.model_selection import GroupKFold

        x, y = design_matrix(dev), dev.human
        n_groups = len(set(dev.speakers.tolist()))
        dev_scores = np.zeros(len(dev))
        if n_groups >= 2:
            for tr, te in GroupKFold(n_splits=min(5, n_groups)).split(x, y, groups=dev.speakers):
                dev_scores[te] = np.clip(_regressor(seed).fit(x[tr], y[tr]).predict(x[te]), 0.0, 2.0)
        model = _regressor(seed).fit(x, y)
        if n_groups < 2:
            dev_scores = np.clip(model.predict(x), 0.0, 2.0)
        fitted = PhoneFit(model, "dev-crossfit", len(dev), float("nan"), np.zeros(0))
    labels = dev.human < MISPRONOUNCED_BELOW
    fitted.threshold = -M.select_threshold(labels, -dev_scores)
    fitted.dev_scores = dev_scores
    return fitted


def utterance_means(t: PhoneTable, scores: np.ndarray) -> np.ndarray:
    """Mean phone score of each utterance of ``t``, shape ``(utterances,)``."""
    sums = np.bincount(t.utt_index, weights=scores, minlength=len(t.utt_order))
    counts = np.bincount(t.utt_index, minlength=len(t.utt_order))
    return sums / np.maximum(counts, 1)


def score(test: PhoneTable, scores: np.ndarray, utt_scores: np.ndarray, fitted: PhoneFit,
          idx: np.ndarray | None = None, uidx: np.ndarray | None = None) -> dict[str, float]:
    """Flat phone-protocol metrics on ``test`` (or phones ``idx`` / utterances ``uidx`` of it)."""
    if idx is None:
        idx = np.arange(len(test))
    if uidx is None:
        uidx = np.arange(len(test.utt_order))
    human = test.human[idx]
    s = scores[idx]
    gop = test.gop[idx]
    labels = human < MISPRONOUNCED_BELOW
    prf = M.prf_at(labels, -s, -fitted.threshold)
    return {
        "pcc_gop": M.pearson(gop, human),
        "pcc_regressor": M.pearson(s, human),
        "mdd_auc": M.auc(labels, -s),
        "mdd_auc_gop": M.auc(labels, -gop),
        "mdd_f1": prf["f1"],
        "mdd_precision": prf["precision"],
        "mdd_recall": prf["recall"],
        "utt_pcc": M.pearson(utt_scores[uidx], test.utt_accuracy[uidx]),
    }


HEADLINE = ("pcc_gop", "pcc_regressor", "mdd_auc", "mdd_auc_gop", "mdd_f1", "mdd_precision", "mdd_recall", "utt_pcc")


def to_metrics(flat: dict[str, float], test: PhoneTable, tables: dict[str, PhoneTable], fitted: PhoneFit,
               cis: dict[str, list[float] | None] | None = None) -> dict:
    cis = cis or {}
    out: dict = {}
    for n in HEADLINE:
        out[n] = flat[n]
        if n in cis:
            out[f"{n}_ci95"] = cis[n]
    out["mdd_threshold"] = fitted.threshold
    out["mdd_threshold_rule"] = "flag a phone when score <= mdd_threshold (chosen on dev, max F1)"
    out["regressor"] = {"model": type(fitted.model).__name__, "features": ["lpp", "lpr", "duration", "phone one-hot"],
                        "fit_on": fitted.fit_on, "n_fit_phones": fitted.n_fit}
    out["counts"] = {
        "n_test_phones": len(test),
        "n_test_positive": int((test.human < MISPRONOUNCED_BELOW).sum()),
        "n_test_utterances": len(test.utt_order),
        **{f"n_{s}_phones": len(t) for s, t in tables.items() if s != "test"},
        **{f"n_unaligned_{s}_phones": int((~t.aligned).sum()) for s, t in tables.items()},
        **{f"n_unaligned_{s}_utterances": len(t.unaligned_utts) for s, t in tables.items()},
        "unaligned_fallback": "uniform segmentation of the utterance's frames (see docs)",
    }
    out["unaligned_test_utterances"] = list(test.unaligned_utts)
    return out
