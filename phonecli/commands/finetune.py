"""`phonecli finetune`: fine-tune an encoder with a fresh 40-way CTC head into a run directory."""

from __future__ import annotations

import click

from phonecli.commands._options import config_options, lifecycle_options
from phonecli.config import FinetuneConfig


@click.command("finetune")
@click.option("--model", "-m", required=True, metavar="NAME|DIR",
              help="Registry name (see `phonecli models`), a local save_pretrained directory, or NAME=DIR.")
@click.option("--data", "-d", required=True, type=click.Path(), metavar="DIR",
              help="Directory holding manifest.json (from `phonecli data prepare`); needs train and dev.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), metavar="RUN",
              help="Run directory to write (refused if it holds a run, unless --resume or --overwrite).")
@config_options(FinetuneConfig)
@lifecycle_options
def finetune(model, data, out, config: FinetuneConfig, overwrite, resume):
    """Fine-tune an encoder + fresh CTC head (39 phones + blank) and write a run directory.

    The run (run.json, weights.safetensors, posteriors/{train,dev,test}, train_log.jsonl) works with
    `phonecli evaluate`, `phonecli fuse late` and `phonecli report`; `phonecli extract --model RUN`
    caches the fine-tuned encoder. The epoch with the lowest dev PER is kept. The last stdout line
    is RUN. Several GPUs: `torchrun --nproc-per-node N -m phonecli finetune ...`.

    \b
    Examples:
      phonecli finetune --model hubert-large --data data/so762 --mode freeze-feature-encoder --out runs/ft-hubert
      phonecli finetune --model mms-1b --data data/so762 --mode qlora --gradient-checkpointing --out runs/ft-mms
    """
    import os

    from phonecli.finetune.train import finetune as run_finetune

    result = run_finetune(model, data, out, config, overwrite=overwrite, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    sel = result.selection or {}
    if sel:
        click.echo(f"best epoch {sel.get('epoch')}: dev PER {sel.get('value', float('nan')):.2f}%, "
                   f"dev loss {sel.get('dev_loss', float('nan')):.4f}; {len(result.skipped)} training utterances skipped")
    click.echo(str(result.run.path))
