"""CPU threads: one default for every command, applied to torch and the BLAS/OpenMP pools.

The default is the number of cores this process may actually use: the CPU affinity mask
(``os.sched_getaffinity``), capped by a cgroup CPU quota (v2 ``cpu.max``, v1
``cpu.cfs_quota_us / cpu.cfs_period_us``, rounded up), unless ``OMP_NUM_THREADS`` is set, which
wins (it is the standard way to say "this many"). ``phonecli ... --threads N`` overrides both.

:func:`configure` applies the count to what is already imported (torch intra-op threads,
numpy/scipy BLAS and OpenMP pools through threadpoolctl) and exports ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` so that libraries imported later, and child
processes (joblib workers), start with the same count. torch's inter-op pool can be sized only
once per process and before any inter-op work: it is set when torch is already imported and
still allows it; phonecli submits no inter-op work (no ``torch.jit.fork``), so that pool never
runs a phonecli computation either way.

Idle OpenMP threads sleep rather than spin: ``phonecli/__init__.py`` sets ``OMP_WAIT_POLICY=PASSIVE``
unless the user set a policy (spinning threads made a probe 6x slower on a loaded 2-core machine).

Results do not depend on the count (tested: probes trained with 1 and 2 threads have identical
weights, the quickstart identical metrics): matrix products run in MKL's strict CNR mode
(``MKL_CBWR=AUTO,STRICT``, set by ``phonecli/__init__.py``; :func:`blas_reproducible` checks it took
and ``run.json`` records it), and the ops whose CPU reduction order follows the thread count are
avoided (see :class:`phonecli.probe.heads.ThreadStableLayerNorm`,
:class:`phonecli.probe.heads.ThreadStableEncoderLayer` and :func:`materialize_parametrizations`).
A torch built without MKL (aarch64, OpenBLAS) offers no such mode: ``run.json`` then says
``blas_strict_cnr: null`` beside the thread count. Fine-tuning, which runs the encoders' own LayerNorms
backwards, records the count in ``run.json`` instead (docs/sections/finetune.md).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

#: Environment variables read by the OpenMP / BLAS runtimes when they load.
POOL_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ThreadSetting:
    """The count in force and why: ``source`` is ``--threads``, ``OMP_NUM_THREADS``, ``cgroup quota``
    or ``affinity``."""

    threads: int
    source: str

    def as_dict(self) -> dict:
        return {"threads": self.threads, "source": self.source}


_current: ThreadSetting | None = None


def affinity_cores() -> int:
    """Cores in this process's CPU affinity mask (``os.cpu_count()`` where there is no mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The cgroup CPU quota in cores (e.g. 1.5), or None when unlimited or not in a cgroup.

    cgroup v2: ``ROOT/cpu.max`` = ``"QUOTA PERIOD"`` or ``"max PERIOD"``; v1:
    ``ROOT/cpu/cpu.cfs_quota_us`` (-1 = unlimited) and ``cpu.cfs_period_us``.
    """
    v2 = root / "cpu.max"
    try:
        if v2.exists():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu" / "cpu.cfs_quota_us"
        if v1.exists():
            quota = int(v1.read_text())
            period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
            return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None
    return None


def default_threads(environ: dict | None = None, cgroup_root: Path = CGROUP_ROOT) -> ThreadSetting:
    """The default count (see module docstring). ``environ``/``cgroup_root`` are for tests."""
    env = os.environ if environ is None else environ
    omp = env.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if omp.isdigit() and int(omp) > 0:
        return ThreadSetting(int(omp), "OMP_NUM_THREADS")
    cores = affinity_cores()
    quota = cgroup_quota(cgroup_root)
    if quota is not None and math.ceil(quota) < cores:
        return ThreadSetting(max(1, math.ceil(quota)), "cgroup quota")
    return ThreadSetting(max(1, cores), "affinity")


def configure(threads: int | None = None) -> ThreadSetting:
    """Apply ``threads`` (None: :func:`default_threads`) to this process and its future children."""
    global _current
    setting = ThreadSetting(int(threads), "--threads") if threads else default_threads()
    n = setting.threads
    for var in POOL_ENV:
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        _apply_torch(n)
    if "numpy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)      # without a `with`: stays in force for the process
    _current = setting
    return setting


def _apply_torch(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass  # already sized, or inter-op work started: torch allows it once per process (see docstring)


#: ``mkl_cbwr_get`` bits (mkl_cbwr.h): MKL_CBWR_ALL = ~0 queries the whole mode, MKL_CBWR_STRICT flag.
_MKL_CBWR_ALL, _MKL_CBWR_STRICT = -1, 0x10000
_warned_cnr = False


def blas_reproducible() -> bool | None:
    """Whether torch's BLAS gives thread-count-independent matrix products: True when torch's statically
    linked MKL runs in strict CNR mode, False when it runs without it (``MKL_CBWR`` set otherwise by
    the user, or MKL started before phonecli was imported; logged once), None when torch has no MKL.

    Why ctypes: torch exposes no API for MKL's CNR mode; its ``libtorch_cpu`` exports MKL's service
    functions, and ``mkl_serv_cbwr_get`` reads the mode without changing it.
    """
    global _warned_cnr
    import ctypes

    import torch

    if not torch.backends.mkl.is_available():
        return None
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get = lib.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    strict = bool(get(_MKL_CBWR_ALL) & _MKL_CBWR_STRICT)
    if not strict and not _warned_cnr:
        import logging

        _warned_cnr = True
        logging.getLogger(__name__).warning(
            "MKL started without strict CNR (MKL_CBWR is %s now): CPU results may differ in the last bits with another "
            "thread count; import phonecli before torch runs a matrix product, or set MKL_CBWR=AUTO,STRICT",
            os.environ.get("MKL_CBWR", "unset"))
    return strict


def current() -> ThreadSetting:
    """What :func:`configure` last applied, else the default (not applied)."""
    return _current or default_threads()


def record() -> dict:
    """For ``run.json``: the count in force in this process (torch's own view when torch is loaded)."""
    out = current().as_dict()
    if "torch" in sys.modules:
        import torch

        out["torch_intra_op"] = torch.get_num_threads()
        out["blas_strict_cnr"] = blas_reproducible()
    return out


def materialize_parametrizations(module) -> int:
    """Replace every parametrized weight of ``module`` (e.g. the weight norm of wav2vec2/HuBERT/WavLM
    positional convolutions) by its value, computed once with ONE thread; returns how many.

    Why: ``torch._weight_norm`` reduces over the kernel's (out, in) axes in an order that follows the
    intra-op thread count, so the same audio gave features differing in the last bits with 1 and 2
    threads. For inference the parametrization is a constant, so computing it once is exact. Call it
    after the weights fingerprint is taken (parameter names change).
    """
    import torch
    from torch.nn.utils import parametrize

    done = 0
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for m in module.modules():
                if parametrize.is_parametrized(m):
                    for name in list(m.parametrizations):
                        parametrize.remove_parametrizations(m, name, leave_parametrized=True)
                        done += 1
    finally:
        torch.set_num_threads(prev)
    return done


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()`` or the machine type."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What a measured number ran on: CPU model, cores (total / usable), load averages, threads."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    s = current()
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "usable_cores": affinity_cores(),
            "cgroup_quota": cgroup_quota(), "load_average": load, "threads": s.threads, "threads_source": s.source}


def machine_line(setting: ThreadSetting | None = None) -> str:
    """One line for benchmark output: ``threads N (source); CPU; cores; load 1/5/15 min``."""
    m = machine()
    s = setting or current()
    load = "/".join(f"{x:.2f}" for x in m["load_average"]) or "unknown"
    quota = f", cgroup quota {m['cgroup_quota']:g}" if m["cgroup_quota"] else ""
    return (f"threads {s.threads} ({s.source}); {m['cpu']}, {m['cpus']} CPUs ({m['usable_cores']} usable{quota}); "
            f"load average {load} (1/5/15 min)")
