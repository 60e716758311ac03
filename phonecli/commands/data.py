"""`phonecli data ...`: prepare / info / validate / download (the generator `synth` registers itself here).

Only click is imported at module level; each command imports its stage lazily.
"""

from __future__ import annotations

import click

from phonecli.errors import PhonecliError


def _fail(e: Exception) -> click.ClickException:
    return click.ClickException(str(e))


@click.group()
def data() -> None:
    """Corpus preparation: SpeechOcean762 (OpenSLR dir or HF parquet) or the bundled sample -> manifest."""


@data.command()
@click.argument("source")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Manifest directory to write.")
@click.option("--dev-fraction", default=0.1, show_default=True, type=float,
              help="Fraction of train speakers moved to dev (speaker-disjoint).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the dev speaker choice.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="Bad utterance: stop, or drop it and list it in manifest.skipped.")
@click.option("--quiet", is_flag=True, help="Do not print warnings.")
def prepare(source: str, out: str, dev_fraction: float, seed: int, on_error: str, quiet: bool) -> None:
    """Normalize SOURCE into OUT/manifest.json.

    SOURCE is an OpenSLR-layout SpeechOcean762 directory, a directory of HF parquet shards
    (mispeech/speechocean762), or `sample` (the bundled synthetic corpus). The manifest path is
    the last line printed.

    \b
    Example:
      phonecli data prepare sample --out data/sample
    """
    from phonecli.data.info import corpus_info
    from phonecli.data.manifest import MANIFEST_NAME
    from phonecli.data.prepare import prepare_corpus

    warnings: list = []
    try:
        m = prepare_corpus(source, out, dev_fraction=dev_fraction, seed=seed, on_error=on_error, warnings=warnings)
    except (PhonecliError, OSError) as e:
        raise _fail(e) from e
    if not quiet:
        for w in warnings:
            click.echo(str(w), err=True)
    for s in m.skipped:
        click.echo(f"skipped: utterance {s['utt_id']}: {s['reason']}", err=True)
    splits = corpus_info(m)["splits"]
    summary = ", ".join(f"{s} {v['utterances']} utts / {v['speakers']} spk" for s, v in splits.items())
    click.echo(f"corpus {m.corpus_id}: {summary}; {len(m.skipped)} skipped, {len(warnings)} warning(s)")
    click.echo(str(m.root / MANIFEST_NAME))


@data.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(directory: str, as_json: bool) -> None:
    """Per-split counts: utterances, speakers, hours, phones, HQ / positive utterances, mispronounced phones.

    \b
    Example:
      phonecli data info data/sample --json
    """
    import json

    from phonecli.data.info import corpus_info, format_info
    from phonecli.data.manifest import Manifest

    try:
        stats = corpus_info(Manifest.load(directory))
    except (PhonecliError, OSError) as e:
        raise _fail(e) from e
    click.echo(json.dumps(stats, indent=1) if as_json else format_info(stats))


@data.command()
@click.argument("source")
@click.option("--errors-only", is_flag=True, help="Do not print warnings.")
def validate(source: str, errors_only: bool) -> None:
    """Check SOURCE (like Kaldi's validate_data_dir.sh): one line per problem; exit 1 on errors.

    Warnings (e.g. 44.1 kHz or stereo audio, which extraction resamples/downmixes) exit 0.

    \b
    Example:
      phonecli data validate ~/corpora/speechocean762
    """
    from phonecli.data.validate import summarize, validate_corpus

    problems = validate_corpus(source)
    for p in problems:
        if p.is_error or not errors_only:
            click.echo(str(p))
    click.echo(f"{source}: {summarize(problems)}")
    if any(p.is_error for p in problems):
        raise SystemExit(1)


@data.command()
@click.option("--to", "to", required=True, type=click.Path(file_okay=False), help="Directory to download and extract into.")
@click.option("--url", default=None, help="Archive URL (default: OpenSLR resource 101).")
@click.option("--md5", default=None, help="Expected MD5 of the archive (checked when given).")
@click.option("--retries", default=3, show_default=True, type=int, help="Automatic resumes after a dropped connection.")
@click.option("--keep-archive", is_flag=True, help="Keep the .tar.gz after extraction.")
def download(to: str, url: str | None, md5: str | None, retries: int, keep_archive: bool) -> None:
    """Download SpeechOcean762 (resumable, size/MD5 checked) and extract it; prints the corpus root.

    A re-run after success does nothing; a re-run after an interruption resumes.

    \b
    Example:
      phonecli data download --to ~/corpora
      phonecli data prepare ~/corpora/speechocean762 --out data/so762
    """
    import json
    from pathlib import Path

    from phonecli.data.download import DEFAULT_URL, MARKER, download_corpus

    try:
        root = download_corpus(to, url or DEFAULT_URL, md5, retries=retries, keep_archive=keep_archive)
    except (PhonecliError, OSError) as e:
        raise _fail(e) from e
    done = json.loads((Path(to) / MARKER).read_text())
    click.echo(f"archive: {done['bytes']} bytes, md5 {done['md5']} "
               f"({'checked' if done['md5_checked'] else 'not checked: pass --md5 to check'})", err=True)
    click.echo(str(root))
