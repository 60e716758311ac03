"""Stop at the first non-finite number: one place for the checks probe, fuse, finetune and evaluate make.

Every check raises :class:`~phonecli.errors.NonFiniteError` with one line naming the utterance,
the file it came from and the fix. When a run directory is being written, :func:`fail_run` first
marks it ``"status": "failed"`` (with the message) and removes whatever could make it look complete
(weights, posteriors, metrics), so evaluate / fuse / report refuse it (:func:`refuse_failed`)
instead of scoring a half-written run. Features read from a cache are checked by the reader itself
(:mod:`phonecli.cache.checksum`, once per part and process); these checks cover what the loops
compute: losses and posteriors.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from phonecli.errors import NonFiniteError

#: Files that make a run look usable; removed from a failed run.
RESULT_FILES = ("weights.safetensors", "posteriors", "metrics.json", "predictions.jsonl", "phone_scores.jsonl")


def fail_run(run, message: str) -> None:
    """Mark ``run`` failed (``run.json`` keeps the config, the log and the reason) and remove its results."""
    if run is None:
        return
    for name in RESULT_FILES:
        p = Path(run.path) / name
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    run.info["status"] = "failed"
    run.info["error"] = message
    run.save_info()


def _stop(message: str, run=None):
    fail_run(run, message)
    raise NonFiniteError(message)


def check_loss(loss, log_probs, lengths, utt_ids: list[str], *, source, what: str = "train loss",
               fix: str = "lower --lr", run=None, per_utterance=None) -> None:
    """Stop when a batch loss is NaN/inf, naming the first utterance to blame.

    ``loss``: scalar tensor; ``log_probs``: ``(batch, frames, vocab)`` tensor; ``lengths``: valid
    frames per utterance; ``per_utterance``: optional ``(batch,)`` losses (the first non-finite one
    names the utterance; else the first with non-finite log-posteriors); ``source``: the file(s) the
    batch was read from, or a callable ``utt_id -> file``. The finite case costs one scalar check.
    """
    value = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
    if math.isfinite(value):
        return
    culprit = None
    if per_utterance is not None:
        culprit = next((u for u, v in zip(utt_ids, per_utterance.tolist()) if not math.isfinite(v)), None)
    if culprit is None and log_probs is not None:
        import torch

        lp = log_probs.detach()
        for i, u in enumerate(utt_ids):
            n = int(lengths[i])
            if not bool(torch.isfinite(lp[i, :n]).all()):
                culprit = u
                break
    who = f"utterance {culprit}" if culprit else f"batch of utterances {', '.join(utt_ids[:5])}"
    why = "its loss or log-posteriors are NaN/inf" if culprit else "the CTC loss is NaN/inf"
    where = f"; run {run.path} marked failed" if run is not None else ""
    src = source(culprit or utt_ids[0]) if callable(source) else source
    _stop(f"{who}: non-finite {what} ({value}: {why}) from {src}; training stopped{where}. Fix: {fix}", run)


def first_bad_posterior(posteriors: dict[str, np.ndarray]) -> str | None:
    """The first utterance whose log-posteriors hold NaN or +inf (-inf = log 0 is legal), or None."""
    for u, lp in posteriors.items():
        a = np.asarray(lp)
        if np.isnan(a).any() or np.isposinf(a).any():
            return u
    return None


def check_posteriors(posteriors: dict[str, np.ndarray], *, file, fix: str, run=None, error=None) -> None:
    """Stop at the first utterance with NaN/+inf log-posteriors; ``file``: where they are (or go).

    ``error``: the stage's own :class:`~phonecli.errors.PhonecliError` subclass to raise instead of
    :class:`NonFiniteError` (e.g. EvaluateError), so callers catching their stage's errors keep working.
    """
    u = first_bad_posterior(posteriors)
    if u is None:
        return
    msg = f"utterance {u}: NaN/+inf log-posteriors in {file}. Fix: {fix}"
    if error is not None and run is None:
        raise error(msg)
    _stop(msg, run)


def refuse_failed(run, error=NonFiniteError) -> None:
    """Raise ``error`` when ``run`` was marked failed (its message says why and what to re-run)."""
    if run.info.get("status") == "failed":
        raise error(f"{run.path}: this run failed ({run.info.get('error', 'no reason recorded')}); "
                    "re-run the stage that made it")
