"""`phonecli extract`: run one encoder over a manifest into the Zarr feature cache."""

from __future__ import annotations

import click

from phonecli.commands._options import config_options
from phonecli.config import ExtractConfig


@click.command("extract")
@click.option("--model", "-m", required=True, metavar="NAME|DIR",
              help="Registry name (see `phonecli models`) or a local save_pretrained directory.")
@click.option("--data", "-d", required=True, type=click.Path(), metavar="DIR",
              help="Directory holding manifest.json (from `phonecli data prepare`).")
@click.option("--cache", "cache_root", metavar="ROOT", default=None,
              help="Cache root (local path or fsspec URL); the store goes to ROOT/<corpus_id>/<model>.zarr.")
@click.option("--out", default=None, metavar="PATH",
              help="Write exactly this store path/URL instead of the ROOT/<corpus_id>/... default.")
@config_options(ExtractConfig)
def extract(model, data, cache_root, out, config: ExtractConfig):
    """Extract every hidden state of an encoder for a manifest into the feature cache.

    Resumable: rerunning the same command after a crash only does the missing parts. Under
    `torchrun --nproc-per-node N -m phonecli extract ...` ranks share the parts (also across
    machines: `torchrun --nnodes M ...`, see docs/sections/cluster.md). The last line on stdout
    is the cache path.

    \b
    Example:
      phonecli extract --model fbank --data data/sample --cache cache
    """
    import os

    from phonecli.extract.runner import run_extraction

    if cache_root is None and out is None:
        raise click.UsageError("give --cache ROOT (or --out PATH)")
    report = run_extraction(model, data, cache_root, config, out=out)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun rank 0 alone reports
    click.echo(report.summary())
    click.echo(str(report.path))
