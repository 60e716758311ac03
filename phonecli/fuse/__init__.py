"""Fusion of 2+ encoders: late (posterior level, this package) and early/gated (feature level, in the probe).

Public API::

    from phonecli.fuse import fuse_late, fuse_logprobs, weight_grid, FusionError
    run = fuse_late(["runs/hubert", "runs/wavlm"], "runs/late", alphas="0:1:0.1", rule="log-linear")

Early and gated fusion are probes over several caches: ``phonecli.probe.train_probe([cache_a, cache_b], ...)``.
"""

from __future__ import annotations

__all__ = ["FusionError", "fuse_logprobs", "fuse_late", "parse_values", "weight_grid"]


def __getattr__(name: str):
    # lazy, so `import phonecli.fuse` stays light for the CLI
    if name in __all__:
        from phonecli.fuse import late

        return getattr(late, name)
    raise AttributeError(f"module 'phonecli.fuse' has no attribute {name!r}")
