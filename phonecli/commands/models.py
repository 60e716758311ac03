"""`phonecli models [--json]`: the encoder registry (configs/models.yaml), without loading anything.

Only click is imported at module level; the registry reader needs pyyaml/numpy, never torch,
so the command answers in about a second.
"""

from __future__ import annotations

import click

_COLUMNS = [  # (header, ModelSpec attribute)
    ("name", "name"),
    ("source", "source"),
    ("class", "cls"),
    ("input", "input"),
    ("frames/s", "frame_rate"),
    ("layers", "layers"),
    ("hidden", "hidden_size"),
    ("status", "status"),
    ("notes", "notes"),
]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value not in ("", None) else "-"


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the registry as a JSON list (one object per model).")
def models(as_json: bool) -> None:
    """List the encoders phonecli can extract (name, Hub source, class, input kind, frames/s,
    hidden states incl. embeddings, hidden size, status, notes).

    \b
    Any row name works as `phonecli extract --model NAME`; so does a local save_pretrained
    directory (family read from its config.json) or NAME=DIR (row NAME, weights from DIR).
    """
    import json
    from dataclasses import asdict

    from phonecli.encoders.layers import CONVENTION_TEXT, LAYER_CONVENTION, describe_states
    from phonecli.encoders.registry import load_registry

    rows = list(load_registry().values())
    if as_json:
        out = []
        for s in rows:
            d = {"name": s.name, "family": s.family, "source": s.source, "class": s.cls, "input": s.input,
                 "frame_rate": s.frame_rate, "layers": s.layers, "hidden_size": s.hidden_size,
                 "status": s.status, "notes": s.notes}
            d.update({k: v for k, v in s.extra.items() if k not in d})
            # what each stored index is (the same descriptions extraction writes as the cache's layer_info)
            d["layer_convention"] = LAYER_CONVENTION
            d["layer_info"] = [asdict(li) for li in describe_states(s.family, s.layers, s.frame_rate,
                                                                    pre_ln=s.extra.get("pre_ln"))]
            out.append(d)
        click.echo(json.dumps(out, indent=2))
        return
    table = [[h for h, _ in _COLUMNS]] + [[_fmt(getattr(s, a)) for _, a in _COLUMNS] for s in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(_COLUMNS) - 1)]
    for r in table:
        # notes are the last, free-width column: never padded, so long notes don't widen the table
        click.echo("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1])
    click.echo(f"\nlayer indices ({LAYER_CONVENTION}): {CONVENTION_TEXT}; per index: phonecli models --json")
