"""`phonecli fuse`: fusion of finished runs. `fuse late` combines saved log-posteriors.

The group stays open: feature-level fusions (early / gated) are probes
(`phonecli probe --features A --features B [--head gated]`) and may be added here as aliases.
"""

from __future__ import annotations

import click


@click.group("fuse")
def fuse() -> None:
    """Fuse runs. Late fusion works on saved posteriors (no encoder, no retraining).

    \b
    Early / gated fusion train one probe over several caches:
      phonecli probe --features A.zarr --features B.zarr --head linear|gated ...
    """


@fuse.command("late")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), metavar="RUN",
              help="Directory of the fused run (a normal run dir + sweep.csv + sweep.png).")
@click.option("--alphas", default="0:1:0.1", show_default=True, metavar="GRID",
              help="Weight of the first run: comma list (0.3,0.5,0.7) or START:STOP:STEP (inclusive). "
                   "3+ runs: every weight vector on the simplex using these values.")
@click.option("--rule", type=click.Choice(["log-linear", "linear"]), default="log-linear", show_default=True,
              help="log-linear: log_softmax(sum a_i log p_i); linear: log(sum a_i p_i).")
@click.option("--select-on", default="dev-per", show_default=True, metavar="METRIC",
              help="Dev metric that picks the weights: dev-per, dev-per-hq, dev-auc, dev-pearson, "
                   "dev-spearman, dev-f1, dev-ctc-loss.")
@click.option("--align", type=click.Choice(["repeat", "refuse"]), default="repeat", show_default=True,
              help="Runs at different frame rates: repeat the slower run's frames, or refuse.")
@click.option("--jobs", "-j", "n_jobs", type=int, default=-1, show_default=True,
              help="Worker processes for the sweep (-1: one per core, serial when the sweep is small).")
@click.option("--name", default=None, help="Run name (default: the --out directory name).")
@click.option("--no-plot", is_flag=True, help="Skip sweep.png.")
def late(runs, out, alphas, rule, select_on, align, n_jobs, name, no_plot) -> None:
    """Late fusion of RUN_A RUN_B [RUN_C ...]: weights swept on dev, test at the dev-chosen weights.

    \b
    Example:
      phonecli fuse late runs/hubert-w runs/wavlm-w --alphas 0:1:0.1 --out runs/late-hw
      phonecli evaluate runs/late-hw
    """
    import logging
    import sys

    from phonecli.fuse.late import SWEEP_CSV, FusionError, late_fusion

    if len(runs) < 2:
        raise click.UsageError("give at least two runs to fuse")
    logger = logging.getLogger("phonecli.fuse")
    if not logger.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(h)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        run = late_fusion(list(runs), out, alphas=alphas, rule=rule, select_on=select_on, align=align,
                          n_jobs=n_jobs, plot=not no_plot, name=name)
    except FusionError as e:
        raise click.ClickException(str(e)) from e
    sel = run.info["selection"]
    w = ", ".join(f"{x:g}" for x in sel["weights"])
    click.echo(f"chose weights ({w}) on {sel['metric']} = {sel['value']:.4g} "
               f"({run.info['config']['grid_size']} points, {run.info['sweep_seconds']:.1f} s)")
    click.echo(f"sweep: {run.path / SWEEP_CSV}")
    click.echo(str(run.path))
