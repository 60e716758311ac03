"""Praat TextGrid reading (through ``praatio``, which parses Praat's long and short text formats).

Only interval tiers are read; labels come back with surrounding whitespace stripped (praatio
strips them), empty intervals kept, so silences between words stay visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from phonecli.errors import CorpusError


@dataclass(frozen=True)
class Interval:
    start: float    # seconds
    end: float      # seconds
    label: str


def read_textgrid(path: str | Path) -> dict[str, list[Interval]]:
    """``{tier name (lower-cased): [Interval, ...]}`` of the interval tiers of ``path``.

    Raises :class:`CorpusError` (one line naming the file) when the file cannot be parsed.
    """
    from praatio import textgrid
    from praatio.utilities.errors import PraatioException

    path = Path(path)
    try:
        tg = textgrid.openTextgrid(str(path), includeEmptyIntervals=True, reportingMode="silence",
                                   duplicateNamesMode="rename")
    except (PraatioException, IndexError, ValueError, KeyError, UnicodeDecodeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CorpusError(f"{path}: not a readable Praat TextGrid ({msg}); restore the file from the "
                          "corpus release or remove the utterance") from e
    tiers: dict[str, list[Interval]] = {}
    for name in tg.tierNames:
        tier = tg.getTier(name)
        if getattr(tier, "tierType", "") != textgrid.INTERVAL_TIER:
            continue
        tiers.setdefault(name.strip().lower(), [Interval(float(e.start), float(e.end), str(e.label))
                                                for e in tier.entries])
    return tiers
