"""Whole-pipeline drivers: experiment presets (``phonecli run``) and the offline quickstart.

Public API::

    from phonecli.pipeline import run_experiment, plan, load_experiment, quickstart
    steps = run_experiment("phonecli/configs/experiments/sample-quick.yaml", out="qs")
"""

from __future__ import annotations

_LAZY = {
    "ExperimentError": "phonecli.pipeline.experiment",
    "load_experiment": "phonecli.pipeline.experiment",
    "plan": "phonecli.pipeline.experiment",
    "run_experiment": "phonecli.pipeline.experiment",
    "quickstart": "phonecli.pipeline.quickstart",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'phonecli.pipeline' has no attribute {name!r}")
