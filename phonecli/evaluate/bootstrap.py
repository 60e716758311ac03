"""Speaker-level bootstrap confidence intervals.

Utterances and phones of one speaker are correlated, so resampling them independently
would understate the uncertainty. Every replicate draws the test SPEAKERS with replacement
(as many as there are) and takes all units (utterances, phones) of each drawn speaker, once
per draw; every metric of a replicate is computed on the same draw, so CIs of different
metrics (and of both protocols) are paired. The interval is the 2.5/97.5 percentile of the
replicates (percentile bootstrap); replicates where a metric is undefined (e.g. one class
only for an AUC) are left out and counted.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np


def _groups(speakers: np.ndarray, order: list[str]) -> list[np.ndarray]:
    pos = {s: i for i, s in enumerate(order)}
    codes = np.array([pos[s] for s in speakers], dtype=np.int64)
    sort = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[sort], np.arange(len(order) + 1))
    return [sort[bounds[i]:bounds[i + 1]] for i in range(len(order))]


def speaker_bootstrap(
    unit_speakers: Mapping[str, np.ndarray],
    statistic: Callable[[dict[str, np.ndarray]], dict[str, float]],
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    progress: bool = False,
) -> tuple[dict[str, list[float] | None], dict[str, int]]:
    """Percentile CIs of every metric ``statistic`` returns, resampling speakers.

    ``unit_speakers`` maps a unit kind (e.g. ``"utt"``, ``"phone"``) to the speaker of each
    unit, shape ``(units,)``. ``statistic(indices)`` gets ``{kind: int64 indices into that
    kind's units}`` and returns ``{metric: float}``. Returns ``({metric: [lo, hi] or None},
    {metric: number of undefined replicates}})``.
    """
    speakers = sorted({str(s) for arr in unit_speakers.values() for s in arr})
    if not speakers or n <= 0:
        return {}, {}
    groups = {k: _groups(np.asarray([str(s) for s in v]), speakers) for k, v in unit_speakers.items()}
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    from tqdm.auto import tqdm

    for _ in tqdm(range(n), desc="bootstrap", unit="rep", disable=not progress, leave=False):
        draw = rng.integers(0, len(speakers), size=len(speakers))
        idx = {k: (np.concatenate([g[s] for s in draw]) if len(draw) else np.zeros(0, np.int64))
               for k, g in groups.items()}
        for name, v in statistic(idx).items():
            values.setdefault(name, []).append(float(v) if v is not None else float("nan"))
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    cis: dict[str, list[float] | None] = {}
    undefined: dict[str, int] = {}
    for name, vals in values.items():
        a = np.asarray(vals)
        ok = a[np.isfinite(a)]
        undefined[name] = int(len(a) - len(ok))
        cis[name] = [float(np.percentile(ok, lo_q)), float(np.percentile(ok, hi_q))] if len(ok) else None
    return cis, undefined

