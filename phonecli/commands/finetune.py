"""`phonecli finetune`: fine-tune an encoder with a fresh 40-way CTC head into a run directory."""

from __future__ import annotations

import click


@click.command("finetune")
@click.option("--model", "-m", required=True, metavar="NAME|DIR",
              help="Registry name (see `phonecli models`), a local save_pretrained directory, or NAME=DIR.")
@click.option("--data", "-d", required=True, type=click.Path(), metavar="DIR",
              help="Directory holding manifest.json (from `phonecli data prepare`); needs train and dev.")
@click.option("--mode", required=True, metavar="MODE",
              help="full | freeze-feature-encoder | top:K (train the top K layers) | lora | qlora (4-bit nf4 base + LoRA).")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), metavar="RUN",
              help="Run directory to write (refused if it holds a run, unless --resume).")
@click.option("--epochs", type=int, default=None, metavar="E", help="Epochs (default: family default, 10).")
@click.option("--lr", type=float, default=None, metavar="LR",
              help="Peak learning rate (default per family, from the seed table: 3e-5 large/1B, 1e-4 Whisper, "
                   "5e-5 W2V-BERT, 3e-4 wav2vec2 base).")
@click.option("--batch-seconds", type=float, default=None, metavar="S",
              help="Padded audio seconds per batch (default: seed batch size x 4 s; 16 s, 4 s for 1B models).")
@click.option("--grad-accum", type=int, default=1, show_default=True, metavar="N",
              help="Batches per optimizer step (effective batch = N x batch-seconds).")
@click.option("--max-audio-seconds", type=float, default=None, metavar="S",
              help="Drop training utterances longer than S seconds (counted in run.json; posteriors cover all).")
@click.option("--gradient-checkpointing", is_flag=True, default=False,
              help="Recompute activations in the backward pass (less memory, ~30% slower).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
              help="Autocast precision (fp16 needs CUDA; bf16 works on CPU and Ampere+ GPUs).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the head init, data order, dropout.")
@click.option("--resume", is_flag=True, default=False, help="Continue an interrupted run from its last checkpoint.")
@click.option("--targets", type=click.Choice(["canonical", "realized"]), default="canonical", show_default=True,
              help="CTC targets: canonical phones, or realized (annotated substitutions/deletions applied).")
@click.option("--warmup-ratio", type=float, default=0.1, show_default=True,
              help="Fraction of optimizer steps of linear warmup (then linear decay to 0).")
@click.option("--lora-r", type=int, default=16, show_default=True, help="LoRA rank (lora/qlora).")
@click.option("--lora-alpha", type=int, default=32, show_default=True, help="LoRA alpha (lora/qlora).")
@click.option("--save-steps", type=int, default=0, show_default=True, metavar="N",
              help="Also checkpoint every N optimizer steps (0: only at the end of each epoch).")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda", help="Where training runs.")
@click.option("--revision", default=None, metavar="R", help="Hub revision of the base model.")
@click.option("--trust-remote-code", is_flag=True, default=False, help="Allow model code from the Hub (off by default).")
def finetune(model, data, mode, out, epochs, lr, batch_seconds, grad_accum, max_audio_seconds, gradient_checkpointing,
             precision, seed, resume, targets, warmup_ratio, lora_r, lora_alpha, save_steps, device, revision,
             trust_remote_code):
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

    from phonecli.finetune.train import FinetuneConfig
    from phonecli.finetune.train import finetune as run_finetune

    _setup_logging(os.environ.get("PHONECLI_LOG_LEVEL", "INFO").upper())
    cfg = FinetuneConfig(model=model, data=data, mode=mode, out=out, epochs=epochs, lr=lr, batch_seconds=batch_seconds,
                         grad_accum=grad_accum, max_audio_seconds=max_audio_seconds,
                         gradient_checkpointing=gradient_checkpointing, precision=precision, seed=seed,
                         targets=targets, warmup_ratio=warmup_ratio, lora_r=lora_r, lora_alpha=lora_alpha,
                         save_steps=save_steps, device=device, revision=revision,
                         trust_remote_code=trust_remote_code, resume=resume)
    result = run_finetune(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    sel = result.selection or {}
    if sel:
        click.echo(f"best epoch {sel.get('epoch')}: dev PER {sel.get('value', float('nan')):.2f}%, "
                   f"dev loss {sel.get('dev_loss', float('nan')):.4f}; {len(result.skipped)} training utterances skipped")
    click.echo(str(result.run.path))


def _setup_logging(level: str) -> None:
    """Loop messages (epochs, skips, resume) to stderr above any tqdm bar."""
    import logging

    from phonecli.commands._stderr_log import log_to_stderr

    # bitsandbytes' CPU backend warns on import that the optional `kernels` package is absent; the
    # fallback it uses is the tested one, so the line is noise for users of this command
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    log_to_stderr("phonecli.finetune", level)
