"""PNG plots of the report (matplotlib, Agg backend): ROC curves, layer weights, per-phone errors, confusions."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from phonecli.data.phones import PHONES
from phonecli.evaluate.evaluate import PHONE_SCORES_FILE, PREDICTIONS_FILE
from phonecli.evaluate.per import DEL, INS, align
from phonecli.storage import atomic_write
from phonecli.evaluate.phone_protocol import MISPRONOUNCED_BELOW
from phonecli.evaluate.seed_protocol import POSITIVE_MAX_ACCURACY


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "run"


def _test_predictions(r) -> list[dict]:
    return [p for p in _jsonl(r.path / PREDICTIONS_FILE) if p.get("split") == "test"]


def roc_plot(curves: list[tuple[str, np.ndarray, np.ndarray]], title: str, path: Path) -> Path | None:
    """``curves``: ``(label, binary labels, scores)`` (higher score = more likely positive)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    curves = [c for c in curves if len(c[1]) and c[1].any() and not c[1].all()]
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label, y, s in curves:
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def read_layer_weights(f: Path) -> list[tuple[str | None, list, list[float]]]:
    """``[(stream label or None, layers, weights)]`` from a run's ``layer_weights.json``.

    Accepts ``{"layers": [...], "weights": [...]}`` and the probe's multi-stream form
    ``{"streams": [{"source", "layers", "weights"}, ...]}``. A missing or malformed optional
    file gives ``[]``: it must not sink the whole report.
    """
    if not f.exists():
        return []
    try:
        d = json.loads(f.read_text())
        if "streams" in d:
            entries = [(Path(str(e.get("source") or f"stream {i}")).stem if len(d["streams"]) > 1 else None, e)
                       for i, e in enumerate(d["streams"])]
        else:
            entries = [(None, d)]
        out = []
        for label, e in entries:
            layers, weights = list(e["layers"]), [float(w) for w in e["weights"]]
            if layers and len(layers) == len(weights):
                out.append((label, layers, weights))
        return out
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return []


def layer_weights_plot(results, path: Path) -> Path | None:
    series = []
    for r in results:
        for label, layers, weights in read_layer_weights(r.path / "layer_weights.json"):
            series.append((r.name if label is None else f"{r.name}: {label}", layers, weights))
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, layers, weights in series:
        ax.plot(layers, weights, marker="o", ms=3, label=name)
    ax.set(xlabel="layer (hidden-state index)", ylabel="softmax weight", title="Weighted-sum layer weights")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def inventory(preds: list[dict]) -> list[str]:
    """The phones of the predictions: SpeechOcean762's 39 when they fit, else every phone seen (sorted)."""
    seen = {x for p in preds for x in (*p["ref"], *p["hyp"])}
    return list(PHONES) if seen <= set(PHONES) else sorted(seen)


def phone_errors(preds: list[dict]) -> tuple[dict[str, float], np.ndarray]:
    """Per canonical phone error rate ((sub + del) / occurrences) and the confusion counts.

    Confusion rows = reference phones + ``<ins>``; columns = hypothesis phones + ``<del>``;
    shape ``(P + 1, P + 1)`` over the :func:`inventory` of ``preds`` (40 x 40 for SpeechOcean762).
    """
    phones = inventory(preds)
    rows = phones + [INS]
    cols = phones + [DEL]
    ri = {p: i for i, p in enumerate(rows)}
    ci = {p: i for i, p in enumerate(cols)}
    conf = np.zeros((len(rows), len(cols)), dtype=np.int64)
    occ, err = Counter(), Counter()
    for p in preds:
        for ref, hyp in align(p["ref"], p["hyp"]):
            conf[ri[ref], ci[hyp]] += 1
            if ref != INS:
                occ[ref] += 1
                if hyp != ref:
                    err[ref] += 1
    return {ph: err[ph] / occ[ph] for ph in phones if occ[ph]}, conf


def per_phone_plot(named_rates: list[tuple[str, dict[str, float]]], path: Path) -> Path | None:
    named_rates = [(n, r) for n, r in named_rates if r]
    if not named_rates:
        return None
    plt = _plt()
    if len(named_rates) == 1:
        name, rates = named_rates[0]
        phones = sorted(rates, key=rates.get, reverse=True)
        fig, ax = plt.subplots(figsize=(10, 3.5))
        ax.bar(phones, [100 * rates[p] for p in phones])
        ax.set(ylabel="error rate (%)", title=f"Per-phone error rate (test, {name})")
        ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    else:
        phones = sorted({p for _, r in named_rates for p in r})
        mat = np.array([[100 * r.get(p, np.nan) for p in phones] for _, r in named_rates])
        fig, ax = plt.subplots(figsize=(11, 1 + 0.35 * len(named_rates)))
        im = ax.imshow(mat, aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(phones)), phones, rotation=90, fontsize=7)
        ax.set_yticks(range(len(named_rates)), [n for n, _ in named_rates], fontsize=7)
        fig.colorbar(im, ax=ax, label="error rate (%)")
        ax.set_title("Per-phone error rate (test): (substitutions + deletions) / occurrences")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def confusion_plot(name: str, conf: np.ndarray, path: Path, phones: list[str] | None = None) -> Path | None:
    if conf.sum() == 0:
        return None
    plt = _plt()
    norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8, 7.5))
    im = ax.imshow(norm, cmap="magma_r", vmin=0, vmax=1)
    phones = list(PHONES) if phones is None else phones
    ax.set_xticks(range(conf.shape[1]), phones + [DEL], rotation=90, fontsize=6)
    ax.set_yticks(range(conf.shape[0]), phones + [INS], fontsize=6)
    ax.set(xlabel="hypothesis (greedy CTC)", ylabel="reference (canonical)",
           title=f"Phone confusions (test, row-normalised): {name}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def write_plots(results, out: Path) -> list[Path]:
    utt_curves, phone_curves, rates = [], [], []
    made: list[Path] = []
    for r in results:
        preds = _test_predictions(r)
        if preds:
            from phonecli import ctc

            if all(p.get("accuracy") is not None for p in preds):     # human scores: SpeechOcean762 only
                y = np.array([p["accuracy"] <= POSITIVE_MAX_ACCURACY for p in preds])
                s = np.array([ctc.utterance_per(ctc.edit_distance(p["ref"], p["hyp"]), len(p["ref"])) for p in preds])
                utt_curves.append((r.name, y, s))
            pr, conf = phone_errors(preds)
            rates.append((r.name, pr))
            p = confusion_plot(r.name, conf, out / f"confusion_{_safe(r.name)}.png", inventory(preds))
            if p:
                made.append(p)
        ps = [p for p in _jsonl(r.path / PHONE_SCORES_FILE) if p.get("split") == "test"]
        if ps:
            y = np.array([p["human"] < MISPRONOUNCED_BELOW for p in ps])
            s = -np.array([p["score"] for p in ps])
            phone_curves.append((r.name, y, s))
    for p in (
        roc_plot(utt_curves, "Task C: utterance mispronunciation (accuracy <= 6)", out / "roc_utterance.png"),
        roc_plot(phone_curves, "Phone MDD (human accuracy < 0.5)", out / "roc_phone.png"),
        layer_weights_plot(results, out / "layer_weights.png"),
        per_phone_plot(rates, out / "per_phone_error.png"),
    ):
        if p:
            made.append(p)
    return sorted(made, key=lambda p: (not p.name.startswith("roc"), p.name))
