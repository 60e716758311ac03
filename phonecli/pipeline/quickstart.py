"""``phonecli quickstart``: the whole pipeline offline on the bundled sample corpus, in a few minutes.

It is the preset ``configs/experiments/sample-quick.yaml`` run by the experiment runner: prepare
the sample corpus, extract fbank, save a tiny random HuBERT with ``save_pretrained`` and extract
it (the real SSL code path, no download), train linear / mlp / weighted probes, fuse two of
them late, evaluate every run and write the report. A second call in the same directory skips
everything already complete and only rewrites the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

PRESET = Path(__file__).resolve().parent.parent / "configs" / "experiments" / "sample-quick.yaml"


def quickstart(out: str | Path = "phonecli-quickstart", echo: Callable[[str], None] = print,
               progress: bool | None = None, overrides: dict | None = None) -> dict:
    """Run the sample-quick preset under ``out``; return ``{"steps", "results_md", "summary", "out"}``.

    ``overrides``: shallow updates of the preset's ``defaults`` blocks (e.g. ``{"probe": {"epochs": 5}}``),
    for quick smoke runs; the shipped quickstart uses none.
    """
    from phonecli.pipeline.experiment import load_experiment, run_experiment

    exp = load_experiment(PRESET, overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = run_experiment(exp, out, echo=echo, progress=progress)
    results = out / "results"
    summary = (results / "results.md").read_text() if (results / "results.md").exists() else ""
    return {"steps": steps, "results_md": results / "results.md", "summary": _summary_table(summary), "out": out}


def _summary_table(md: str) -> str:
    """The first Markdown table of results.md (the seed-style summary)."""
    lines, table = md.splitlines(), []
    for line in lines:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    return "\n".join(table)
