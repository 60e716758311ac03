"""Group utterances into forward batches capped by seconds of (padded) audio.

Sorting by length keeps padding small for models that take an attention mask; models whose
features change with padding (``padding_safe=False``, e.g. group-norm WavLM/HuBERT-base
feature extractors without an attention mask) only ever see batches of one exact length.
"""

from __future__ import annotations

from phonecli.errors import ConfigError


def make_batches(lengths: list[tuple[str, int]], max_samples: int, padding_safe: bool) -> list[list[str]]:
    """``lengths``: ``(utt_id, samples)`` -> batches of utterance ids.

    Utterances are sorted longest first (ties by id, so batches are deterministic). A batch
    holds as many as fit in ``max_samples`` *padded* samples (``count * longest``); an
    utterance longer than the cap forms a batch of its own. With ``padding_safe=False`` a batch
    only ever holds utterances of exactly the same length (so nothing is padded).
    """
    if max_samples <= 0:
        raise ConfigError(f"--batch-seconds gives {max_samples} samples per batch; it must hold at least one sample")
    ordered = sorted(lengths, key=lambda x: (-x[1], x[0]))
    batches: list[list[str]] = []
    current: list[str] = []
    current_max = 0
    current_len = None
    for utt_id, n in ordered:
        fits = current and (len(current) + 1) * current_max <= max_samples
        if not padding_safe:
            fits = fits and n == current_len
        if fits:
            current.append(utt_id)
            continue
        if current:
            batches.append(current)
        current, current_max, current_len = [utt_id], n, n
    if current:
        batches.append(current)
    return batches
