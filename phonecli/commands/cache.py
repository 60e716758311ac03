"""`phonecli cache ls | info | verify | export | rm`: inspect and maintain feature caches.

Only click is imported here; the cache package (numpy, zarr, h5py) is imported inside commands.
"""

from __future__ import annotations

import json

import click


@click.group("cache")
def cache() -> None:
    """Inspect and maintain Zarr feature caches written by `phonecli extract`."""


@cache.command("ls")
@click.argument("root")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (a JSON list).")
def ls_cmd(root: str, as_json: bool) -> None:
    """List the caches under ROOT (a directory or fsspec URL)."""
    from phonecli.cache.manage import human_bytes, list_caches

    rows = list_caches(root)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no phonecli caches under {root}")
        return
    header = f"{'model':<22} {'corpus':<17} {'utts':>6} {'layers':>6} {'dtype':<8} {'size':>10}  complete  path"
    click.echo(header)
    for r in rows:
        utts = r["utterances"] if r["utterances"] is not None else f"{r['planned_utterances']}*"
        click.echo(f"{str(r['model'])[:22]:<22} {str(r['corpus_id'])[:17]:<17} {utts:>6} {r['layers']:>6} "
                   f"{str(r['dtype']):<8} {human_bytes(r['size_bytes']):>10}  {'yes' if r['complete'] else 'NO':<8}  {r['path']}")


@cache.command("info")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info_cmd(path: str, as_json: bool) -> None:
    """Metadata, per-split counts and skipped utterances of the cache at PATH."""
    from phonecli.cache.manage import cache_info, human_bytes

    info = cache_info(path)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    m = info["metadata"]
    click.echo(f"cache       {info['path']}")
    click.echo(f"model       {m.get('model')} ({m.get('model_id')}, revision {m.get('revision')}, "
               f"weights {m.get('weights_fingerprint')})")
    click.echo(f"corpus      {m.get('corpus_id')}")
    click.echo(f"layers      {len(m.get('layers', []))}: {m.get('layers')}")
    click.echo(f"features    dim {m.get('dim')}, {m.get('dtype')}, {m.get('frame_rate')} frames/s, "
               f"{human_bytes(info['size_bytes'])} on disk")
    click.echo(f"versions    transformers {m.get('transformers_version')}, torch {m.get('torch_version')}, "
               f"phonecli {m.get('phonecli_version')}")
    click.echo(f"settings    {json.dumps(m.get('settings', {}), sort_keys=True)}")
    click.echo(f"created     {m.get('created')}")
    click.echo(f"complete    {'yes' if info['complete'] else 'NO'} "
               f"({info['parts']['complete']}/{info['parts']['planned']} parts)")
    for s, c in info["splits"].items():
        dur = f"{c['seconds'] / 3600:.2f} h" if c["seconds"] >= 3600 else f"{c['seconds']:.1f} s"
        click.echo(f"split {s:<6} {c['utterances']:>6} utterances {c['frames']:>9} frames "
                   f"{dur:>9}  {human_bytes(c['bytes'])} in RAM (all layers)")
    click.echo(f"skipped     {len(info['skipped'])}")
    for s in info["skipped"]:
        click.echo(f"  {s.get('utt_id')}: {s.get('reason')}")


@cache.command("verify")
@click.argument("path")
@click.option("--repair", is_flag=True,
              help="Remove the completion markers of damaged parts so re-running the extraction redoes them.")
def verify_cmd(path: str, repair: bool) -> None:
    """Re-read everything in the cache at PATH; exit 1 with one line per problem."""
    from phonecli.cache.verify import verify_cache

    problems = verify_cache(path, repair=repair)
    if problems:
        for line in problems:
            click.echo(line, err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"ok: {path}")


@cache.command("export")
@click.argument("path")
@click.option("--format", "fmt", type=click.Choice(["hdf5"]), default="hdf5", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output file (e.g. feats.h5).")
@click.option("--splits", default=None, help="Comma-separated splits (default: all).")
@click.option("--layers", default=None, help="Stored layers to export: all, last, or indices/ranges like 0,6,12-24 "
                                            "(default: all stored).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
def export_cmd(path: str, fmt: str, out: str, splits: str | None, layers: str | None, overwrite: bool) -> None:
    """Export the cache at PATH to HDF5: /<split>/<utt_id> datasets (layers, frames, dim)."""
    from phonecli.cache.export import export_hdf5

    written = export_hdf5(path, out, splits=splits.split(",") if splits else None, layers=layers, overwrite=overwrite)
    click.echo(str(written))


@cache.command("rm")
@click.argument("path")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rm_cmd(path: str, yes: bool) -> None:
    """Delete the cache at PATH (refuses anything that is not a phonecli cache)."""
    from phonecli.cache.manage import _fs, _root_attrs, remove_cache
    from phonecli.cache.store import normalize_path

    full = normalize_path(path)
    fs, p = _fs(full)
    if _root_attrs(fs, p) is None:
        raise click.ClickException(f"{full} is not a phonecli cache: refusing to delete it")
    if not yes:
        click.confirm(f"delete cache {full}?", abort=True)
    click.echo(f"removed {remove_cache(full)}")
