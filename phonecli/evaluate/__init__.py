"""Evaluation: Tasks A/B/C, forced alignment + GOP, phone protocol, bootstrap CIs, report.

Greedy decoding and PER are the CTC core (:mod:`phonecli.ctc`). Public API::

    evaluate_run(run_dir, config=None, **overrides) -> dict   # metrics.json, predictions, phone scores
    write_report(run_dirs, out_dir, ...) -> dict              # results.md, results.csv, plots
"""

from __future__ import annotations

from phonecli.evaluate.evaluate import EvaluateError, evaluate_run

__all__ = ["EvaluateError", "evaluate_run", "write_report"]


def write_report(*args, **kwargs):
    """See :func:`phonecli.evaluate.report.write_report` (imported lazily: matplotlib)."""
    from phonecli.evaluate.report import write_report as _w

    return _w(*args, **kwargs)
