"""The seed protocol: utterance-level Tasks A/B/C, comparable with the seed's table.

Definitions (test split; PER in percent):

- PER_utt = edit distance(greedy CTC phones, canonical phones) / len(canonical) x 100.
- Task A: corpus PER = sum of edits / sum of reference lengths x 100, over test utterances
  with accuracy >= 8 (``per_hq``, ``n_hq`` of them) and over all test utterances (``per_all``).
- Task B: Pearson r and Spearman rho between (1 - PER_utt/100) and utterance accuracy (0-10).
- Task C: positive = accuracy <= 6; score = PER_utt. ``auc`` = AUC-ROC (sklearn);
  ``threshold`` = the PER_utt (percent) maximising F1 on DEV (predict positive when
  PER_utt >= threshold); ``f1``/``precision``/``recall`` = that dev threshold applied to test;
  ``oracle_f1`` = the best F1 with the threshold swept on test itself (what the seed reported;
  an optimistic oracle, never a headline).

:func:`fit` sees dev only; :func:`score` is the only place test labels are read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phonecli.evaluate import metrics as M
from phonecli import ctc

HQ_MIN_ACCURACY = 8.0
POSITIVE_MAX_ACCURACY = 6.0


@dataclass
class UttTable:
    """Per-utterance decoding results of one split (arrays of shape ``(utterances,)``)."""

    utt_ids: list[str]
    speakers: np.ndarray      # str
    accuracy: np.ndarray      # float64, 0..10
    edits: np.ndarray         # int64
    ref_len: np.ndarray       # int64

    @property
    def per_utt(self) -> np.ndarray:
        """PER of each utterance in percent (:func:`phonecli.ctc.utterance_per`: edits / max(ref, 1))."""
        return ctc.utterance_per(self.edits, self.ref_len)

    @staticmethod
    def build(rows: list[dict]) -> "UttTable":
        """From prediction rows ``{"utt_id", "speaker", "hyp", "ref", "accuracy"}``."""
        return UttTable(
            utt_ids=[r["utt_id"] for r in rows],
            speakers=np.asarray([r["speaker"] for r in rows], dtype=object),
            accuracy=np.asarray([r["accuracy"] for r in rows], dtype=np.float64),
            edits=np.asarray([ctc.edit_distance(r["ref"], r["hyp"]) for r in rows], dtype=np.int64),
            ref_len=np.asarray([len(r["ref"]) for r in rows], dtype=np.int64),
        )


@dataclass(frozen=True)
class SeedFit:
    """Everything the seed protocol chooses before looking at test: the Task C threshold."""

    threshold: float          # PER_utt in percent; NaN when dev has no positive utterance
    n_dev: int
    n_dev_positive: int


def fit(dev: UttTable) -> SeedFit:
    labels = dev.accuracy <= POSITIVE_MAX_ACCURACY
    return SeedFit(M.select_threshold(labels, dev.per_utt), len(dev.utt_ids), int(labels.sum()))


def score(test: UttTable, fitted: SeedFit, idx: np.ndarray | None = None, oracle: bool = True) -> dict[str, float]:
    """Flat ``{metric: value}`` of Tasks A/B/C on ``test`` (or the rows ``idx`` of it)."""
    if idx is None:
        idx = np.arange(len(test.utt_ids))
    acc = test.accuracy[idx]
    edits = test.edits[idx]
    ref_len = test.ref_len[idx]
    per = ctc.utterance_per(edits, ref_len)
    hq = acc >= HQ_MIN_ACCURACY
    out = {
        "per_hq": ctc.corpus_per(edits[hq], ref_len[hq]),
        "per_all": ctc.corpus_per(edits, ref_len),
        "pearson": M.pearson(1.0 - per / 100.0, acc),
        "spearman": M.spearman(1.0 - per / 100.0, acc),
    }
    labels = acc <= POSITIVE_MAX_ACCURACY
    out["auc"] = M.auc(labels, per)
    out.update(M.prf_at(labels, per, fitted.threshold))
    if oracle:
        out["oracle_f1"] = M.oracle_f1(labels, per)
    return out


def to_metrics(flat: dict[str, float], test: UttTable, fitted: SeedFit,
               cis: dict[str, list[float] | None] | None = None) -> dict:
    """Nest the flat scores into ``{"task_a", "task_b", "task_c", "counts"}`` with ``*_ci95``."""
    cis = cis or {}

    def block(names):
        d = {}
        for n in names:
            d[n] = flat[n]
            if n in cis:
                d[f"{n}_ci95"] = cis[n]
        return d

    task_a = block(["per_hq", "per_all"])
    task_a["n_hq"] = int((test.accuracy >= HQ_MIN_ACCURACY).sum())
    task_c = block(["auc", "f1", "precision", "recall"])
    task_c["threshold"] = fitted.threshold
    task_c["threshold_chosen_on"] = "dev"
    task_c.update(block(["oracle_f1"]))
    task_c["oracle_note"] = "oracle_f1: threshold swept on test (the seed's protocol); optimistic, not a headline"
    labels = test.accuracy <= POSITIVE_MAX_ACCURACY
    return {
        "task_a": task_a,
        "task_b": block(["pearson", "spearman"]),
        "task_c": task_c,
        "counts": {
            "n_test": len(test.utt_ids),
            "n_test_positive": int(labels.sum()),
            "n_test_speakers": len(set(test.speakers.tolist())),
            "n_ref_phones": int(test.ref_len.sum()),
            "n_edits": int(test.edits.sum()),
            "n_dev": fitted.n_dev,
            "n_dev_positive": fitted.n_dev_positive,
        },
    }
