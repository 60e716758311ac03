"""CPU threads: the default honours affinity / cgroup quota / OMP_NUM_THREADS, every command takes
``--threads``, and results are identical with 1 and 2 threads (separate processes for the probe,
the whole quickstart in-process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from phonecli import threads
from phonecli.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_default_honours_omp_cgroup_v2_and_v1(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "affinity_cores", lambda: 8)
    assert threads.default_threads({}, tmp_path) == threads.ThreadSetting(8, "affinity")
    assert threads.default_threads({"OMP_NUM_THREADS": "3"}, tmp_path) == threads.ThreadSetting(3, "OMP_NUM_THREADS")
    (tmp_path / "cpu.max").write_text("150000 100000\n")            # cgroup v2: 1.5 CPUs -> 2 threads
    assert threads.default_threads({}, tmp_path) == threads.ThreadSetting(2, "cgroup quota")
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.default_threads({}, tmp_path).source == "affinity"
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")       # cgroup v1: 3 CPUs
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.default_threads({}, v1) == threads.ThreadSetting(3, "cgroup quota")
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.default_threads({}, v1).threads == 8
    assert threads.affinity_cores.__name__ == "<lambda>"  # (monkeypatched above)


def test_real_affinity_is_the_default():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    q = threads.cgroup_quota()
    want = len(os.sched_getaffinity(0)) if q is None else min(len(os.sched_getaffinity(0)), int(np.ceil(q)))
    assert threads.default_threads(env).threads == want


def _leaves(cmd: click.Command, path=()):
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _leaves(sub, path + (name,))
    else:
        yield path, cmd


def test_every_command_takes_threads_and_applies_it():
    import torch

    leaves = list(_leaves(main))
    assert len(leaves) > 15
    for path, cmd in leaves:
        assert any(p.name == "threads" for p in cmd.params), path
    res = CliRunner().invoke(main, ["models", "--threads", "2"])
    assert res.exit_code == 0, res.output
    assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
    assert threads.current() == threads.ThreadSetting(2, "--threads")
    assert CliRunner().invoke(main, ["models", "--threads", "0"]).exit_code == 2   # refused by click


PROBE_SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    from phonecli.threads import configure
    configure(int(sys.argv[1]))
    from phonecli.probe import train_probe
    out = {}
    for head in ("linear", "transformer"):
        run = train_probe(sys.argv[2], sys.argv[3], sys.argv[4] + "/" + head, head=head, epochs=2, patience=2,
                          batch_frames=400, progress=False)
        from safetensors.numpy import load_file
        w = load_file(str(run.weights_path))
        post = {s: run.read_posteriors(s) for s in ("dev", "test")}
        out[head] = {
            "weights": {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in sorted(w.items())},
            "posteriors": hashlib.sha256(b"".join(p[u].tobytes() for s in post for p in [post[s]] for u in p)).hexdigest(),
            "log": run.read_log(), "selection": run.info["selection"], "threads": run.info["threads"]}
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_probe_with_1_and_2_threads_gives_identical_weights_and_metrics(tiny_corpus, tmp_path):
    """Separate processes (a process's thread pools are set once); the transformer head is the one whose
    LayerNorm backward, attention dropout and fused inference path used to follow the thread count."""
    from phonecli.extract.runner import extract_features

    cache = extract_features("fbank", tiny_corpus, tmp_path / "cache", device="cpu", progress=False)
    got = {}
    for n in (1, 2):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(n)}
        proc = subprocess.run([sys.executable, "-c", PROBE_SCRIPT, str(n), str(cache), str(tiny_corpus),
                               str(tmp_path / f"runs{n}")], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        got[n] = json.loads(proc.stdout.strip().splitlines()[-1])
    for head in ("linear", "transformer"):
        a, b = got[1][head], got[2][head]
        assert a["threads"]["threads"] == 1 and b["threads"]["threads"] == 2 and b["threads"]["torch_intra_op"] == 2
        assert a["weights"] == b["weights"], head
        assert a["posteriors"] == b["posteriors"], head
        strip = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log]  # noqa: E731
        assert strip(a["log"]) == strip(b["log"]) and a["selection"] == b["selection"], head


@pytest.mark.slow
def test_quickstart_metrics_identical_with_1_and_2_threads(tmp_path):
    """The whole offline pipeline (fbank and tiny-HuBERT extraction, probes, late fusion, evaluation),
    in-process with 1 then 2 threads, probes capped at 3 epochs to keep it affordable."""
    from phonecli.pipeline.quickstart import quickstart

    metrics, caches = {}, {}
    for n in (1, 2):
        threads.configure(n)
        out = quickstart(tmp_path / f"qs{n}", echo=lambda s: None, progress=False, overrides={"probe": {"epochs": 3}})
        runs = sorted((out["out"] / "runs").iterdir())
        metrics[n] = {r.name: {k: v for k, v in json.loads((r / "metrics.json").read_text()).items()
                               if k in ("seed", "phone")} for r in runs}
        caches[n] = {p.relative_to(out["out"]): p.read_bytes()
                     for p in (out["out"] / "cache").rglob("c/0/0/0")}
    threads.configure(1)
    assert len(metrics[1]) == 4 and metrics[1] == metrics[2]
    assert caches[1].keys() == caches[2].keys() and all(caches[1][k] == caches[2][k] for k in caches[1])
