"""``write_report``: results.md, results.csv and PNG plots over one or more evaluated runs.

Files in OUT:

- ``results.md``: opens with the corpus the numbers were computed on (name, source, corpus_id,
  utterances and speakers per split, synthetic or real), then the seed's summary table (Model |
  Input | Task A PER (HQ) | Task B Pearson | Task C AUC | Note; best value per column in bold;
  each number followed by its margin over the floor), the floors (what predictors that see no
  audio score), the full table of both protocols with 95% speaker-bootstrap CIs and margins,
  and a counts table. Literature anchors (SpeechOcean762) are printed only when every run was
  evaluated on the real SpeechOcean762.
- ``results.csv``: one row per run; every metric with ``_ci_lo``/``_ci_hi`` columns, and
  ``_floor``/``_margin`` for the headline metrics.
- ``roc_utterance.png`` (Task C, all runs), ``roc_phone.png`` (phone MDD, all runs),
  ``layer_weights.png`` (runs with ``layer_weights.json``), ``per_phone_error.png`` (test
  error rate of each canonical phone: substitutions + deletions / occurrences, per run),
  ``confusion_<run>.png`` (reference phone x hypothesis phone from the edit alignment,
  row-normalised, with deletions and insertions).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from phonecli.config import ReportConfig
from phonecli.evaluate import benchmarks
from phonecli.evaluate.describe import corpus_summary, describe, has_literature_anchors
from phonecli.storage import atomic_write_csv, atomic_write_text
from phonecli.evaluate.evaluate import METRICS_FILE, EvaluateError, evaluate_run
from phonecli.errors import ReportError  # noqa: F401  (re-exported)

log = logging.getLogger("phonecli.evaluate")
SUMMARY_HEADER = ["Model", "Input", "Task A PER (HQ)", "Task B Pearson", "Task C AUC", "Note"]
# (csv/markdown label, protocol block path, format, higher is better)
FULL_COLUMNS = [
    ("PER HQ %", ("seed", "task_a", "per_hq"), "{:.2f}", False),
    ("PER all %", ("seed", "task_a", "per_all"), "{:.2f}", False),
    ("Pearson", ("seed", "task_b", "pearson"), "{:.4f}", True),
    ("Spearman", ("seed", "task_b", "spearman"), "{:.4f}", True),
    ("AUC", ("seed", "task_c", "auc"), "{:.4f}", True),
    ("F1 (dev thr)", ("seed", "task_c", "f1"), "{:.4f}", True),
    ("Precision", ("seed", "task_c", "precision"), "{:.4f}", True),
    ("Recall", ("seed", "task_c", "recall"), "{:.4f}", True),
    ("Oracle F1 (test-swept)", ("seed", "task_c", "oracle_f1"), "{:.4f}", True),
    ("PCC GOP", ("phone", "pcc_gop"), "{:.4f}", True),
    ("PCC regressor", ("phone", "pcc_regressor"), "{:.4f}", True),
    ("MDD AUC", ("phone", "mdd_auc"), "{:.4f}", True),
    ("MDD F1", ("phone", "mdd_f1"), "{:.4f}", True),
    ("MDD P", ("phone", "mdd_precision"), "{:.4f}", True),
    ("MDD R", ("phone", "mdd_recall"), "{:.4f}", True),
    ("Utt PCC", ("phone", "utt_pcc"), "{:.4f}", True),
]
CSV_KEYS = {
    "per_hq": ("seed", "task_a", "per_hq"), "per_all": ("seed", "task_a", "per_all"),
    "n_hq": ("seed", "task_a", "n_hq"),
    "pearson": ("seed", "task_b", "pearson"), "spearman": ("seed", "task_b", "spearman"),
    "auc": ("seed", "task_c", "auc"), "f1": ("seed", "task_c", "f1"),
    "precision": ("seed", "task_c", "precision"), "recall": ("seed", "task_c", "recall"),
    "threshold": ("seed", "task_c", "threshold"), "oracle_f1": ("seed", "task_c", "oracle_f1"),
    "pcc_gop": ("phone", "pcc_gop"), "pcc_regressor": ("phone", "pcc_regressor"),
    "mdd_auc": ("phone", "mdd_auc"), "mdd_auc_gop": ("phone", "mdd_auc_gop"), "mdd_f1": ("phone", "mdd_f1"),
    "mdd_precision": ("phone", "mdd_precision"), "mdd_recall": ("phone", "mdd_recall"),
    "mdd_threshold": ("phone", "mdd_threshold"), "utt_pcc": ("phone", "utt_pcc"),
}
NO_CI = {"n_hq", "threshold", "mdd_threshold"}
#: CSV keys whose floor and margin get their own columns (see phonecli.evaluate.floors)
MARGIN_KEYS = ("per_hq", "per_all", "pearson", "spearman", "auc", "f1", "pcc_gop", "pcc_regressor", "mdd_auc",
               "mdd_auc_gop", "mdd_f1", "utt_pcc")


@dataclass
class RunResult:
    name: str
    path: Path
    info: dict
    metrics: dict
    model: str
    input: str
    note: str

    def run_manifest(self):
        from phonecli.data.manifest import Manifest

        return Manifest.load(self.info["data"])


def _get(d: dict, path: tuple[str, ...]):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _ci(d: dict, path: tuple[str, ...]):
    return _get(d, path[:-1] + (path[-1] + "_ci95",))


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v, fmt: str) -> str:
    return fmt.format(v) if _num(v) else "—"


def _margin_path(path: tuple[str, ...]) -> tuple[str, ...]:
    return (path[0], "margins", path[-1])


def _margin(d: dict, path: tuple[str, ...], fmt: str) -> str:
    """`` (+12.3)``: the number's margin over its floor (positive = better than the floor), or ''."""
    m = _get(d, _margin_path(path))
    if not isinstance(m, dict) or not _num(m.get("margin")):
        return ""
    return f" ({'+' if m['margin'] >= 0 else '−'}{fmt.format(abs(m['margin']))})"


def load_results(run_dirs, evaluate_missing: bool = True, n_bootstrap: int = 1000, seed: int = 0,
                 skipped: list[tuple[str, str]] | None = None) -> list[RunResult]:
    """Open each run, evaluating it first when it has no metrics.json.

    A run that cannot be opened or evaluated is left out with its one-line reason appended
    to ``skipped`` (a report over ``runs/*`` should not die on one broken run); when
    ``skipped`` is None such a run raises :class:`ReportError` instead.
    """
    from phonecli.runs import Run, RunError

    out: list[RunResult] = []
    names: set[str] = set()
    for d in (getattr(x, "path", x) for x in run_dirs):
        try:
            try:
                run = Run.open(d)
            except RunError as e:
                raise ReportError(str(e)) from e
            mfile = run.path / METRICS_FILE
            if not mfile.exists():
                if not evaluate_missing:
                    raise ReportError(f"{run.path}: no metrics.json; run `phonecli evaluate {run.path}` first")
                log.info("%s: no metrics.json yet; evaluating it first", run.path)
                evaluate_run(run.path, n_bootstrap=n_bootstrap, seed=seed)
            try:
                metrics = json.loads(mfile.read_text())
            except json.JSONDecodeError as e:
                raise ReportError(f"{mfile}: malformed metrics.json ({e}); re-run `phonecli evaluate {run.path}`") from e
        except EvaluateError as e:
            if skipped is None:
                raise
            log.warning("skipping %s: %s", d, e)
            skipped.append((str(d), str(e)))
            continue
        name = run.name
        k = 2
        while name in names:       # two runs called the same in different folders
            name = f"{run.name}-{k}"
            k += 1
        names.add(name)
        model, inp, note = describe(run.info)
        out.append(RunResult(name, run.path, run.info, metrics, model, inp, note))
    return out


def _md_table(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join({"l": "---", "r": "---:"}[a] for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _best(values: list, higher: bool):
    vals = [v for v in values if _num(v)]
    if not vals:
        return None
    return max(vals) if higher else min(vals)


def summary_table(results: list[RunResult]) -> str:
    """The seed's 3-metric table, sorted by Task A PER (HQ), best per column in bold."""
    keys = [(("seed", "task_a", "per_hq"), "{:.2f}", False), (("seed", "task_b", "pearson"), "{:.4f}", True),
            (("seed", "task_c", "auc"), "{:.4f}", True)]
    order = sorted(results, key=lambda r: (_get(r.metrics, keys[0][0]) if _num(_get(r.metrics, keys[0][0])) else math.inf))
    best = [_best([_get(r.metrics, p) for r in results], hi) for p, _, hi in keys]
    rows = []
    for r in order:
        cells = [r.model, r.input]
        for (p, fmt, _), b in zip(keys, best):
            v = _get(r.metrics, p)
            s = _fmt(v, fmt)
            cells.append((f"**{s}**" if len(results) > 1 and _num(v) and v == b else s) + _margin(r.metrics, p, fmt))
        cells.append(r.note)
        rows.append(cells)
    return _md_table(SUMMARY_HEADER, rows, ["l", "l", "r", "r", "r", "l"])


def full_table(results: list[RunResult]) -> str:
    header = ["Run"] + [c[0] for c in FULL_COLUMNS]
    rows = []
    for r in results:
        cells = [r.name]
        for _, path, fmt, _ in FULL_COLUMNS:
            v, ci = _get(r.metrics, path), _ci(r.metrics, path)
            s = _fmt(v, fmt)
            if _num(v) and isinstance(ci, list) and len(ci) == 2 and all(_num(x) for x in ci):
                s += f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"
            cells.append(s + _margin(r.metrics, path, fmt))
        rows.append(cells)
    return _md_table(header, rows, ["l"] + ["r"] * len(FULL_COLUMNS))


FLOOR_COLUMNS = [
    ("PER HQ %: all-blank", ("seed", "floors", "all_blank", "per_hq"), "{:.2f}"),
    ("PER HQ %: most frequent phone", ("seed", "floors", "most_frequent_phone", "per_hq"), "{:.2f}"),
    ("Pearson", ("seed", "floors", "no_audio", "pearson"), "{:.4f}"),
    ("AUC", ("seed", "floors", "no_audio", "auc"), "{:.4f}"),
    ("F1", ("seed", "floors", "no_audio", "f1"), "{:.4f}"),
    ("PCC prior", ("phone", "floors", "no_audio", "pcc_gop"), "{:.4f}"),
    ("PCC regressor", ("phone", "floors", "no_audio", "pcc_regressor"), "{:.4f}"),
    ("MDD AUC", ("phone", "floors", "no_audio", "mdd_auc"), "{:.4f}"),
    ("MDD F1", ("phone", "floors", "no_audio", "mdd_f1"), "{:.4f}"),
    ("Utt PCC", ("phone", "floors", "no_audio", "utt_pcc"), "{:.4f}"),
]


def floors_table(results: list[RunResult]) -> str:
    """Floor values; one row when every run has the same floors (same test utterances and fit)."""
    rows = []
    for r in results:
        rows.append([_fmt(_get(r.metrics, path), fmt) for _, path, fmt in FLOOR_COLUMNS])
    if all(row == rows[0] for row in rows):
        body = [["all runs"] + rows[0]]
    else:
        body = [[r.name] + row for r, row in zip(results, rows)]
    return _md_table(["Runs"] + [c[0] for c in FLOOR_COLUMNS], body, ["l"] + ["r"] * len(FLOOR_COLUMNS))


def corpus_header(results: list[RunResult]) -> list[str]:
    """The opening lines of results.md: which corpus (or corpora) these numbers were computed on."""
    corpora: dict[str, dict] = {}
    for r in results:
        c = r.metrics.get("corpus")
        if not isinstance(c, dict):
            try:
                c = corpus_summary(r.run_manifest())
            except Exception:  # an old metrics.json whose manifest moved: say so rather than fail the report
                c = {"corpus": "unknown", "corpus_id": r.info.get("corpus_id", "?"), "synthetic": None}
        corpora.setdefault(str(c.get("corpus_id")), c)
    lines = []
    if len(corpora) > 1:
        lines += [f"**These runs come from {len(corpora)} different corpora: their numbers are not comparable.**", ""]
    for c in corpora.values():
        kind = {True: "synthetic audio: these numbers say nothing about real learners' speech",
                False: "real recordings"}.get(c.get("synthetic"), "synthetic or real: not recorded by this manifest")
        bench = f", benchmark {c['benchmark']}" if c.get("benchmark") else ""
        lines.append(f"- Corpus: **{c.get('corpus', '?')}** ({kind}{bench}); source `{c.get('source', '?')}` "
                     f"{('`' + str(c['path']) + '`') if c.get('path') else ''}; corpus_id `{c.get('corpus_id')}`")
        splits = c.get("splits") or {}
        if splits:
            lines.append("- Splits: " + "; ".join(f"{s} {v.get('utterances')} utterances / {v.get('speakers')} speakers"
                                                  for s, v in splits.items()))
    return lines


def counts_table(results: list[RunResult]) -> str:
    header = ["Run", "Kind", "Test utts", "HQ utts", "Test phones", "Unaligned test phones",
              "Missing test posteriors", "Task C thr (dev, PER %)", "MDD thr (dev)", "Regressor fit on", "Bootstrap"]
    rows = []
    for r in results:
        m = r.metrics
        b = m.get("bootstrap") or {}
        rows.append([
            r.name, str(r.info.get("kind", "?")),
            str(_get(m, ("seed", "counts", "n_test")) or "—"), str(_get(m, ("seed", "task_a", "n_hq")) or "—"),
            str(_get(m, ("phone", "counts", "n_test_phones")) or "—"),
            str(_get(m, ("phone", "counts", "n_unaligned_test_phones")) if _get(m, ("phone", "counts")) else "—"),
            str(len((m.get("missing_posteriors") or {}).get("test", []))),
            _fmt(_get(m, ("seed", "task_c", "threshold")), "{:.2f}"),
            _fmt(_get(m, ("phone", "mdd_threshold")), "{:.3f}"),
            str(_get(m, ("phone", "regressor", "fit_on")) or "—"),
            f"{b.get('n', 0)} × speakers" if b.get("n") else "none",
        ])
    return _md_table(header, rows, ["l", "l"] + ["r"] * 7 + ["l", "l"])


def write_csv(results: list[RunResult], path: Path) -> None:
    fields = ["run", "path", "kind", "model", "input", "note"]
    for k in CSV_KEYS:
        fields.append(k)
        if k not in NO_CI:
            fields += [f"{k}_ci_lo", f"{k}_ci_hi"]
    fields += [f"{k}_{x}" for k in MARGIN_KEYS for x in ("floor", "margin")]
    fields += ["n_test", "n_test_phones", "n_unaligned_test_phones", "regressor_fit_on", "corpus", "corpus_id",
               "synthetic"]
    fields += benchmarks.csv_fields()
    rows = []
    for r in results:
        row = {"run": r.name, "path": str(r.path), "kind": r.info.get("kind", ""), "model": r.model,
               "input": r.input, "note": r.note}
        for k, p in CSV_KEYS.items():
            v = _get(r.metrics, p)
            row[k] = v if _num(v) else ""
            if k not in NO_CI:
                ci = _ci(r.metrics, p)
                ok = isinstance(ci, list) and len(ci) == 2
                row[f"{k}_ci_lo"] = ci[0] if ok and _num(ci[0]) else ""
                row[f"{k}_ci_hi"] = ci[1] if ok and _num(ci[1]) else ""
        row["n_test"] = _get(r.metrics, ("seed", "counts", "n_test")) or ""
        row["n_test_phones"] = _get(r.metrics, ("phone", "counts", "n_test_phones")) or ""
        row["n_unaligned_test_phones"] = _get(r.metrics, ("phone", "counts", "n_unaligned_test_phones"))
        if row["n_unaligned_test_phones"] is None:
            row["n_unaligned_test_phones"] = ""
        row["regressor_fit_on"] = _get(r.metrics, ("phone", "regressor", "fit_on")) or ""
        for k in MARGIN_KEYS:
            m = _get(r.metrics, _margin_path(CSV_KEYS[k])) or {}
            row[f"{k}_floor"] = m.get("value") if _num(m.get("value")) else ""
            row[f"{k}_margin"] = m.get("margin") if _num(m.get("margin")) else ""
        c = r.metrics.get("corpus") or {}
        row.update(corpus=c.get("corpus", ""), corpus_id=c.get("corpus_id", r.info.get("corpus_id", "")),
                   synthetic="" if c.get("synthetic") is None else c.get("synthetic"))
        row.update(benchmarks.csv_row(r.metrics))
        rows.append(row)
    atomic_write_csv(path, fields, rows)


def write_report(run_dirs, out_dir: str | Path, config: ReportConfig | None = None, **overrides) -> dict:
    """Write results.md, results.csv and plots for ``run_dirs`` (directories or Runs) into ``out_dir``.

    ``config``: a :class:`~phonecli.config.ReportConfig` (``plots``, ``evaluate_missing``: evaluate runs
    without metrics.json first, with ``n_bootstrap`` replicates and ``seed``); ``overrides`` on top of it.
    Runs that cannot be evaluated are skipped with their reason (logged and in a "Skipped runs"
    section); if none is left, :class:`ReportError`. Returns ``{"results_md", "results_csv",
    "plots": [paths], "runs": [names], "summary": markdown, "skipped": [(dir, reason)]}``.
    """
    cfg = ReportConfig.build(config, **overrides)
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise ReportError("no runs given; pass one or more run directories (e.g. runs/*)")
    skipped: list[tuple[str, str]] = []
    results = load_results(run_dirs, cfg.evaluate_missing, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed,
                           skipped=skipped)
    if not results:
        raise ReportError("no run could be reported: " + "; ".join(reason for _, reason in skipped))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_paths = []
    if cfg.plots:
        from phonecli.evaluate import plots as P

        plot_paths = P.write_plots(results, out)
    seed_results = [r for r in results if r.metrics.get("seed") or r.metrics.get("phone")]
    md = ["# Results", "", *corpus_header(results), ""] + benchmarks.sections(results)
    if seed_results:
        md += _seed_sections(seed_results)
    md += [
        "## Counts and choices",
        "",
        counts_table(results),
        "",
    ]
    if skipped:
        md += ["## Skipped runs", ""] + [f"- `{d}`: {reason}" for d, reason in skipped] + [""]
    if plot_paths:
        md += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plot_paths] + [""]
    md_path = out / "results.md"
    atomic_write_text(md_path, "\n".join(md))
    csv_path = out / "results.csv"
    write_csv(results, csv_path)
    summary = summary_table(seed_results) if seed_results else (benchmarks.per_table(results) or "")
    return {"results_md": md_path, "results_csv": csv_path, "plots": plot_paths, "runs": [r.name for r in results],
            "summary": summary, "skipped": skipped}


def _seed_sections(results: list[RunResult]) -> list[str]:
    """The SpeechOcean762-style sections (seed and phone protocols, with floors and margins), labelled
    with their benchmark; literature anchors only when every run is on the real SpeechOcean762."""
    labels = sorted({benchmarks.benchmark(r.metrics) for r in results})
    anchors = all(has_literature_anchors(r.metrics.get("corpus")) for r in results)
    return [
        f"## {' / '.join(labels)}: seed and phone protocols",
        "",
        "Seed protocol (utterance level, test split). Task A: corpus PER (%) of greedy CTC output vs",
        "canonical phones on utterances with accuracy >= 8; Task B: Pearson of 1 - PER_utt with utterance",
        "accuracy; Task C: AUC-ROC of PER_utt for accuracy <= 6. PER: lower is better; Pearson, AUC: higher.",
        "In parentheses: the margin over the floor (+ = better than it; Task A: the most-frequent-phone",
        "output, Tasks B/C: a predictor that sees no audio; see Floors).",
        "",
        summary_table(results),
        "",
        "## Floors: predictors with no audio evidence",
        "",
        "Scored on the same test utterances and phones through the same fit / threshold / score code as",
        "the runs: Task A an all-blank output and the train split's most frequent phone once per canonical",
        "phone; Tasks B/C and the phone protocol regressors fit on train from phone identity priors,",
        "positions, phone counts and seconds per phone, never an audio sample (docs/sections/evaluate.md).",
        "",
        floors_table(results),
        "",
        "## All metrics with 95% CIs",
        "",
        "Brackets: 95% percentile bootstrap intervals, resampling test speakers. Parentheses: margin over",
        "the floor. F1/P/R use thresholds chosen on dev; `Oracle F1` sweeps the threshold on test (the",
        "seed's way; optimistic).",
        *(["Phone protocol anchors (SpeechOcean762 literature): phone PCC Kaldi GOP 0.45, GOPT 0.612,",
           "3MH 0.693, MuFFIN 0.742; utterance PCC GOPT 0.714; MDD F1 MuFFIN 0.66."] if anchors else
          ["Literature anchors (SpeechOcean762) are not shown: not every run here was evaluated on the real",
           "SpeechOcean762, so they would not be comparable."]),
        "",
        full_table(results),
        "",
    ]
