"""`phonecli evaluate` and `phonecli report` (only click at import time; the work is in phonecli.evaluate)."""

from __future__ import annotations

import click

from phonecli.commands._options import config_options
from phonecli.config import EvaluateConfig, ReportConfig


@click.command("evaluate")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@config_options(EvaluateConfig)
def evaluate(runs: tuple[str, ...], config: EvaluateConfig) -> None:
    """Score RUN(s): writes RUN/metrics.json, predictions.jsonl and phone_scores.jsonl.

    \b
    Example:
      phonecli evaluate runs/hubert-w
      phonecli evaluate runs/* --protocol seed --no-ci
    """
    from phonecli.errors import PhonecliError
    from phonecli.evaluate import evaluate_run

    failed = []
    for run in runs:
        try:
            m = evaluate_run(run, config)
        except PhonecliError as e:
            if len(runs) == 1:
                raise
            click.echo(f"error: {e}", err=True)      # the other runs are still evaluated
            failed.append(run)
            continue
        click.echo(_summary(run, m))
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(runs)} runs failed: {', '.join(failed)}")


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _summary(run: str, m: dict) -> str:
    parts = [f"{run}:"]
    s = m.get("seed")
    if s:
        parts.append(f"PER(HQ) {_fmt(s['task_a']['per_hq'], '.2f')}%  PER(all) {_fmt(s['task_a']['per_all'], '.2f')}%"
                     f"  Pearson {_fmt(s['task_b']['pearson'], '.4f')}  AUC {_fmt(s['task_c']['auc'], '.4f')}"
                     f"  F1(dev thr) {_fmt(s['task_c']['f1'], '.4f')}")
    p = m.get("phone")
    if p:
        parts.append(f"phone PCC gop {_fmt(p['pcc_gop'], '.4f')} reg {_fmt(p['pcc_regressor'], '.4f')}"
                     f"  MDD AUC {_fmt(p['mdd_auc'], '.4f')} F1 {_fmt(p['mdd_f1'], '.4f')}"
                     f"  utt PCC {_fmt(p['utt_pcc'], '.4f')}  unaligned {p['counts']['n_unaligned_test_phones']}")
    if m.get("per"):
        p = m["per"]
        parts.append(f"{p['benchmark']}: PER {_fmt(p['per_test'], '.2f')}% (dev {_fmt(p['per_dev'], '.2f')}%), "
                     f"scored on {p['scored_on']}")
    if m.get("mdd"):
        d = m["mdd"]
        floor = (d.get("floors") or {}).get("text_prior") or {}
        parts.append(f"MDD P {_fmt(d['precision'], '.4f')} R {_fmt(d['recall'], '.4f')} F1 {_fmt(d['f1'], '.4f')}"
                     f"  diagnosis acc. {_fmt(d['diagnosis_accuracy'], '.4f')}  (floor F1: accept-all 0, "
                     f"text prior {_fmt(floor.get('f1'), '.4f')})")
    return "\n  ".join(parts)


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="results", show_default=True,
              help="Directory for results.md, results.csv and the PNG plots.")
@config_options(ReportConfig)
def report(runs: tuple[str, ...], out_dir: str, config: ReportConfig) -> None:
    """Tables (results.md, results.csv) and plots over evaluated RUNs.

    \b
    Example:
      phonecli report runs/* --out results
    """
    import os

    os.environ.setdefault("MPLBACKEND", "Agg")
    from phonecli.evaluate.report import write_report

    out = write_report(runs, out_dir, config)
    click.echo(out["summary"])
    click.echo(f"wrote {out['results_md']}, {out['results_csv']} and {len(out['plots'])} plots")
