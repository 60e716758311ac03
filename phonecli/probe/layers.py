"""``--layers`` parsing: which stored hidden states a probe reads and how it combines them.

Accepted forms (indices are the model's own hidden-state indices, as stored in the cache's
``layers`` metadata; 0 = CNN/embedding output):

- ``N``            one layer
- ``A-B``          an inclusive range
- ``a,b,c``        a list (kept in the given order, duplicates refused)
- ``weighted``     every stored layer, mixed by learned softmax weights (SUPERB style)
- ``all-single``   one probe per stored layer (handled by :mod:`phonecli.probe.sweep`)
- ``last``         the last stored layer

Several selected layers are combined by the head's layer mixer: the ``weighted`` head (or
``--layers weighted``) learns softmax weights; every other head concatenates them along the
feature dimension.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from phonecli.errors import LayerSpecError  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class LayerSelection:
    """Resolved selection for one cache: ``layers`` (hidden-state indices) and ``weighted``."""

    layers: tuple[int, ...]
    weighted: bool

    def to_dict(self) -> dict:
        return {"layers": list(self.layers), "weighted": self.weighted}


_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def parse_layers(spec: str | int | list[int] | None, available: list[int], *, source: str = "cache") -> LayerSelection:
    """Resolve ``spec`` against the ``available`` stored layers of ``source`` (a cache path for messages).

    ``None`` means ``last``. ``all-single`` is not resolved here (it is a sweep, not a selection).
    Raises :class:`LayerSpecError` with the available layers in the message.
    """
    avail = list(available)
    if not avail:
        raise LayerSpecError(f"{source}: the cache stores no layers; re-run `phonecli extract`")
    if spec is None:
        spec = "last"
    if isinstance(spec, int):
        wanted = [spec]
        weighted = False
    elif isinstance(spec, (list, tuple)):
        wanted = [int(x) for x in spec]
        weighted = False
    else:
        s = str(spec).strip().lower()
        weighted = False
        if s == "weighted":
            return LayerSelection(tuple(avail), True)
        if s == "last":
            return LayerSelection((avail[-1],), False)
        if s == "all-single":
            raise LayerSpecError("--layers all-single runs one probe per layer; use phonecli.probe.sweep_layers")
        m = _RANGE.match(s)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if a > b:
                raise LayerSpecError(f"--layers {spec}: empty range (start {a} > end {b}); write {b}-{a}")
            wanted = list(range(a, b + 1))
        elif re.fullmatch(r"\d+(\s*,\s*\d+)*", s):
            wanted = [int(x) for x in s.split(",")]
        else:
            raise LayerSpecError(
                f"--layers {spec!r}: not understood; use N, A-B, a,b,c, weighted, last or all-single"
            )
    if len(set(wanted)) != len(wanted):
        raise LayerSpecError(f"--layers {spec}: a layer is listed twice; list each layer once")
    missing = [x for x in wanted if x not in avail]
    if missing:
        raise LayerSpecError(
            f"{source}: layer(s) {','.join(map(str, missing))} not in the cache (stored layers: {_compact(avail)}); "
            "pick stored layers or re-extract with them"
        )
    return LayerSelection(tuple(wanted), weighted)


def _compact(xs: list[int]) -> str:
    """``[0,1,2,3,7]`` -> ``"0-3,7"`` for error messages."""
    out, i = [], 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ",".join(out)
