"""Real processes: `kill -9` mid-extraction then resume, two extractions running at once on one store,
`torchrun --nproc-per-node 2` (gloo, CPU) and two torchrun *nodes* (`--nnodes 2`, static rendezvous on
127.0.0.1). Each must leave a cache equal, array for array and part for part, to one uninterrupted run.
The helpers take any store root (a local directory or an `s3://` URL: test_object_store.py reuses them).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PY = sys.executable
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
PART_BYTES = "30000"  # ~2 utterances per part of fbank float16 -> ~12 parts for the tiny corpus


# `python -m phonecli` with a pause after each written part (monkeypatched here, not a library hook), so the
# process lives long enough to be killed mid-run
SLOW_PARTS = """
import sys, time
import phonecli.extract.runner as runner
write = runner._write
def slow_write(*args, **kwargs):
    result = write(*args, **kwargs)
    time.sleep({delay})
    return result
runner._write = slow_write
from phonecli.cli import main
main(sys.argv[1:], prog_name="phonecli")
"""


def slow_cmd(delay: float, args: list[str]) -> list[str]:
    """``phonecli --log-level debug ARGS`` pausing ``delay`` s after each written part."""
    return [PY, "-c", SLOW_PARTS.format(delay=delay), "--log-level", "debug", *args]


def _env(**extra: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env.pop("WORLD_SIZE", None)
    return env


def _extract_args(data: Path, cache: Path | str) -> list[str]:
    return ["extract", "--model", "fbank", "--data", str(data), "--cache", str(cache), "--device", "cpu",
            "--part-bytes", PART_BYTES]


def _store_in(root: Path | str, reference: Path) -> Path | str:
    """Where an extraction with ``--cache root`` puts the store the reference run put under its own root."""
    rel = reference.relative_to(reference.parent.parent)
    return f"{root}/{rel.as_posix()}" if "://" in str(root) else Path(root) / rel


def _run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def reference(tiny_corpus, tmp_path_factory):
    """One uninterrupted single-process run."""
    root = tmp_path_factory.mktemp("ref")
    res = _run([PY, "-m", "phonecli", *_extract_args(tiny_corpus, root)])
    return Path(res.stdout.strip().splitlines()[-1])


def assert_same_cache(a_path: Path, b_path: Path) -> None:
    from phonecli.cache import FeatureCache

    a, b = FeatureCache.open(a_path), FeatureCache.open(b_path)
    assert a.is_complete and b.is_complete
    meta_a = {k: v for k, v in a.metadata.items() if k != "created"}
    meta_b = {k: v for k, v in b.metadata.items() if k != "created"}
    assert meta_a == meta_b
    assert [p.to_dict() for p in a.plan] == [p.to_dict() for p in b.plan]
    assert len(a.plan) >= 6
    assert a.utterance_ids() == b.utterance_ids()
    assert a.skipped == b.skipped
    for u in a.utterance_ids():
        assert (a.split_of(u), a.num_frames(u)) == (b.split_of(u), b.num_frames(u))
        np.testing.assert_array_equal(a.read(u), b.read(u))
    for part in a.plan:
        np.testing.assert_array_equal(a.read_part_raw(part.index), b.read_part_raw(part.index))


def kill_mid_run_then_resume(data: Path, root: Path | str, reference: Path) -> None:
    """SIGKILL an extraction after it wrote two parts, rerun the same command, compare with ``reference``."""
    cmd = [PY, "-m", "phonecli", *_extract_args(data, root)]
    # a pause after each written part keeps the process alive long enough to be killed mid-run
    proc = subprocess.Popen(slow_cmd(0.4, _extract_args(data, root)), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        written = []
        for line in proc.stderr:
            if "part" in line and "written" in line:
                written.append(line)
                if len(written) == 2:
                    break
        assert written, "the extraction wrote no part before exiting"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    from phonecli.cache import FeatureCache

    path = _store_in(root, reference)
    assert not FeatureCache.open(path).is_complete

    res = _run(cmd)
    assert "resuming" in res.stderr
    done_before = int(re.search(r"resuming \S+: (\d+) of \d+ parts already complete", res.stderr).group(1))
    assert 2 <= done_before < len(FeatureCache.open(reference).plan)
    assert res.stdout.strip().splitlines()[-1] == str(path)
    assert_same_cache(reference, path)


def two_concurrent_extractions(data: Path, root: Path | str, reference: Path) -> None:
    """Two independent processes run the same extraction into one store at the same time: both succeed,
    they share the parts (each skips what the other completed), and the store equals ``reference``."""
    cmd = slow_cmd(0.2, _extract_args(data, root))
    procs = [subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-1] == str(_store_in(root, reference))
    written = [sum(" written (" in line for line in err.splitlines()) for _, err in outs]
    n_parts = len(reference_plan(reference))
    assert all(w >= 1 for w in written) and sum(written) >= n_parts, written   # both worked, nothing is missing
    assert_same_cache(reference, _store_in(root, reference))


def reference_plan(reference: Path) -> list:
    from phonecli.cache import FeatureCache

    return FeatureCache.open(reference).plan


def torchrun_two_nodes(data: Path, root: Path | str, reference: Path) -> None:
    """Two torchrun node processes (``--nnodes 2 --nproc-per-node 1``, static rendezvous on 127.0.0.1) write one
    store; each node's rank writes only its parts (``index % 2 == rank``); the store equals ``reference``."""
    from conftest import _free_port

    rdzv = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "static",
            "--rdzv-endpoint", f"127.0.0.1:{_free_port()}"]
    procs = [subprocess.Popen([TORCHRUN, *rdzv, "--node-rank", str(r), "-m", "phonecli", "--log-level", "debug",
                               *_extract_args(data, root)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    for rank, (_, err) in enumerate(outs):
        parts = [int(line.split("part ")[1].split()[0]) for line in err.splitlines()
                 if line.startswith(f"rank {rank}: part ") and " written (" in line]
        assert parts and all(p % 2 == rank for p in parts), (rank, parts)
    assert outs[1][0].strip() == ""                                  # the node-1 rank does not report
    assert outs[0][0].strip().splitlines()[-1] == str(_store_in(root, reference))
    assert_same_cache(reference, _store_in(root, reference))


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tiny_corpus, tmp_path, reference):
    kill_mid_run_then_resume(tiny_corpus, tmp_path, reference)


def test_two_concurrent_extractions_equal_one_process(tiny_corpus, tmp_path, reference):
    two_concurrent_extractions(tiny_corpus, tmp_path, reference)


def test_torchrun_two_ranks_equals_one_process(tiny_corpus, tmp_path, reference):
    cmd = [TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "phonecli", "--log-level", "debug",
           *_extract_args(tiny_corpus, tmp_path)]
    res = _run(cmd)
    # both ranks wrote their own parts (index % 2 == rank)
    for rank in (0, 1):
        parts = [int(line.split("part ")[1].split()[0]) for line in res.stderr.splitlines()
                 if line.startswith(f"rank {rank}: part ")]
        assert parts and all(p % 2 == rank for p in parts)
    out = res.stdout.strip().splitlines()
    assert sum("real-time factor" in line for line in out) == 1  # rank 0 alone reports
    path = Path(out[-1])
    assert path == tmp_path / reference.relative_to(reference.parent.parent)
    assert_same_cache(reference, path)


def test_torchrun_two_nodes_equal_one_process(tiny_corpus, tmp_path, reference):
    torchrun_two_nodes(tiny_corpus, tmp_path, reference)
