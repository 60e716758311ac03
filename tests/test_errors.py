"""One error model through the CLI: a bug (a ValueError raised deep inside numpy) keeps its traceback; a full
disk, a read-only output and truncated posteriors are one line naming the path and the fix, for extract,
probe, fuse, evaluate and report. The full disk and the read-only file system are real (tmpfs mounts)."""

from __future__ import annotations

import shutil
import subprocess

import numpy
import pytest
from click.testing import CliRunner

from phonecli.cli import main
from phonecli.runs import Run


def _probe_args(cache, data, out):
    return ["probe", "--features", str(cache), "--data", str(data), "--head", "linear", "--epochs", "2",
            "--patience", "2", "--device", "cpu", "--out", str(out)]


@pytest.fixture(scope="module")
def runs(tiny_fbank, tiny_corpus, tmp_path_factory):
    """Two finished probe runs (the second evaluated) of the tiny corpus."""
    root = tmp_path_factory.mktemp("err_runs")
    for name, lr in (("a", "0.001"), ("b", "0.003")):
        res = CliRunner().invoke(main, _probe_args(tiny_fbank, tiny_corpus, root / name) + ["--lr", lr])
        assert res.exit_code == 0, res.output
    assert CliRunner().invoke(main, ["evaluate", str(root / "b"), "--no-ci"]).exit_code == 0
    return root / "a", root / "b"


def _commands(tiny_fbank, tiny_corpus, runs, out):
    """Every stage writing under ``out`` (evaluate writes into its run, placed there by the caller)."""
    a, b = runs
    return {
        "extract": ["extract", "--model", "fbank", "--data", str(tiny_corpus), "--cache", str(out / "cache"),
                    "--device", "cpu"],
        "probe": _probe_args(tiny_fbank, tiny_corpus, out / "probe"),
        "fuse": ["fuse", "late", str(a), str(b), "--alphas", "0,1", "--jobs", "1", "--out", str(out / "fused")],
        "evaluate": ["evaluate", str(out / "run"), "--no-ci"],
        "report": ["report", str(b), "--out", str(out / "results"), "--no-evaluate"],
    }


def _one_line(res) -> str:
    """The error is one line (the last; the stage's own log lines may come before it), no traceback."""
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), res.exception
    errors = [ln for ln in res.output.strip().splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1 and res.output.strip().endswith(errors[0]) and "Traceback" not in res.output, res.output
    return errors[0]


# a numpy function each stage calls on its way (the bug is "inside numpy", far below the command)
DEEP = {"extract": "isfinite", "probe": "cumsum", "fuse": "cumsum", "evaluate": "isposinf", "report": "isfinite"}


@pytest.mark.parametrize("stage", list(DEEP))
def test_a_bug_keeps_its_traceback(stage, tiny_fbank, tiny_corpus, runs, tmp_path, monkeypatch):
    shutil.copytree(runs[0], tmp_path / "run")
    cmd = _commands(tiny_fbank, tiny_corpus, runs, tmp_path)[stage]

    def bug(*args, **kwargs):
        raise ValueError("a bug deep inside numpy")

    monkeypatch.setattr(numpy, DEEP[stage], bug)
    res = CliRunner().invoke(main, cmd)
    monkeypatch.undo()
    assert isinstance(res.exception, ValueError) and str(res.exception) == "a bug deep inside numpy"
    assert "Error:" not in res.output                # not turned into a one-line "user error"
    assert res.exc_info is not None and res.exc_info[2] is not None      # the traceback is there


@pytest.mark.parametrize("stage", ["extract", "probe", "fuse", "evaluate", "report"])
def test_full_disk_is_one_line(stage, tiny_fbank, tiny_corpus, runs, small_disk):
    disk = small_disk("4m")
    shutil.copytree(runs[0], disk / "run")
    with open(disk / "filler", "wb") as f:       # fill the file system: every write now fails with ENOSPC
        try:
            while True:
                f.write(b"\0" * 2**16)
                f.flush()
        except OSError:
            pass
    line = _one_line(CliRunner().invoke(main, _commands(tiny_fbank, tiny_corpus, runs, disk)[stage]))
    assert str(disk) in line
    assert ("no space left on the device; free space or choose another output location" in line
            or "is free there; free space or choose another output location" in line)


@pytest.mark.parametrize("stage", ["extract", "probe", "fuse", "evaluate", "report"])
def test_read_only_output_is_one_line(stage, tiny_fbank, tiny_corpus, runs, small_disk):
    disk = small_disk("16m")
    shutil.copytree(runs[0], disk / "run")
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    line = _one_line(CliRunner().invoke(main, _commands(tiny_fbank, tiny_corpus, runs, disk)[stage]))
    assert str(disk) in line and line.endswith("read-only file system; choose a writable output location")


def test_truncated_posteriors_are_one_line(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    f = Run.open(run).posteriors_path("test")
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    line = _one_line(CliRunner().invoke(main, ["evaluate", str(run), "--no-ci"]))
    assert f"{f}: unreadable posteriors" in line and "truncated or damaged" in line
    line = _one_line(CliRunner().invoke(main, ["fuse", "late", str(run), str(runs[1]), "--alphas", "0,1",
                                               "--out", str(tmp_path / "f")]))
    assert f"{f}: unreadable posteriors" in line
    f.write_bytes(b"")
    assert "unreadable posteriors" in _one_line(CliRunner().invoke(main, ["evaluate", str(run), "--no-ci"]))


# -- logging: configured once, by the CLI --------------------------------------------------------------

def test_logging_is_configured_once_by_the_cli(tiny_fbank, tiny_corpus, tmp_path):
    import logging

    args = _probe_args(tiny_fbank, tiny_corpus, tmp_path / "r")
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "epoch 1: train loss" in res.stderr          # INFO by default
    res = CliRunner().invoke(main, ["--log-level", "warning"] + args[:-1] + [str(tmp_path / "q")])
    assert res.exit_code == 0 and "epoch 1" not in res.stderr
    res = CliRunner().invoke(main, ["-v"] + args[:-1] + [str(tmp_path / "v")])
    assert res.exit_code == 0 and "epoch 1: train loss" in res.stderr
    ours = [h for h in logging.getLogger("phonecli").handlers if getattr(h, "_phonecli", False)]
    assert len(ours) == 1                                                         # one handler, however often


def test_the_library_only_logs():
    """No print, no handler or level set up, no environment-variable hooks outside the CLI's one setup."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "phonecli"
    patterns = [r"logging\.basicConfig", r"StreamHandler\(", r"\.addHandler\(", r"\.setLevel\(", r"^\s*print\(",
                r"PHONECLI_[A-Z_]+"]
    offenders = [f"{f.relative_to(root.parent)}: {p}" for f in root.rglob("*.py")
                 if f.name != "_stderr_log.py"
                 for p in patterns if re.search(p, f.read_text(), flags=re.M)]
    assert offenders == []
