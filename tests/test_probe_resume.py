"""Probe resume: a probe killed by kill -9, Ctrl-C (SIGINT) or a full disk continues with --resume from its
last completed epoch and ends bit-identical (weights, posteriors, log, selection) to an uninterrupted run on
the CPU; free space is checked before training. Real processes and a real tmpfs."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from phonecli.cli import main
from phonecli.runs import Run

# `python -m phonecli` that pauses for a minute right after the epoch-2 checkpoint (monkeypatched here, not
# a library hook), so the test can kill it at a known point; one torch thread like the in-process runs
DRIVER = """
import sys, time
import torch
torch.set_num_threads(1)
import phonecli.probe.train as train
save = train._save_checkpoint
def paused(ckpts, model, opt, state, best):
    out = save(ckpts, model, opt, state, best)
    if state["epoch"] == 2:
        print("checkpointed epoch 2", file=sys.stderr, flush=True)
        time.sleep(60)
    return out
train._save_checkpoint = paused
from phonecli.cli import main
main(sys.argv[1:], prog_name="phonecli")
"""


def _args(cache, data, out):
    # mlp: dropout, so the resumed run must restore the RNG stream too
    return ["probe", "--features", str(cache), "--data", str(data), "--head", "mlp", "--epochs", "5",
            "--patience", "5", "--lr", "0.003", "--batch-frames", "400", "--device", "cpu", "--out", str(out)]


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def reference(tiny_fbank, tiny_corpus, tmp_path_factory):
    """One uninterrupted run (one torch thread)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = CliRunner().invoke(main, _args(tiny_fbank, tiny_corpus, out))
    finally:
        torch.set_num_threads(n)
    assert res.exit_code == 0, res.output
    return Run.open(out)


def assert_equal_runs(a: Run, b: Run) -> None:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a.weights_path)), load_file(str(b.weights_path))
    assert set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)
    for split in ("train", "dev", "test"):
        pa, pb = a.read_posteriors(split), b.read_posteriors(split)
        assert list(pa) == list(pb) and all(np.array_equal(pa[u], pb[u]) for u in pa)

    def log(r):
        return [{k: v for k, v in x.items() if k != "seconds"} for x in r.read_log()]

    assert log(a) == log(b) and len(log(a)) == 5
    assert a.record.selection == b.record.selection
    assert {k: v for k, v in a.record.config.items() if k != "in_ram"} == \
        {k: v for k, v in b.record.config.items() if k != "in_ram"}
    assert a.record.status == "complete" and not (a.path / "checkpoints").exists()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_killed_probe_resumes_equal_to_uninterrupted(sig, tiny_fbank, tiny_corpus, tmp_path, reference, one_thread):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *_args(tiny_fbank, tiny_corpus, out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "checkpointed epoch 2" in line:
                break
        assert lines and "checkpointed epoch 2" in lines[-1], "".join(lines)[-2000:]
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 1)
    killed = Run.open(out, require_complete=False)
    assert killed.record.status == "running" and not killed.weights_path.exists()
    assert (out / "checkpoints" / "LATEST").read_text() == "epoch-0002"

    res = CliRunner().invoke(main, _args(tiny_fbank, tiny_corpus, out))
    assert res.exit_code == 1 and "interrupted probe run; pass --resume" in res.output   # not silently restarted
    res = CliRunner().invoke(main, _args(tiny_fbank, tiny_corpus, out) + ["--resume"])
    assert res.exit_code == 0, res.output
    assert_equal_runs(Run.open(out), reference)


def test_full_disk_stops_with_one_line_and_resumes_equal(tiny_fbank, tiny_corpus, reference, small_disk,
                                                         monkeypatch, one_thread):
    """A real ENOSPC (a 48 MB tmpfs filled up during epoch 3) keeps the epoch-2 checkpoint; after space is
    freed --resume ends equal to the uninterrupted run."""
    import phonecli.probe.train as train

    disk = small_disk("48m")
    out = disk / "run"
    filler = disk / "filler"
    save = train._save_checkpoint

    def fill_then_save(ckpts, model, opt, state, best):
        if state["epoch"] == 3:
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 2**16)
                        f.flush()
                except OSError as e:
                    assert e.errno == errno.ENOSPC
        return save(ckpts, model, opt, state, best)

    monkeypatch.setattr(train, "_save_checkpoint", fill_then_save)
    res = CliRunner().invoke(main, _args(tiny_fbank, tiny_corpus, out))
    assert res.exit_code == 1 and "Traceback" not in res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error: ")]   # log lines may come before it
    line = res.output.strip().splitlines()[-1]
    assert errors == [line]
    assert str(out) in line and line.endswith("no space left on the device; free space or choose another output "
                                              "location")
    assert (out / "checkpoints" / "LATEST").read_text() == "epoch-0002"
    assert Run.open(out, require_complete=False).record.status == "running"

    monkeypatch.setattr(train, "_save_checkpoint", save)
    filler.unlink()
    res = CliRunner().invoke(main, _args(tiny_fbank, tiny_corpus, out) + ["--resume"])
    assert res.exit_code == 0, res.output
    assert_equal_runs(Run.open(out), reference)


def test_free_space_is_checked_before_training(tiny_fbank, tiny_corpus, small_disk):
    disk = small_disk("256k")
    res = CliRunner().invoke(main, _args(tiny_fbank, tiny_corpus, disk / "run"))
    assert res.exit_code == 1
    assert f"{disk / 'run'}: the probe run (posteriors, weights, checkpoints) needs about" in res.output
    assert "free space or choose another output location" in res.output
    assert not (disk / "run").exists()                          # refused before anything was written
