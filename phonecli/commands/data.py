"""`phonecli data ...`: prepare / info / validate / download (the generator `synth` registers itself here).

Only click is imported at module level; each command imports its stage lazily.
"""

from __future__ import annotations

import click


@click.group()
def data() -> None:
    """Corpus preparation: SpeechOcean762, L2-ARCTIC, TIMIT, LibriSpeech, Kaldi or lhotse -> manifest."""


@data.command()
@click.argument("source")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Manifest directory to write.")
@click.option("--dev-fraction", default=0.1, show_default=True, type=float,
              help="Fraction of train speakers moved to dev (speaker-disjoint).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the dev speaker choice.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="Bad utterance: stop, or drop it and list it in manifest.skipped.")
@click.option("--quiet", is_flag=True, help="Do not print warnings.")
@click.option("--format", "fmt", type=click.Choice(["speechocean762", "l2arctic", "timit", "librispeech", "kaldi",
                                                    "lhotse"]),
              default=None, help="Corpus layout (default: recognised from SOURCE).")
@click.option("--lexicon", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Pronunciation lexicon(s), first pronunciation wins (Kaldi, lhotse; LibriSpeech overrides SUPERB's).")
@click.option("--phone-set", default=None, type=click.Choice(["48", "61", "39"]),
              help="TIMIT: phones to train on (default 48; scored on 39 either way).")
@click.option("--parts", default=None, help="lhotse: train=PART,dev=PART,test=PART when names do not say it.")
def prepare(source: str, out: str, dev_fraction: float, seed: int, on_error: str, quiet: bool, fmt: str | None,
            lexicon: tuple[str, ...], phone_set: str | None, parts: str | None) -> None:
    """Normalize SOURCE into OUT/manifest.json.

    SOURCE is a SpeechOcean762 directory (OpenSLR layout) or its HF parquet shards, `sample` (the
    bundled synthetic corpus), an L2-ARCTIC v5 tree, a TIMIT tree, a LibriSpeech tree (SUPERB PR
    parts), Kaldi data dirs (train/ [dev/] test/ + --lexicon) or lhotse manifests (+ --lexicon).
    The layout is recognised, or named with --format. The manifest path is the last line printed.

    \b
    Examples:
      phonecli data prepare sample --out data/sample
      phonecli data prepare ~/corpora/l2arctic_release_v5.0 --out data/l2arctic
      phonecli data prepare ~/corpora/timit/TIMIT --out data/timit
      phonecli data prepare ~/corpora/LibriSpeech --out data/librispeech
      phonecli data prepare ~/kaldi/egs/x/data --format kaldi --lexicon lexicon.txt --out data/x
    """
    from phonecli.data.info import corpus_info
    from phonecli.data.manifest import MANIFEST_NAME
    from phonecli.data.prepare import prepare_corpus

    warnings: list = []
    options = {"lexicon": list(lexicon) or None, "phone_set": phone_set, "parts": parts}
    m = prepare_corpus(source, out, dev_fraction=dev_fraction, seed=seed, on_error=on_error, warnings=warnings,
                       fmt=fmt, options=options)
    if not quiet:
        for w in warnings:
            click.echo(str(w), err=True)
    for s in m.skipped:
        click.echo(f"skipped: utterance {s['utt_id']}: {s['reason']}", err=True)
    splits = corpus_info(m)["splits"]
    summary = ", ".join(f"{s} {v['utterances']} utts / {v['speakers']} spk" for s, v in splits.items())
    click.echo(f"corpus {m.corpus_id} ({m.corpus.benchmark}): {summary}; {len(m.skipped)} skipped, "
               f"{len(warnings)} warning(s)")
    click.echo(str(m.root / MANIFEST_NAME))


@data.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(directory: str, as_json: bool) -> None:
    """Per-split counts: utterances, speakers, hours, phones, and what the corpus is scored on
    (SpeechOcean762: HQ / positive utterances, mispronounced phones; PER corpora: scored phones;
    L2-ARCTIC: annotated utterances, substitutions / deletions / additions).

    \b
    Example:
      phonecli data info data/sample --json
    """
    import json

    from phonecli.data.info import corpus_info, format_info
    from phonecli.data.manifest import Manifest

    stats = corpus_info(Manifest.load(directory))
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
@click.option("--corpus", "corpus_name", type=click.Choice(["speechocean762", "librispeech"]), default="speechocean762",
              show_default=True, help="librispeech: the SUPERB PR parts (OpenSLR 12, SHA-256 checked) and lexicons.")
@click.option("--url", default=None, help="Archive URL (default: OpenSLR resource 101); for librispeech the mirror "
                                          "folder holding PART.tar.gz.")
@click.option("--md5", default=None, help="Expected MD5 of the archive (checked when given).")
@click.option("--retries", default=3, show_default=True, type=int, help="Automatic resumes after a dropped connection.")
@click.option("--keep-archive", is_flag=True, help="Keep the .tar.gz after extraction.")
def download(to: str, corpus_name: str, url: str | None, md5: str | None, retries: int, keep_archive: bool) -> None:
    """Download SpeechOcean762 or LibriSpeech (resumable, checksummed) and extract it; prints the corpus root.

    A re-run after success does nothing; a re-run after an interruption resumes.

    \b
    Examples:
      phonecli data download --to ~/corpora
      phonecli data prepare ~/corpora/speechocean762 --out data/so762
      phonecli data download --corpus librispeech --to ~/corpora
      phonecli data prepare ~/corpora/LibriSpeech --out data/librispeech
    """
    import json
    from pathlib import Path

    from phonecli.data.download import DEFAULT_URL, MARKER, download_corpus

    if corpus_name == "librispeech":
        from phonecli.data.librispeech import MIRROR, download_librispeech

        if md5:
            raise click.UsageError("--md5 applies to SpeechOcean762; LibriSpeech archives are SHA-256 checked")
        root = download_librispeech(to, mirror=url or MIRROR, retries=retries, keep_archive=keep_archive)
        click.echo(str(root))
        return

    root = download_corpus(to, url or DEFAULT_URL, md5, retries=retries, keep_archive=keep_archive)
    done = json.loads((Path(to) / MARKER).read_text())
    click.echo(f"archive: {done['bytes']} bytes, md5 {done['md5']} "
               f"({'checked' if done['md5_checked'] else 'not checked: pass --md5 to check'})", err=True)
    click.echo(str(root))
