"""CTC probes over cached features: heads, feature sources (cache / in-memory / fused), the loop, sweeps.

Public API::

    from phonecli.probe import train_probe, sweep_layers, load_probe, recompute_posteriors
    run = train_probe("cache/<corpus>/fbank.zarr", "data/sample", "runs/fbank-linear", head="linear")
"""

from __future__ import annotations

__all__ = ["train_probe", "sweep_layers", "load_probe", "recompute_posteriors", "ProbeError"]


def __getattr__(name: str):
    # lazy: importing phonecli.probe must not import torch (CLI start-up time)
    if name in ("train_probe", "load_probe", "recompute_posteriors", "ProbeError"):
        from phonecli.probe import train

        return getattr(train, name)
    if name == "sweep_layers":
        from phonecli.probe.sweep import sweep_layers

        return sweep_layers
    raise AttributeError(name)
