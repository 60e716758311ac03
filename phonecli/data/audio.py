"""Audio loading shared by extraction and fine-tuning: float32 mono at 16 kHz, or one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from phonecli.errors import AudioError  # noqa: F401  (re-exported)

TARGET_SR = 16_000
MIN_SECONDS = 0.1  # below this no encoder yields a frame worth keeping


def load_audio(path: str | Path, target_sr: int = TARGET_SR, min_seconds: float = MIN_SECONDS) -> np.ndarray:
    """Read ``path`` -> float32 array ``(samples,)`` at ``target_sr`` Hz, mono.

    Stereo is downmixed (mean of channels); another sample rate is resampled with
    torchaudio's sinc resampler. Missing/unreadable/empty/too-short audio and NaN/inf
    samples raise :class:`AudioError`.
    """
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: audio file not found; check the corpus path or re-run `phonecli data prepare`")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError with libsndfile's text
        raise AudioError(f"{path}: unreadable audio ({e}); re-encode it as WAV/FLAC or remove it from the corpus") from e
    if wav.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples); remove the utterance or use --on-error skip")
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: audio contains NaN/inf samples; re-encode the file or use --on-error skip")
    wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if sr != target_sr:
        import torch
        import torchaudio.functional as AF

        wav = AF.resample(torch.from_numpy(np.ascontiguousarray(wav)), sr, target_sr).numpy()
    if wav.shape[0] < min_seconds * target_sr:
        raise AudioError(
            f"{path}: audio too short ({wav.shape[0] / target_sr:.3f} s < {min_seconds} s); "
            "remove the utterance or use --on-error skip"
        )
    return np.ascontiguousarray(wav, dtype=np.float32)
