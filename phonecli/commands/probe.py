"""`phonecli probe`: train a CTC probe (or an early/gated fusion) on cached features."""

from __future__ import annotations

import click

from phonecli.commands._options import config_options, lifecycle_options
from phonecli.config import ProbeConfig


@click.command("probe")
@click.option("--features", "features", multiple=True, required=True, metavar="CACHE",
              help="Feature cache (path or fsspec URL). Repeat for early fusion (2+) or --head gated (exactly 2).")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Manifest directory (`phonecli data prepare --out DIR`): targets and corpus check.")
@config_options(ProbeConfig)
@click.option("--jobs", type=int, default=1, show_default=True, help="Parallel probes for --layers all-single (joblib).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@lifecycle_options
def probe(features, data, config: ProbeConfig, jobs, out, overwrite, resume):
    """Train a CTC probe on cached features; writes a run directory (last stdout line).

    A finished run at --out is never replaced silently: --overwrite replaces it (metrics and plots
    too), --resume continues an interrupted one (Ctrl-C, kill, full disk) from its last epoch.

    \b
    Examples:
      phonecli probe --features cache/<corpus>/fbank.zarr --data data/sample --head mlp --out runs/fbank-mlp
      phonecli probe --features cache/<corpus>/hubert-large.zarr --data data/sample --head weighted --out runs/hubert-w
      phonecli probe --features A.zarr --layers all-single --data data/sample --out runs/A-layers
      phonecli probe --features A.zarr --features B.zarr --layers 24 --layers 12 --data data/sample --out runs/A+B
    """
    if config.is_layer_sweep:
        if len(features) != 1:
            raise click.UsageError("--layers all-single takes exactly one --features")
        from phonecli.probe.sweep import sweep_layers

        result = sweep_layers(features[0], data, out, config, jobs=jobs, overwrite=overwrite, resume=resume)
        click.echo(result["table_md"].read_text())
        click.echo(str(result["out"]))
        return
    from phonecli.probe.train import train_probe

    run = train_probe(list(features), data, out, config, overwrite=overwrite, resume=resume)
    sel = run.info["selection"]
    click.echo(f"best dev PER {sel['value']:.2f}% at epoch {sel['epoch']} of {sel['epochs_run']} ({sel['stopped']})")
    click.echo(str(run.path))
