"""`phonecli quickstart` and `phonecli run EXPERIMENT.yaml [--plan]` (work in phonecli.pipeline)."""

from __future__ import annotations

import click


@click.command("quickstart")
@click.option("--out", "-o", default="phonecli-quickstart", show_default=True, type=click.Path(file_okay=False),
              help="Directory for data/, cache/, models/, runs/ and results/.")
def quickstart(out: str) -> None:
    """The whole pipeline offline on the bundled sample corpus (a few minutes on 2 CPU cores).

    Prepares the sample corpus, extracts fbank and a tiny random HuBERT (saved locally, exercising
    the SSL path), trains linear / mlp / weighted probes, fuses two of them late, evaluates and
    writes OUT/results/results.md. Re-running skips what is complete.

    \b
    Example:
      phonecli quickstart --out qs
    """
    import os

    os.environ.setdefault("MPLBACKEND", "Agg")
    from phonecli.pipeline.quickstart import quickstart as run_quickstart

    res = run_quickstart(out, echo=click.echo)
    click.echo("")
    click.echo(res["summary"])
    click.echo(f"\nfull report: {res['results_md']}")


@click.command("run")
@click.argument("experiment", type=click.Path(dir_okay=False))
@click.option("--plan", "plan_only", is_flag=True,
              help="Only print the steps, estimated cache sizes and what would be skipped (offline, no weights).")
@click.option("--out", "-o", default=None, type=click.Path(file_okay=False),
              help="Root for the preset's relative paths (default: the current directory).")
def run(experiment: str, plan_only: bool, out: str | None) -> None:
    """Run an experiment preset: prepare, extract, probe/finetune, fuse, evaluate, report.

    Steps whose output exists and is complete (same settings) are skipped, and said so.
    EXPERIMENT is a YAML file or the name of a shipped preset (seed-table.yaml, sample-quick.yaml).

    \b
    Example:
      phonecli run seed-table.yaml --plan
      phonecli run phonecli/configs/experiments/sample-quick.yaml --out qs
    """
    import os

    os.environ.setdefault("MPLBACKEND", "Agg")
    from phonecli.pipeline.experiment import run_experiment

    run_experiment(experiment, out, plan_only=plan_only, echo=click.echo)
