"""Encoder registry, per-family adapters, and the extraction runner."""

from __future__ import annotations


def __getattr__(name: str):
    # Lazy so `import phonecli.encoders.registry` (e.g. `phonecli models`) does not import numpy/torch.
    if name in ("extract_features", "run_extraction", "ExtractionReport"):
        from phonecli.extract import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'phonecli.extract' has no attribute {name!r}")
