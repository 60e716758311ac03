"""Report tables of the ``per`` and ``mdd`` protocols, each row labelled with its benchmark.

``write_report`` (:mod:`.report`) adds :func:`sections` to results.md and :data:`CSV_KEYS` to
results.csv. A benchmark label comes from ``metrics.json["benchmark"]["name"]`` (metrics written
before it existed are SpeechOcean762's); a copy that is not the benchmark's standard split says
so in the label ("incomplete copy: not comparable").
"""

from __future__ import annotations

import math

# csv column -> path in metrics.json (CIs as <column>_ci_lo/_ci_hi, like report.CSV_KEYS)
CSV_KEYS = {
    "per_test": ("per", "per_test"), "per_dev": ("per", "per_dev"),
    "mdd_l2_precision": ("mdd", "precision"), "mdd_l2_recall": ("mdd", "recall"), "mdd_l2_f1": ("mdd", "f1"),
    "mdd_l2_diagnosis_accuracy": ("mdd", "diagnosis_accuracy"), "mdd_l2_frr": ("mdd", "frr"),
    "mdd_l2_far": ("mdd", "far"),
    "mdd_l2_floor_accept_all_f1": ("mdd", "floors", "accept_all", "f1"),
    "mdd_l2_floor_text_prior_f1": ("mdd", "floors", "text_prior", "f1"),
}
NO_CI = {"per_dev", "mdd_l2_floor_accept_all_f1", "mdd_l2_floor_text_prior_f1"}


def benchmark(metrics: dict) -> str:
    b = metrics.get("benchmark")
    return b.get("name", "?") if isinstance(b, dict) else "SpeechOcean762"


def _get(d, path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _cell(block: dict | None, key: str, fmt: str) -> str:
    v = (block or {}).get(key)
    if not _num(v):
        return "—"
    s = fmt.format(v)
    ci = (block or {}).get(f"{key}_ci95")
    if isinstance(ci, list) and len(ci) == 2 and all(_num(x) for x in ci):
        s += f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"
    return s


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def per_table(results) -> str | None:
    rows = []
    for r in results:
        p = r.metrics.get("per")
        if not p:
            continue
        c = p.get("counts") or {}
        rows.append([r.name, benchmark(r.metrics), _cell(p, "per_test", "{:.2f}"), _cell(p, "substitutions", "{:.2f}"),
                     _cell(p, "deletions", "{:.2f}"), _cell(p, "insertions", "{:.2f}"), _cell(p, "per_dev", "{:.2f}"),
                     str(p.get("scored_on", "?")), str(c.get("n_test", "—"))])
    if not rows:
        return None
    return _table(["Run", "Benchmark", "PER % (test)", "Sub %", "Del %", "Ins %", "PER % (dev)", "Scored on",
                   "Test utts"], rows)


def mdd_table(results) -> str | None:
    rows = []
    for r in results:
        m = r.metrics.get("mdd")
        if not m:
            continue
        c = m.get("counts") or {}
        counts = "/".join(str(c.get(k, "?")) for k in ("ta", "fr", "fa", "cd", "de"))
        rows.append([r.name, benchmark(r.metrics), _cell(m, "precision", "{:.4f}"), _cell(m, "recall", "{:.4f}"),
                     _cell(m, "f1", "{:.4f}"), _cell(m, "diagnosis_accuracy", "{:.4f}"), _cell(m, "frr", "{:.4f}"),
                     _cell(m, "far", "{:.4f}"), counts])
        for name, label in (("accept_all", "floor: accept all (canonical output)"),
                            ("text_prior", "floor: text prior (no audio, dev threshold)")):
            f = (m.get("floors") or {}).get(name)
            if f:
                fc = f.get("counts") or {}
                rows.append([f"{r.name} — {label}", benchmark(r.metrics), _cell(f, "precision", "{:.4f}"),
                             _cell(f, "recall", "{:.4f}"), _cell(f, "f1", "{:.4f}"),
                             _cell(f, "diagnosis_accuracy", "{:.4f}"), _cell(f, "frr", "{:.4f}"),
                             _cell(f, "far", "{:.4f}"), "/".join(str(fc.get(k, "?")) for k in ("ta", "fr", "fa", "cd", "de"))])
    if not rows:
        return None
    return _table(["Run", "Benchmark", "Precision", "Recall", "F1", "Diagnosis acc.", "FRR", "FAR",
                   "TA/FR/FA/CD/DE"], rows)


def sections(results) -> list[str]:
    """Markdown lines for results.md: one section per protocol that some run has."""
    md: list[str] = []
    t = per_table(results)
    if t:
        md += ["## Phone recognition (PER)", "",
               "Corpus PER (%) of greedy CTC output on the test split, after the benchmark's scoring folding",
               "(TIMIT: 48 -> 39 phones, Lee & Hon 1989; SUPERB PR: 71 stress-marked phones, no folding; L2-ARCTIC:",
               "against the annotated phones). Brackets: 95% speaker-bootstrap intervals. Lower is better.", "", t, ""]
    t = mdd_table(results)
    if t:
        md += ["## Mispronunciation detection and diagnosis (MDD)", "",
               "L2-ARCTIC test speakers; Li et al. 2017 hierarchy: precision = TR/(TR+FR), recall = TR/(TR+FA),",
               "diagnosis accuracy = CD/TR (TR = CD + DE). Floor rows use no audio: every number above them",
               "must beat them to mean anything. Brackets: 95% speaker-bootstrap intervals.", "", t, ""]
    return md


def csv_row(metrics: dict) -> dict:
    """The extra results.csv cells of one run (empty strings where a metric is absent)."""
    row = {"benchmark": benchmark(metrics)}
    for k, path in CSV_KEYS.items():
        v = _get(metrics, path)
        row[k] = v if _num(v) else ""
        if k not in NO_CI:
            ci = _get(metrics, path[:-1] + (path[-1] + "_ci95",))
            ok = isinstance(ci, list) and len(ci) == 2
            row[f"{k}_ci_lo"] = ci[0] if ok and _num(ci[0]) else ""
            row[f"{k}_ci_hi"] = ci[1] if ok and _num(ci[1]) else ""
    return row


def csv_fields() -> list[str]:
    out = ["benchmark"]
    for k in CSV_KEYS:
        out.append(k)
        if k not in NO_CI:
            out += [f"{k}_ci_lo", f"{k}_ci_hi"]
    return out
