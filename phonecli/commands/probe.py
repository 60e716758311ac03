"""`phonecli probe`: train a CTC probe (or an early/gated fusion) on cached features."""

from __future__ import annotations

import click


@click.command("probe")
@click.option("--features", "features", multiple=True, required=True, metavar="CACHE",
              help="Feature cache (path or fsspec URL). Repeat for early fusion (2+) or --head gated (exactly 2).")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Manifest directory (`phonecli data prepare --out DIR`): targets and corpus check.")
@click.option("--head", type=click.Choice(["linear", "mlp", "weighted", "transformer", "gated"]), default="linear",
              show_default=True, help="Probe head.")
@click.option("--layers", "layers", multiple=True, metavar="SPEC",
              help="N | A-B | a,b,c | weighted | last | all-single. Once for every cache or once per --features. "
                   "[default: weighted for --head weighted, else last]")
@click.option("--targets", type=click.Choice(["canonical", "realized"]), default="canonical", show_default=True,
              help="CTC targets: canonical phones, or realized (annotated substitutions/deletions applied).")
@click.option("--context", type=int, default=None,
              help="Stack +-K neighbouring frames. [default: 4 for weight-free caches (fbank) with frame-level "
                   "heads, else 0]")
@click.option("--epochs", type=int, default=100, show_default=True,
              help="Maximum epochs; training stops earlier when dev PER stops improving (--patience).")
@click.option("--patience", type=int, default=10, show_default=True, help="Epochs without a better dev PER before stopping.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="AdamW learning rate.")
@click.option("--batch-frames", type=int, default=None,
              help="Padded frames per batch (length-bucketed). [default: 1/50 of the train frames, clamped to 400-8000]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--layer-norm/--no-layer-norm", default=False, show_default=True,
              help="Per-layer LayerNorm (no affine) before the layer mixer.")
@click.option("--standardize/--no-standardize", default=True, show_default=True,
              help="Per-feature mean/std from the train split (saved with the weights).")
@click.option("--align", type=click.Choice(["repeat", "pool"]), default="repeat", show_default=True,
              help="Fusion of different frame rates: repeat the slower stream's frames, or average-pool the faster.")
@click.option("--memory", type=click.Choice(["auto", "ram", "stream"]), default="auto", show_default=True,
              help="Load train+dev into RAM (auto: when they fit in half the available memory) or stream.")
@click.option("--control", type=click.Choice(["shuffled-labels"]), default=None,
              help="Control task: train targets permuted across utterances (selectivity baseline).")
@click.option("--jobs", type=int, default=1, show_default=True, help="Parallel probes for --layers all-single (joblib).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
def probe(features, data, head, layers, targets, context, epochs, patience, lr, batch_frames, seed, device, layer_norm,
          standardize, align, memory, control, jobs, out):
    """Train a CTC probe on cached features; writes a run directory (last stdout line).

    \b
    Examples:
      phonecli probe --features cache/<corpus>/fbank.zarr --data data/sample --head mlp --out runs/fbank-mlp
      phonecli probe --features cache/<corpus>/hubert-large.zarr --data data/sample --head weighted --out runs/hubert-w
      phonecli probe --features A.zarr --layers all-single --data data/sample --out runs/A-layers
      phonecli probe --features A.zarr --features B.zarr --layers 24 --layers 12 --data data/sample --out runs/A+B
    """
    import logging

    from phonecli.errors import PhonecliError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = list(layers) if layers else None
    kwargs = dict(head=head, targets=targets, context=context, epochs=epochs, patience=patience, lr=lr,
                  batch_frames=batch_frames, seed=seed, device=device, layer_norm=layer_norm, standardize=standardize,
                  align=align, memory=memory, control=control)
    try:
        if spec and any(s.strip().lower() == "all-single" for s in spec):
            if len(spec) != 1 or len(features) != 1:
                raise click.UsageError("--layers all-single takes exactly one --features and one --layers")
            from phonecli.probe.sweep import sweep_layers

            result = sweep_layers(features[0], data, out, jobs=jobs, **kwargs)
            click.echo(result["table_md"].read_text())
            click.echo(str(result["out"]))
            return
        from phonecli.probe.train import train_probe

        run = train_probe(list(features), data, out, layers=spec, **kwargs)
    except PhonecliError as e:
        raise click.ClickException(str(e)) from e
    sel = run.info["selection"]
    click.echo(f"best dev PER {sel['value']:.2f}% at epoch {sel['epoch']} of {sel['epochs_run']} ({sel['stopped']})")
    click.echo(str(run.path))
