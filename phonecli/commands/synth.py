"""`phonecli data synth`: generate the synthetic SpeechOcean762-layout sample corpus."""

from __future__ import annotations

import click


@click.command("synth")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output corpus directory.")
@click.option("--utterances", "utterances", type=click.IntRange(min=3), default=240, show_default=True,
              help="Number of utterances (train and test together; ~1/3 of the speakers go to test).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; the same seed gives identical files.")
@click.option("--per-speaker", "per_speaker", type=click.IntRange(min=1), default=6, show_default=True,
              help="Utterances per synthetic speaker (sets the number of speakers).")
@click.option("--format", "fmt", type=click.Choice(["flac", "wav"]), default="flac", show_default=True,
              help="Audio container (16 kHz mono 16-bit either way).")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Parallel espeak-ng/sox processes.")
@click.option("--overwrite", is_flag=True, help="Replace a corpus previously generated in --out.")
def synth(out: str, utterances: int, seed: int, per_speaker: int, fmt: str, jobs: int, overwrite: bool) -> None:
    """Generate a SYNTHETIC corpus in the exact SpeechOcean762 (OpenSLR 101) layout.

    espeak-ng speakers read short sentences from CMUdict words with injected, labelled
    Mandarin-L1-style phone errors (the audio is synthesized from the erroneous phones);
    scores.json follows the real schema. Needs espeak-ng and sox (apt-get install espeak-ng sox).

    \b
    Example:
      phonecli data synth --out synth_corpus --utterances 240 --seed 0
      phonecli data prepare synth_corpus --out data/synth
    """
    from phonecli.data.synth import generate

    summary = generate(out, utterances, seed, fmt=fmt, utts_per_speaker=per_speaker, jobs=jobs, overwrite=overwrite)
    sp = summary["splits"]
    click.echo(
        f"wrote {summary['utterances']} utterances ({sp['train']['utterances']} train / {sp['test']['utterances']} test), "
        f"{summary['speakers']} speakers ({sp['train']['speakers']} train / {sp['test']['speakers']} test), "
        f"{summary['hours'] * 3600:.1f} s of audio, {summary['bytes'] / 1e6:.2f} MB -> {out}"
    )
