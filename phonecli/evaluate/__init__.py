"""Evaluation: greedy CTC decoding, PER, forced alignment + GOP, Tasks A/B/C, bootstrap CIs, report.

Public API::

    evaluate_run(run_dir, protocol="all", ci=True, n_bootstrap=1000, seed=0) -> dict
    write_report(run_dirs, out_dir, ...) -> dict           # results.md, results.csv, plots
    greedy_decode(log_probs) -> list[str]; corpus_per(refs, hyps) -> float (percent)
"""

from __future__ import annotations

from phonecli.evaluate.decode import greedy_decode
from phonecli.evaluate.evaluate import EvaluateError, evaluate_run
from phonecli.evaluate.per import corpus_per, edit_distance

__all__ = ["EvaluateError", "corpus_per", "edit_distance", "evaluate_run", "greedy_decode", "write_report"]


def write_report(*args, **kwargs):
    """See :func:`phonecli.evaluate.report.write_report` (imported lazily: matplotlib)."""
    from phonecli.evaluate.report import write_report as _w

    return _w(*args, **kwargs)
