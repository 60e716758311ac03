"""Real processes: a fine-tuning job killed with SIGKILL after a checkpoint resumes with --resume and ends
with the same weights, log and posteriors as an uninterrupted run (CPU, one thread: deterministic);
`torchrun --nproc-per-node 2` (gloo, CPU) equals one process accumulating 2 batches per step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("peft")

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


# `python -m phonecli` with a 30 s pause after each checkpoint (monkeypatched here, not a library hook), so the
# job can be killed right after its first one
SLOW_CHECKPOINTS = """
import sys, time
import phonecli.finetune.train as train
save = train._save_checkpoint
def slow_save(*args, **kwargs):
    out = save(*args, **kwargs)
    time.sleep(30)
    return out
train._save_checkpoint = slow_save
from phonecli.cli import main
main(sys.argv[1:], prog_name="phonecli")
"""


def _tiny_hubert(d: Path, dropout: float = 0.1) -> Path:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             conv_dim=(16, 16, 32), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8),
                             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, mask_time_prob=0.0,
                             layerdrop=0.0, hidden_dropout=dropout, attention_dropout=dropout,
                             activation_dropout=dropout, final_dropout=dropout)).save_pretrained(d)
    return d


def test_sigkilled_run_resumes_and_equals_an_uninterrupted_one(tiny_corpus, tmp_path):
    from click.testing import CliRunner
    from safetensors.torch import load_file

    from phonecli.cli import main
    from phonecli.runs import Run

    # dropout on (0.1): the resumed run must also restore the RNG streams
    model_dir = _tiny_hubert(tmp_path / "tiny_hubert")
    args = ["finetune", "--model", str(model_dir), "--data", str(tiny_corpus), "--mode", "freeze-feature-encoder",
            "--epochs", "3", "--lr", "1e-3", "--batch-seconds", "3", "--save-steps", "2", "--device", "cpu"]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CHECKPOINTS, "--log-level", "warning", *args, "--out",
                             str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        latest = killed / "checkpoints" / "LATEST"
        while not latest.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no checkpoint within 180 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)  # sleeping right after its first checkpoint (step 2 of epoch 1)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert latest.read_text() == "step-0000002"
    assert not (killed / "weights.safetensors").exists()

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = CliRunner()
        res = r.invoke(main, args + ["--out", str(killed), "--resume"])
        assert res.exit_code == 0, res.output
        assert res.stdout.strip().splitlines()[-1] == str(killed)
        ref = tmp_path / "uninterrupted"
        res = r.invoke(main, args + ["--out", str(ref)])
        assert res.exit_code == 0, res.output
    finally:
        torch.set_num_threads(n)

    a, b = Run.open(killed), Run.open(ref)
    assert a.info["status"] == "complete" and not (killed / "checkpoints").exists()
    assert [x["epoch"] for x in a.read_log()] == [1, 2, 3]
    for x, y in zip(a.read_log(), b.read_log()):
        assert x["step"] == y["step"]
        assert np.isclose(x["train_loss"], y["train_loss"], atol=1e-5) and np.isclose(x["dev_loss"], y["dev_loss"], atol=1e-5)
    wa, wb = load_file(str(a.weights_path)), load_file(str(b.weights_path))
    assert set(wa) == set(wb)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert a.info["selection"] == b.info["selection"]
    pa, pb = a.read_posteriors("test"), b.read_posteriors("test")
    assert all(np.allclose(pa[u], pb[u], atol=1e-4) for u in pa)


@pytest.mark.slow
def test_torchrun_two_ranks_equals_one_process_with_accumulation(tiny_corpus, tmp_path):
    from click.testing import CliRunner
    from safetensors.torch import load_file

    from phonecli.cli import main
    from phonecli.runs import Run

    model_dir = _tiny_hubert(tmp_path / "tiny_hubert", dropout=0.0)  # no per-rank RNG streams to compare
    # 4.5 s batches: 4 batches per epoch on the tiny corpus, so each rank gets 2 (no padding repeat)
    args = ["finetune", "--model", str(model_dir), "--data", str(tiny_corpus), "--mode", "full", "--epochs", "2",
            "--lr", "1e-3", "--batch-seconds", "4.5", "--device", "cpu", "--warmup-ratio", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = tmp_path / "ddp"
    proc = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "phonecli", "--log-level",
                           "warning", *args,
                           "--out", str(ddp)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(ddp)  # rank 0 alone prints
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = CliRunner().invoke(main, args + ["--grad-accum", "2", "--out", str(tmp_path / "one")])
        assert res.exit_code == 0, res.output
    finally:
        torch.set_num_threads(n)
    a, b = Run.open(ddp), Run.open(tmp_path / "one")
    assert [r["step"] for r in a.read_log()] == [r["step"] for r in b.read_log()] == [2, 4]
    for x, y in zip(a.read_log(), b.read_log()):
        assert np.isclose(x["dev_loss"], y["dev_loss"], atol=1e-4) and x["dev_per"] == y["dev_per"]
    wa, wb = load_file(str(a.weights_path)), load_file(str(b.weights_path))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert a.posterior_splits() == ["train", "dev", "test"]
