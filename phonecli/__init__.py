"""phonecli: run each frozen speech encoder once, probe every layer from a Zarr cache."""

import os as _os

__version__ = "0.1.0"

# Idle OpenMP threads sleep instead of spinning (unless the user chose a policy). Must be set before
# torch loads its OpenMP runtime. Measured on a shared 2-core machine under load: an MLP probe took
# 58.6 s with 2 spinning threads, 10.4 s with 2 passive ones, 9.4 s with 1 (phonecli.threads).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# MKL's strict Conditional Numerical Reproducibility: sgemm gives the same bits whatever the thread
# count (without it the weight gradients of a transformer probe head differed with 1 and 2 threads on
# an AVX-512 machine: MKL splits the reduction dimension across threads). MKL reads it when it first
# runs, so importing phonecli before any matrix product is enough; phonecli.threads checks it took.
_os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
