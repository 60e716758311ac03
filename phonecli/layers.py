"""The ``--layers`` grammar: one parser for ``extract``, ``probe`` and experiment presets/plans.

Indices are the model's own hidden-state indices (0 = CNN/embedding output, N = output of
Transformer layer N), as stored in a cache's ``layers`` metadata. A spec is one of:

==============  ====================================================  ==========================
spec            meaning                                               accepted by
==============  ====================================================  ==========================
``all``         every available hidden state                          extract, probe, presets
``last``        the last available hidden state                       extract, probe, presets
``0,6,12-24``   a comma list of indices ``N``, inclusive ranges        extract, probe, presets
                ``A-B`` (``A <= B``) and ``last``, mixed freely
``weighted``    every stored state, mixed by learned softmax           probe
                weights (SUPERB style)
``all-single``  one probe per stored state (a sweep, not a            ``phonecli probe`` only
                selection: :func:`phonecli.probe.sweep_layers`)
==============  ====================================================  ==========================

The Python API also takes an ``int`` or a list of ints.

**Order and duplicates, everywhere the same way**: a selection is a *set* of hidden states,
always used in ascending index order (the order a cache stores them), so ``6,1`` and ``1,6``
select the same layers, make the same cache and the same probe. A state named twice (``6,6``,
``0-6,6``, or ``12,last`` on a 13-state model) is refused with one line: silently de-duplicating
would make the planner count a layer twice and hides a typo. A descending range (``12-6``) is
refused too.

Only the standard library is imported here (the CLI and presets validate specs at start-up).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from phonecli.errors import LayerSpecError

ALL, LAST, WEIGHTED, ALL_SINGLE = "all", "last", "weighted", "all-single"
KEYWORDS = (ALL, LAST, WEIGHTED, ALL_SINGLE)
#: what each entry point accepts
EXTRACT = frozenset({ALL, LAST, "list"})
PROBE = frozenset({ALL, LAST, "list", WEIGHTED})
PROBE_CLI = PROBE | {ALL_SINGLE}

_ITEM = re.compile(r"^(\d+)(?:\s*-\s*(\d+))?$")
HELP = "all | last | weighted | N | A-B | a,b,A-B (mixed) | all-single"


@dataclass(frozen=True)
class LayerSpec:
    """A parsed spec (syntax only; :func:`resolve` checks it against the available states).

    ``kind``: ``all``, ``last``, ``weighted``, ``all-single`` or ``list``; ``items`` (kind
    ``list``): ``(start, end)`` inclusive pairs and ``"last"`` in the order written.
    """

    text: str
    kind: str
    items: tuple = ()


@dataclass(frozen=True)
class LayerSelection:
    """A resolved selection: ``layers`` (ascending hidden-state indices) and ``weighted`` (learned mix)."""

    layers: tuple[int, ...]
    weighted: bool = False

    def to_dict(self) -> dict:
        return {"layers": list(self.layers), "weighted": self.weighted}


def spec_text(spec) -> str:
    """The text form of an API spec: ``6`` -> ``"6"``, ``[6, 1]`` -> ``"6,1"``, strings stripped/lower-cased."""
    if isinstance(spec, bool):
        raise LayerSpecError(f"--layers {spec!r}: not a layer spec; use {HELP}")
    if isinstance(spec, int):
        return str(spec)
    if isinstance(spec, (list, tuple)):
        if not spec or not all(isinstance(x, int) and not isinstance(x, bool) for x in spec):
            raise LayerSpecError(f"--layers {list(spec)!r}: a list spec holds hidden-state indices (ints)")
        return ",".join(str(x) for x in spec)
    if isinstance(spec, str):
        return " ".join(spec.split()).lower()
    raise LayerSpecError(f"--layers {spec!r}: not a layer spec; use {HELP}")


def parse(spec, allowed: frozenset[str] = PROBE_CLI, *, option: str = "--layers") -> LayerSpec:
    """Check the syntax of ``spec`` (str, int or list of ints) and that its kind is ``allowed``."""
    text = spec_text(spec)
    if text in KEYWORDS:
        kind, items = text, ()
    else:
        items = []
        for tok in (t.strip() for t in text.split(",")):
            if tok == LAST:
                items.append(LAST)
                continue
            m = _ITEM.match(tok)
            if not m:
                raise LayerSpecError(f"{option} {text!r}: {tok!r} is not understood; use {_allowed_help(allowed)}")
            a = int(m.group(1))
            b = int(m.group(2)) if m.group(2) is not None else a
            if a > b:
                raise LayerSpecError(f"{option} {text!r}: empty range {a}-{b} (start > end); write {b}-{a}")
            items.append((a, b))
        kind, items = "list", tuple(items)
        _refuse_twice([x for it in items if it != LAST for x in range(it[0], it[1] + 1)], text, option)
    if kind == ALL_SINGLE and kind not in allowed:
        raise LayerSpecError(f"{option} all-single runs one probe per layer (a sweep, not a selection): use "
                             "`phonecli probe --layers all-single` or phonecli.probe.sweep_layers")
    if kind not in allowed:
        raise LayerSpecError(f"{option} {text}: not accepted here; use {_allowed_help(allowed)}")
    return LayerSpec(text, kind, tuple(items))


def resolve(spec, available, allowed: frozenset[str] = PROBE, *, source: str = "cache",
            option: str = "--layers") -> LayerSelection:
    """Resolve ``spec`` against the ``available`` hidden-state indices of ``source`` (named in messages).

    Returns the ascending selection; ``weighted`` is set for the ``weighted`` keyword. Raises
    :class:`~phonecli.errors.LayerSpecError` for bad syntax, a kind not ``allowed``, an index
    not available (the message lists the available ones) or a state named twice.
    """
    avail = sorted(int(x) for x in available)
    if not avail:
        raise LayerSpecError(f"{source}: no hidden states are stored; re-run `phonecli extract`")
    ps = spec if isinstance(spec, LayerSpec) else parse(spec, allowed - {ALL_SINGLE}, option=option)
    if ps.kind in (ALL, WEIGHTED):
        return LayerSelection(tuple(avail), ps.kind == WEIGHTED)
    if ps.kind == LAST:
        return LayerSelection((avail[-1],), False)
    chosen: list[int] = []
    for item in ps.items:
        chosen.extend([avail[-1]] if item == LAST else range(item[0], item[1] + 1))
    _refuse_twice(chosen, ps.text, option)
    seen = set(chosen)
    missing = sorted(x for x in seen if x not in set(avail))
    if missing:
        raise LayerSpecError(f"{source}: layer(s) {compact(missing)} not available (available: {compact(avail)}); "
                             "pick from the available layers")
    return LayerSelection(tuple(sorted(seen)), False)


def _refuse_twice(indices: list[int], text: str, option: str) -> None:
    seen, twice = set(), []
    for x in indices:
        if x in seen and x not in twice:
            twice.append(x)
        seen.add(x)
    if twice:
        raise LayerSpecError(f"{option} {text}: layer {','.join(map(str, twice))} is named twice; "
                             "name each layer once (order does not matter: layers are used in ascending order)")


def compact(indices, sep: str = ",") -> str:
    """``[0, 1, 2, 3, 7]`` -> ``"0-3,7"`` (``sep="_"`` for cache file names: ``"0-3_7"``)."""
    xs = sorted(indices)
    out, i = [], 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return sep.join(out)


def _allowed_help(allowed: frozenset[str]) -> str:
    parts = [k for k in (ALL, LAST, WEIGHTED) if k in allowed]
    if "list" in allowed:
        parts += ["N", "A-B", "a,b,A-B (mixed)"]
    if ALL_SINGLE in allowed:
        parts.append(ALL_SINGLE)
    return " | ".join(parts)
