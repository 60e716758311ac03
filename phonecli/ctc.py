"""The CTC core shared by probe training, fine-tuning, late fusion and evaluation.

One definition of each piece every stage needs:

- :func:`min_frames`: frames CTC needs to emit a target (one per label, plus a blank between
  equal neighbours: ``A A`` needs ``A _ A``).
- :func:`greedy_ids` / :func:`greedy_phones`: best-path decoding (argmax per frame, merge
  repeats, drop blanks).
- PER, with **one empty-reference rule**: the PER of a set of utterances is
  ``100 * total edits / max(total reference phones, 1)``. An utterance (or a whole set) whose
  references hold no phone therefore scores its insertions (0 when the hypothesis is empty too)
  — jiwer's rule — it never raises and never gives NaN; only an *empty set of utterances* has
  no PER (NaN, written as ``null``). Edit distances come from ``torchaudio.functional.edit_distance``.
- :func:`ctc_loss_per_phone` (torch, batched) and :func:`posterior_ctc_loss` (saved numpy
  posteriors): CTC loss divided by the target length (nats per phone, HF's "mean" convention).
  Utterances with an empty target or more phones than frames have no finite loss: the batched
  loss lets the caller decide (``zero_infinity``), the posterior loss leaves them out and says how
  many it used.
- :func:`selection_key`: the best-epoch rule — lowest dev PER, rounded to ``SELECTION_DECIMALS``
  decimals so float noise in a PER never outranks a real loss difference, ties broken by the
  lower dev CTC loss (the all-blank plateau at the start of CTC training still counts as
  progress); NaN ranks last.
- :func:`resolve_device`: ``--device auto|cpu|cuda|cuda:N|mps`` -> a torch device name.

torch and torchaudio are imported inside the functions that need them (CLI start-up time).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from phonecli.errors import ConfigError

BLANK = 0
#: dev PER is compared after rounding to this many decimals (percent): the one rounding rule
SELECTION_DECIMALS = 6
#: floor for saved log-posteriors in the CTC recursion: log(0) = -inf entries can turn it into NaN
LOG_FLOOR = -1e4


# -- targets ------------------------------------------------------------------------------------

def min_frames(target: Sequence[int]) -> int:
    """Frames CTC needs to emit ``target``: one per label plus one blank between equal neighbours."""
    return len(target) + sum(1 for a, b in zip(target, target[1:]) if a == b)


def feasible(target: Sequence[int], frames: int) -> bool:
    """Whether a ``frames``-long output can emit the non-empty ``target`` (a finite CTC loss)."""
    return bool(target) and min_frames(target) <= frames


# -- decoding -----------------------------------------------------------------------------------

def greedy_ids(log_probs, blank: int = BLANK) -> list[int]:
    """Best-path CTC decoding of ``(frames, vocab)`` log-posteriors (numpy or torch) -> label ids.

    Argmax per frame, merge repeats, drop blanks; a label repeated across a blank (``A _ A``)
    stays two labels, as CTC defines.
    """
    if len(log_probs.shape) != 2:
        # a caller bug (posteriors on disk are shape-checked when read), hence not a PhonecliError
        raise ValueError(f"log-posteriors must be (frames, vocab), got shape {tuple(log_probs.shape)}")
    if log_probs.shape[0] == 0:
        return []
    # argmax where the values live (a GPU tensor ships only the frame labels)
    best = (log_probs.detach().argmax(-1).cpu().numpy() if hasattr(log_probs, "detach")
            else np.asarray(log_probs).argmax(axis=1))
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(i) for i in best[keep] if i != blank]


def greedy_phones(log_probs, vocab: Sequence[str] | None = None) -> list[str]:
    """:func:`greedy_ids` mapped to phone symbols (``vocab`` defaults to ``phonecli.data.phones.VOCAB``)."""
    if vocab is None:
        from phonecli.data.phones import VOCAB as vocab
    return [vocab[i] for i in greedy_ids(log_probs)]


# -- phone error rate ---------------------------------------------------------------------------

def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (unit-cost substitutions, deletions, insertions) via torchaudio."""
    from torchaudio.functional import edit_distance as _ed

    return int(_ed(list(ref), list(hyp)))


def corpus_per(edits, ref_phones) -> float:
    """PER in percent of a set of utterances from per-utterance ``edits`` and reference lengths.

    ``100 * sum(edits) / max(sum(ref_phones), 1)``; NaN for an empty set (see the module docstring).
    """
    e = np.asarray(edits, dtype=np.float64).reshape(-1)
    r = np.asarray(ref_phones, dtype=np.float64).reshape(-1)
    if e.shape != r.shape:
        raise ValueError(f"{e.size} edit counts but {r.size} reference lengths")
    if e.size == 0:
        return float("nan")
    return float(100.0 * e.sum() / max(r.sum(), 1.0))


def utterance_per(edits, ref_phones):
    """Per-utterance PER in percent, ``100 * edits / max(ref_phones, 1)`` (scalars or arrays)."""
    out = 100.0 * np.asarray(edits, dtype=np.float64) / np.maximum(np.asarray(ref_phones, dtype=np.float64), 1.0)
    return float(out) if out.ndim == 0 else out


def phone_error_rate(refs: Sequence[Sequence], hyps: Sequence[Sequence], scoring: Sequence[int] | None = None) -> float:
    """Corpus PER in percent of hypotheses against references (lists of ids or phone symbols);
    ``scoring`` (:func:`scoring_ids`) folds id sequences first, as the corpus is scored."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if scoring is not None:
        refs, hyps = [fold_ids(r, scoring) for r in refs], [fold_ids(h, scoring) for h in hyps]
    return corpus_per([edit_distance(r, h) for r, h in zip(refs, hyps)], [len(r) for r in refs])


def scoring_ids(symbols: Sequence[str], fold) -> list[int] | None:
    """Vocabulary id -> id of the phone it is scored as (-1: dropped), for a corpus' scoring map
    (``CorpusSpec.fold``: TIMIT's 48 -> 39); None when no symbol changes, i.e. nothing to fold.

    Lets the training loops select epochs on dev PER computed the way ``evaluate`` reports it,
    without leaving id space: two ids folding to the same phone get the same scored id.
    """
    folded = [fold([s]) if i != BLANK else [s] for i, s in enumerate(symbols)]
    if all(f == [s] for f, s in zip(folded, symbols)):
        return None
    first: dict[str, int] = {}
    out = []
    for i, f in enumerate(folded):
        out.append(first.setdefault(f[0], i) if f else -1)
    return out


def fold_ids(ids: Sequence[int], scoring: Sequence[int] | None) -> list[int]:
    """``ids`` as scored (:func:`scoring_ids`): mapped, dropped phones removed; unchanged when None."""
    if scoring is None:
        return list(ids)
    return [scoring[i] for i in ids if scoring[i] >= 0]


# -- loss -----------------------------------------------------------------------------------------

def flatten_targets(targets: Sequence[Sequence[int]]):
    """``[[ids], ...]`` -> ``(flat int64 (sum of lengths,), lengths int64 (B,))`` torch tensors."""
    import torch

    lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    flat = torch.tensor([p for t in targets for p in t], dtype=torch.long)
    return flat, lengths


def ctc_loss_per_phone(log_probs, lengths, targets, target_lengths, *, zero_infinity: bool = False):
    """Per-utterance CTC loss divided by its target length: ``(B,)`` float.

    Args:
        log_probs: ``(B, T, vocab)`` float log-posteriors (log_softmax output; padding beyond
            ``lengths`` is ignored).
        lengths: ``(B,)`` int64 valid frames per utterance.
        targets: ``(sum of target lengths,)`` int64 concatenated targets (no blank).
        target_lengths: ``(B,)`` int64.
        zero_infinity: give 0 (and no gradient) to infeasible utterances instead of ``inf``.
    Returns:
        ``(B,)`` loss in nats per target phone (a target of length 0 is divided by 1).
    """
    from torch.nn import functional as F

    per = F.ctc_loss(log_probs.transpose(0, 1), targets, lengths, target_lengths, blank=BLANK,
                     reduction="none", zero_infinity=zero_infinity)
    return per / target_lengths.to(per.device).clamp(min=1).to(per.dtype)


def posterior_ctc_loss(log_probs: np.ndarray, target: Sequence[int]) -> float | None:
    """CTC loss per phone of one utterance's saved ``(frames, vocab)`` log-posteriors, or None.

    None when the target is empty or cannot fit the frames (no finite loss). Entries are
    floored at ``LOG_FLOOR`` first.
    """
    import torch

    if not feasible(target, log_probs.shape[0]):
        return None
    x = torch.from_numpy(np.maximum(np.asarray(log_probs, dtype=np.float32), LOG_FLOOR))[None]
    flat, tl = flatten_targets([target])
    return float(ctc_loss_per_phone(x, torch.tensor([x.shape[1]]), flat, tl)[0])


# -- model selection --------------------------------------------------------------------------

def selection_key(dev_per: float, dev_loss: float) -> tuple[float, float]:
    """Sort key of an epoch (lower is better): ``(rounded dev PER, dev CTC loss)``, NaN -> +inf."""
    p = round(float(dev_per), SELECTION_DECIMALS) if math.isfinite(dev_per) else math.inf
    return p, (float(dev_loss) if math.isfinite(dev_loss) else math.inf)


def improves(dev_per: float, dev_loss: float, best: tuple[float, float] | None) -> bool:
    """Whether an epoch with ``dev_per``/``dev_loss`` beats the ``best`` key so far (None: always)."""
    return best is None or selection_key(dev_per, dev_loss) < tuple(best)


# -- device -----------------------------------------------------------------------------------

def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` and
    ``mps`` pass when available. Anything else is one :class:`ConfigError` line."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA device is visible to torch; use --device cpu or auto")
        if ":" in device and int(device[5:]) >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s); "
                              f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return device
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("--device mps: the MPS backend is not available; use --device cpu or auto")
        return device
    raise ConfigError(f"--device {device!r}: use auto, cpu, cuda, cuda:N or mps")
