"""Shared fixtures: a tiny synthetic manifest (built directly, no espeak) for fast stage tests, and the
``device`` parametrisation (torchaudio style): a test taking ``device`` runs on ``"cpu"`` and, on a
machine where torch sees a GPU, on ``"cuda"``; tests marked ``cuda`` are skipped without one.

CPU threads are pinned to 1 for the whole session (torch, BLAS, OpenMP and child processes):
results do not depend on the count, but on a busy 2-core machine spinning OpenMP threads made
suites several times slower. A test that changes the count (``--threads 2``) gets it reset.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from phonecli import threads

threads.configure(1)


@pytest.fixture(autouse=True)
def _pinned_threads():
    yield
    if threads.current().threads != 1 or os.environ.get("OMP_NUM_THREADS") != "1":
        threads.configure(1)


NO_CUDA = "no CUDA device visible to torch: the cuda variant runs on a GPU machine (see docs/sections/cluster.md)"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if cuda_items and not cuda_available():
        for item in cuda_items:
            item.add_marker(pytest.mark.skip(reason=NO_CUDA))


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request) -> str:
    """``"cpu"``, then ``"cuda"`` (skipped with a clear reason where there is no GPU)."""
    return request.param


def make_tiny_corpus(root: Path, n_train: int = 12, n_dev: int = 6, n_test: int = 6, seed: int = 0,
                     sample_rate: int = 16000):
    """A manifest of short noise+tone WAVs with random phones and scores (not speech!).

    Speakers are split-disjoint (3 utterances each). Returns the saved ``Manifest``.
    """
    import soundfile as sf

    from phonecli.data.audio import file_hash
    from phonecli.data.manifest import Manifest, Mispronunciation, Utterance, Word, realize
    from phonecli.data.phones import PHONES

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    audio_dir = root / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    utts = []
    k = 0
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        for i in range(n):
            spk = f"{split[:2].upper()}{i // 3:02d}"
            utt_id = f"{k:09d}"
            k += 1
            seconds = rng.uniform(0.6, 1.6)
            t = np.arange(int(seconds * sample_rate)) / sample_rate
            wav = 0.1 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.02 * nrng.standard_normal(t.shape)
            path = audio_dir / f"{utt_id}.wav"
            sf.write(path, wav.astype(np.float32), sample_rate, subtype="PCM_16")
            words = []
            for w in range(rng.randint(1, 3)):
                phones = [rng.choice(PHONES) for _ in range(rng.randint(2, 4))]
                acc = [rng.choice([2.0, 2.0, 2.0, 1.6, 1.0, 0.4, 0.0]) for _ in phones]
                mis = [Mispronunciation(j, phones[j], rng.choice(["<DEL>", "S", "AH*", "<unk>"]))
                       for j, a in enumerate(acc) if a < 0.5]
                words.append(Word(text=f"w{w}", phones=phones, phone_accuracy=acc, accuracy=8.0,
                                  stress=10.0, total=8.0, mispronunciations=mis))
            accuracy = float(round(10 * np.mean([a for w in words for a in w.phone_accuracy]) / 2))
            utts.append(Utterance(
                utt_id=utt_id, speaker=spk, split=split, audio=str(path.relative_to(root)),
                duration=len(wav) / sample_rate, num_samples=len(wav), sample_rate=sample_rate,
                text=" ".join(w.text for w in words), accuracy=accuracy, completeness=10.0,
                fluency=8.0, prosodic=8.0, total=accuracy, words=words, realized_phones=realize(words),
                audio_sha256=file_hash(path),
            ))
    m = Manifest(utterances=utts, source={"kind": "tiny-test"})
    m.save(root)
    return m


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Directory holding a tiny manifest (24 utterances, split-disjoint speakers)."""
    root = tmp_path_factory.mktemp("tiny_corpus")
    make_tiny_corpus(root)
    return root


# --------------------------------------------------------------------------------- a real S3 server

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (moto in server mode, a separate process) on 127.0.0.1, once per session.

    phonecli gets the endpoint and the credentials only the standard way, from the environment
    (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), which subprocesses
    inherit; ``AWS_CONFIG_FILE``/``AWS_SHARED_CREDENTIALS_FILE`` point at empty files so a
    developer's own ~/.aws cannot leak in, and the EC2 metadata service is never asked.
    Yields ``{"endpoint", "key", "secret"}``; only 127.0.0.1 is ever contacted.
    """
    import os
    import subprocess
    import sys
    import time
    import urllib.request
    import uuid

    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto server did not start on {endpoint}: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    empty = tmp_path_factory.mktemp("aws")
    creds = {"key": f"PHONECLITESTKEY{uuid.uuid4().hex[:8].upper()}", "secret": f"secret-{uuid.uuid4().hex}"}
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": creds["key"], "AWS_SECRET_ACCESS_KEY": creds["secret"],
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(empty / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(empty / "credentials"),
           "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(k, raising=False)
        try:
            yield {"endpoint": endpoint, **creds}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture()
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket on the session's S3 server: ``"s3://<name>"``."""
    import uuid

    import fsspec

    name = f"phonecli-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", use_listings_cache=False, skip_instance_cache=True).mkdir(name)
    return f"s3://{name}"
@pytest.fixture(scope="session")
def tiny_fbank(tiny_corpus, tmp_path_factory):
    """A real fbank cache of the tiny corpus (``phonecli extract``'s code path): its path."""
    from phonecli.extract.runner import extract_features

    return extract_features("fbank", tiny_corpus, tmp_path_factory.mktemp("tiny_fbank"), device="cpu",
                            progress=False)


@pytest.fixture
def small_disk(tmp_path):
    """``mount(size, readonly=False) -> Path``: a real tmpfs of ``size`` (e.g. "2m") under tmp_path, so a
    full disk (ENOSPC) or a read-only file system (EROFS) is the kernel's, not a mock. Unmounted after."""
    import subprocess

    mounted = []

    def mount(size: str, readonly: bool = False) -> Path:
        d = tmp_path / f"disk{len(mounted)}"
        d.mkdir()
        opts = f"size={size}" + (",ro" if readonly else "")
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {res.stderr.strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in reversed(mounted):
        subprocess.run(["umount", "-l", str(d)], check=False)
