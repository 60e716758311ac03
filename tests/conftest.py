"""Shared fixtures: a tiny synthetic manifest (built directly, no espeak) for fast stage tests."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest


def make_tiny_corpus(root: Path, n_train: int = 12, n_dev: int = 6, n_test: int = 6, seed: int = 0,
                     sample_rate: int = 16000):
    """A manifest of short noise+tone WAVs with random phones and scores (not speech!).

    Speakers are split-disjoint (3 utterances each). Returns the saved ``Manifest``.
    """
    import soundfile as sf

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
