"""``--layers all-single``: one probe per stored layer -> the layer-wise probing curve (dev PER by layer).

Writes into ``OUT``: ``layer-NN/`` (a normal run per layer), ``layers.csv``, ``layers.md`` and
``layers.png``. Layers are independent, so ``jobs > 1`` trains them in parallel processes
(joblib/loky); each process reads only its own layer from the cache.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from phonecli.config import ProbeConfig
from phonecli.errors import ProbeError
from phonecli.storage import atomic_write, atomic_write_csv, atomic_write_text

COLUMNS = ("layer", "dev_per", "dev_loss", "best_epoch", "epochs_run", "seconds", "run")


def _one(features, data, out: Path, layer: int, config: ProbeConfig, kwargs: dict) -> dict:
    from phonecli.probe.train import train_probe

    run_dir = out / f"layer-{layer:02d}"
    # resuming a sweep: layers it had not reached yet simply start
    kwargs = {**kwargs, "resume": kwargs.get("resume", False) and (run_dir / "run.json").exists()}
    run = train_probe(features, data, run_dir, replace(config, layers=(str(layer),)), name=f"{out.name}-L{layer}",
                      **kwargs)
    sel = run.info["selection"]
    return {"layer": layer, "dev_per": round(sel["value"], 3), "dev_loss": round(sel["dev_loss"], 4),
            "best_epoch": sel["epoch"], "epochs_run": sel["epochs_run"], "seconds": run.info.get("seconds"),
            "run": str(run.path.relative_to(out))}


def sweep_layers(features, data, out, config: ProbeConfig | None = None, *, jobs: int = 1,
                 layers: list[int] | None = None, overwrite: bool = False, resume: bool = False,
                 progress: bool | None = None, **overrides) -> dict:
    """Train one probe per layer of the cache ``features`` (all stored layers, or ``layers``).

    ``config``/``overrides``: the :class:`~phonecli.config.ProbeConfig` of every probe (its ``layers``
    is replaced by each single layer). ``overwrite``/``resume`` apply to every per-layer run
    (:mod:`phonecli.runs`). Returns ``{"out", "rows", "table_csv", "table_md", "plot"}``;
    rows are ordered by layer.
    """
    from joblib import Parallel, delayed

    from phonecli.probe.features import CacheStream

    config = ProbeConfig.build(config, **overrides)
    if config.head == "gated":
        raise ProbeError("--layers all-single trains single-cache probes; --head gated needs two caches")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stored = list(CacheStream(features).cache.layers) if not isinstance(features, (list, tuple)) else None
    if stored is None:
        raise ProbeError("--layers all-single takes exactly one --features")
    todo = list(layers) if layers is not None else stored
    bad = [x for x in todo if x not in stored]
    if bad:
        raise ProbeError(f"{features}: layer(s) {bad} not stored (stored: {stored})")
    kwargs = {"progress": progress, "overwrite": overwrite, "resume": resume}
    if jobs == 1:
        rows = [_one(features, data, out, x, config, kwargs) for x in todo]
    else:
        rows = Parallel(n_jobs=jobs)(delayed(_one)(features, data, out, x, config, kwargs) for x in todo)
    rows.sort(key=lambda r: r["layer"])

    table_csv = atomic_write_csv(out / "layers.csv", list(COLUMNS), rows)
    best = min(rows, key=lambda r: r["dev_per"])
    md = ["| layer | dev PER (%) | dev loss | best epoch | epochs run |", "|---:|---:|---:|---:|---:|"]
    md += [f"| {r['layer']}{' **(best)**' if r is best else ''} | {r['dev_per']:.2f} | {r['dev_loss']:.3f} | "
           f"{r['best_epoch']} | {r['epochs_run']} |" for r in rows]
    table_md = out / "layers.md"
    atomic_write_text(table_md, "\n".join(md) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(rows) + 2), 3.2))
    ax.plot([r["layer"] for r in rows], [r["dev_per"] for r in rows], marker="o")
    ax.set_xlabel("layer (hidden-state index)")
    ax.set_ylabel("dev PER (%)")
    ax.set_title(f"{Path(str(features)).name}: {config.head} probe per layer", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plot = out / "layers.png"
    atomic_write(plot, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return {"out": out, "rows": rows, "table_csv": table_csv, "table_md": table_md, "plot": plot}
