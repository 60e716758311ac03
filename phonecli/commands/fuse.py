"""`phonecli fuse`: fusion of finished runs. `fuse late` combines saved log-posteriors.

The group stays open: feature-level fusions (early / gated) are probes
(`phonecli probe --features A --features B [--head gated]`) and may be added here as aliases.
"""

from __future__ import annotations

import click

from phonecli.commands._options import config_options, lifecycle_options
from phonecli.config import LateFusionConfig


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
@config_options(LateFusionConfig)
@click.option("--jobs", "-j", "n_jobs", type=int, default=-1, show_default=True,
              help="Worker processes for the sweep (-1: one per core, serial when the sweep is small).")
@click.option("--name", default=None, help="Run name (default: the --out directory name).")
@click.option("--no-plot", is_flag=True, help="Skip sweep.png.")
@lifecycle_options
def late(runs, out, config: LateFusionConfig, n_jobs, name, no_plot, overwrite, resume) -> None:
    """Late fusion of RUN_A RUN_B [RUN_C ...]: weights swept on dev, test at the dev-chosen weights.

    \b
    Example:
      phonecli fuse late runs/hubert-w runs/wavlm-w --alphas 0:1:0.1 --out runs/late-hw
      phonecli evaluate runs/late-hw
    """
    from phonecli.fuse.late import SWEEP_CSV, fuse_late

    if len(runs) < 2:
        raise click.UsageError("give at least two runs to fuse")
    run = fuse_late(list(runs), out, config, overwrite=overwrite, resume=resume, n_jobs=n_jobs, plot=not no_plot,
                    name=name)
    sel = run.info["selection"]
    w = ", ".join(f"{x:g}" for x in sel["weights"])
    click.echo(f"chose weights ({w}) on {sel['metric']} = {sel['value']:.4g} "
               f"({run.info['config']['grid_size']} points, {run.info['sweep_seconds']:.1f} s)")
    click.echo(f"sweep: {run.path / SWEEP_CSV}")
    click.echo(str(run.path))
