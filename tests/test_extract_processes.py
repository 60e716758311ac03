"""Real processes: `kill -9` mid-extraction then resume, and `torchrun --nproc-per-node 2` (gloo, CPU).

Both must leave a cache equal, array for array and part for part, to one uninterrupted run.
"""

from __future__ import annotations

import os
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
    write(*args, **kwargs)
    time.sleep(0.4)
runner._write = slow_write
from phonecli.cli import main
main(sys.argv[1:], prog_name="phonecli")
"""


def _env(**extra: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env.pop("WORLD_SIZE", None)
    return env


def _extract_args(data: Path, cache: Path) -> list[str]:
    return ["extract", "--model", "fbank", "--data", str(data), "--cache", str(cache), "--device", "cpu",
            "--part-bytes", PART_BYTES]


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


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tiny_corpus, tmp_path, reference):
    cmd = [PY, "-m", "phonecli", *_extract_args(tiny_corpus, tmp_path)]
    proc = subprocess.Popen([PY, "-c", SLOW_PARTS, "--log-level", "debug", *_extract_args(tiny_corpus, tmp_path)],
                            env=_env(),
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

    path = tmp_path / reference.relative_to(reference.parent.parent)
    assert not FeatureCache.open(path).is_complete

    res = _run(cmd)
    assert "resuming" in res.stderr
    done_before = int(res.stderr.split("resuming", 1)[1].split(":", 1)[1].split(" of ")[0])
    assert 2 <= done_before < len(FeatureCache.open(reference).plan)
    assert Path(res.stdout.strip().splitlines()[-1]) == path
    assert_same_cache(reference, path)


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
