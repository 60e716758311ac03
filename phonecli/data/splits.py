"""The dev split: speaker-disjoint, carved deterministically from the released train split.

Choice (the spec only says "deterministic, speaker-disjoint, ~10% of speakers"):

* The number of dev speakers is ``round(fraction * n_train_speakers)`` (half up), at least one
  when ``fraction > 0`` and at least one speaker stays in train.
* SpeechOcean762 mixes children and adults of both genders, and scores differ strongly between
  them, so dev speakers are allocated to (gender, child/adult) strata in proportion to their
  size (largest remainder). A dev set of only adults would bias every threshold chosen on it.
* Inside a stratum, speakers are ranked by ``sha256(f"{seed}:{speaker}")``: the choice does not
  depend on file order or on which reader produced the utterances, and adding or removing one
  speaker does not reshuffle the others.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict

from phonecli.errors import ConfigError

CHILD_MAX_AGE = 15  # SpeechOcean762's "children" are 5-15 years old; adults are 16+


def stratum(gender: str, age: int | None) -> tuple[str, str]:
    band = "unknown" if age is None else ("child" if age <= CHILD_MAX_AGE else "adult")
    return (gender.lower() or "unknown", band)


def _rank(seed: int, speaker: str) -> str:
    return hashlib.sha256(f"{seed}:{speaker}".encode()).hexdigest()


def dev_count(n_speakers: int, fraction: float) -> int:
    """How many of ``n_speakers`` train speakers go to dev."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"--dev-fraction {fraction}: must be in [0, 1)")
    if fraction == 0 or n_speakers < 2:
        return 0
    k = math.floor(fraction * n_speakers + 0.5)
    return min(max(k, 1), n_speakers - 1)


def choose_dev_speakers(speakers: dict[str, tuple[str, str]], fraction: float, seed: int) -> list[str]:
    """Pick dev speakers from ``{speaker: stratum}`` (the train speakers). Returns them sorted.

    Deterministic in (speaker set, strata, fraction, seed).
    """
    k = dev_count(len(speakers), fraction)
    if k == 0:
        return []
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for spk, st in speakers.items():
        groups[st].append(spk)
    n = len(speakers)
    quota = {st: k * len(members) / n for st, members in groups.items()}
    alloc = {st: math.floor(q) for st, q in quota.items()}
    # Largest remainder; ties broken by stratum name so the result never depends on dict order.
    for st in sorted(groups, key=lambda st: (-(quota[st] - alloc[st]), st))[: k - sum(alloc.values())]:
        alloc[st] += 1
    chosen: list[str] = []
    for st, members in groups.items():
        chosen += sorted(members, key=lambda s: _rank(seed, s))[: alloc[st]]
    return sorted(chosen)
