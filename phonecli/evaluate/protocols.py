"""The per-corpus protocols beyond SpeechOcean762's: ``per`` (phone recognition) and ``mdd``.

Which protocols apply comes from the manifest (``Manifest.corpus.protocols``): TIMIT and
LibriSpeech (and Kaldi / lhotse imports) get ``per``; L2-ARCTIC gets ``per`` and ``mdd``;
SpeechOcean762 keeps its ``seed`` and ``phone`` protocols (:mod:`.seed_protocol`,
:mod:`.phone_protocol`).

Each protocol object exposes what :func:`phonecli.evaluate.evaluate.evaluate_run` needs to
share one speaker bootstrap with the others: ``unit_speakers`` (speaker of each unit, per unit
kind), ``score(ix)`` (flat ``{"name:metric": value}`` on a resample, ``ix=None`` = all test
units) and ``to_metrics(flat, cis)`` (the ``metrics.json`` block).

``per`` (test split; PER in percent, corpus level = sum of edits / sum of reference lengths,
s3prl's ``metric.per`` and Kaldi's ``compute-wer`` definition): reference and greedy CTC output
are folded with the corpus' scoring map first (TIMIT: 48 -> 39, Lee & Hon 1989). The reference
is the annotated (perceived) phones where the corpus has an annotation (L2-ARCTIC: what the
MDD literature reports as PER), the canonical phones otherwise. ``per_dev`` is reported beside.

``mdd`` (test split): :mod:`.mdd` counts and rates, with two floors computed on the same test
utterances, ``accept_all`` and ``text_prior`` (see :mod:`.mdd`).
"""

from __future__ import annotations

import numpy as np

from phonecli.evaluate import floors
from phonecli.evaluate import mdd as MDD
from phonecli import ctc
from phonecli.evaluate.per import edit_counts
from phonecli.errors import EvaluateError

EXTRA_PROTOCOLS = ("per", "mdd")


def reference_phones(u) -> list[str]:
    """What the PER protocol scores against: perceived phones of an annotated utterance, else canonical."""
    if u.annotation is not None:
        return [a.perceived for a in u.annotation if a.kind != "deletion"]
    return u.canonical_phones


def _decode(manifest, post: dict[str, np.ndarray], split: str) -> dict[str, list[str]]:
    symbols = manifest.vocab.symbols
    return {u.utt_id: ctc.greedy_phones(post[u.utt_id], symbols) for u in manifest.split(split) if u.utt_id in post}


def _block(flat: dict, cis: dict, prefix: str, names) -> dict:
    out = {}
    for n in names:
        out[n] = flat[f"{prefix}:{n}"]
        if f"{prefix}:{n}" in cis:
            out[f"{n}_ci95"] = cis[f"{prefix}:{n}"]
    return out


class PerProtocol:
    """Phone error rate with the corpus' scoring folding (see the module docstring)."""

    name = "per"

    def __init__(self, manifest, post: dict[str, dict[str, np.ndarray]]):
        spec = manifest.corpus
        self.spec = spec
        self.rows: list[dict] = []
        tables = {}
        for split in ("dev", "test"):
            hyps = _decode(manifest, post[split], split)
            edits, ref_len, spk = [], [], []
            for u in manifest.split(split):
                if u.utt_id not in hyps:
                    continue
                ref, hyp = spec.fold(reference_phones(u)), spec.fold(hyps[u.utt_id])
                e = edit_counts(ref, hyp)
                edits.append((e.substitutions, e.deletions, e.insertions))
                ref_len.append(e.ref_len)
                spk.append(u.speaker)
                self.rows.append({"utt_id": u.utt_id, "split": split, "speaker": u.speaker, "hyp": hyp, "ref": ref})
            tables[split] = (np.asarray(edits, np.int64).reshape(-1, 3), np.asarray(ref_len, np.int64),
                             np.asarray(spk, dtype=object))
        if not len(tables["test"][1]):
            raise EvaluateError("no test utterance has posteriors; nothing to evaluate")
        self.floors = floors.per_floors([r["ref"] for r in self.rows if r["split"] == "test"],
                                        [spec.fold(reference_phones(u)) for u in manifest.split("train")])
        self.edits, self.ref_len, speakers = tables["test"]
        dev_edits, dev_len, _ = tables["dev"]
        self.per_dev = ctc.corpus_per(dev_edits.sum(axis=1), dev_len)
        self.unit_speakers = {"per_utt": speakers}

    def score(self, ix: dict | None = None) -> dict[str, float]:
        idx = slice(None) if ix is None else ix["per_utt"]
        e, n = self.edits[idx], self.ref_len[idx]
        # the one PER rule (phonecli.ctc): edits / max(reference phones, 1); no utterance at all: NaN
        return {"per:per_test": ctc.corpus_per(e.sum(axis=1), n), "per:substitutions": ctc.corpus_per(e[:, 0], n),
                "per:deletions": ctc.corpus_per(e[:, 1], n), "per:insertions": ctc.corpus_per(e[:, 2], n)}

    def to_metrics(self, flat: dict, cis: dict) -> dict:
        out = {"benchmark": self.spec.benchmark, "scored_on": self.spec.scored_on,
               "folding": "scoring map applied to reference and hypothesis" if self.spec.scoring_map else "none",
               "reference": "perceived (annotated) phones" if self.spec.name == "l2arctic" else "canonical phones"}
        out.update(_block(flat, cis, "per", ("per_test", "substitutions", "deletions", "insertions")))
        out["per_dev"] = self.per_dev
        floors.attach(out, {"per_test": flat["per:per_test"]}, self.floors, floors.PER_MARGINS)
        out["counts"] = {"n_test": int(len(self.ref_len)), "n_ref_phones": int(self.ref_len.sum()),
                         "n_edits": int(self.edits.sum()), "n_test_speakers": len(set(self.unit_speakers["per_utt"]))}
        return out


class MddProtocol:
    """MDD counts and rates on the annotated test utterances (see :mod:`.mdd`)."""

    name = "mdd"
    RATES = ("precision", "recall", "f1", "diagnosis_accuracy", "diagnosis_error_rate", "frr", "far",
             "detection_accuracy")

    def __init__(self, manifest, post: dict[str, dict[str, np.ndarray]]):
        self.spec = manifest.corpus
        hyps = _decode(manifest, post["test"], "test")
        test = [u for u in manifest.split("test") if u.utt_id in hyps and u.annotation]
        if not test:
            raise EvaluateError(f"{manifest.root}: no annotated test utterance with posteriors; the mdd protocol "
                                "needs a phone-level annotation (L2-ARCTIC)")
        self.counts = np.stack([MDD.count(u.annotation, hyps[u.utt_id]) for u in test])
        self.unit_speakers = {"mdd_utt": np.asarray([u.speaker for u in test], dtype=object)}
        floors = {"accept_all": np.stack([MDD.count(u.annotation, MDD.accept_all(u.annotation)) for u in test])}
        prior = MDD.fit_text_prior([u.annotation for u in manifest.split("train") if u.annotation],
                                   [u.annotation for u in manifest.split("dev") if u.annotation])
        if prior is not None:
            floors["text_prior"] = np.stack([MDD.count(u.annotation, prior.recognize(u.annotation)) for u in test])
        self.floors = floors
        self.prior = prior
        self.accept_all_per = ctc.corpus_per(
            [edit_counts(reference_phones(u), MDD.accept_all(u.annotation)).edits for u in test],
            [len(reference_phones(u)) for u in test])

    def score(self, ix: dict | None = None) -> dict[str, float]:
        idx = slice(None) if ix is None else ix["mdd_utt"]
        out = {f"mdd:{k}": v for k, v in MDD.metrics(self.counts[idx].sum(0)).items()}
        for name, c in self.floors.items():
            out[f"mdd:floor_{name}_f1"] = MDD.metrics(c[idx].sum(0))["f1"]
        return out

    def to_metrics(self, flat: dict, cis: dict) -> dict:
        total = self.counts.sum(0)
        out = {"benchmark": self.spec.benchmark, "counts": {k: int(v) for k, v in zip(MDD.COUNTS, total)}}
        out["counts"]["tr"] = int(total[3] + total[4])
        out["counts"]["n_test"] = int(len(self.counts))
        out.update(_block(flat, cis, "mdd", self.RATES))
        floors = {}
        for name, c in self.floors.items():
            f = {"counts": {k: int(v) for k, v in zip(MDD.COUNTS, c.sum(0))}, **MDD.metrics(c.sum(0))}
            key = f"mdd:floor_{name}_f1"
            if key in cis:
                f["f1_ci95"] = cis[key]
            floors[name] = f
        floors["accept_all"]["per"] = self.accept_all_per
        if self.prior is not None:
            floors["text_prior"]["threshold_chosen_on"] = "dev"
            floors["text_prior"]["threshold"] = self.prior.threshold
        out["floors"] = floors
        return out


def build(name: str, manifest, post: dict[str, dict[str, np.ndarray]]):
    """The protocol object ``name`` (``per`` or ``mdd``) over dev/test posteriors ``post``."""
    return {"per": PerProtocol, "mdd": MddProtocol}[name](manifest, post)
