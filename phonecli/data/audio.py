"""Audio loading shared by extraction and fine-tuning: float32 mono at 16 kHz, or one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from phonecli.errors import AudioChangedError, AudioError  # noqa: F401  (re-exported)

TARGET_SR = 16_000
MIN_SECONDS = 0.1  # below this no encoder yields a frame worth keeping


def content_hash(data: bytes) -> str:
    """The manifest's ``audio_sha256``: SHA-256 (hex) of the audio file's bytes as stored."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


def file_hash(path: str | Path) -> str:
    """:func:`content_hash` of a file (read once)."""
    return content_hash(Path(path).read_bytes())


def check_unchanged(path: str | Path, utt_id: str, sha256: str, data: bytes | None = None) -> None:
    """Raise :class:`AudioChangedError` when the file's bytes no longer hash to ``sha256`` (the manifest's)."""
    got = content_hash(Path(path).read_bytes() if data is None else data)
    if got != sha256:
        raise AudioChangedError(f"{path} (utterance {utt_id}) changed since `phonecli data prepare` (content hash "
                                f"{got[:12]}, manifest {sha256[:12]}): re-run `phonecli data prepare` (a new "
                                "corpus_id; caches of the old audio are never reused)")


def load_audio(path: str | Path, target_sr: int = TARGET_SR, min_seconds: float = MIN_SECONDS,
               expected: tuple[str, int, str] | None = None) -> np.ndarray:
    """Read ``path`` -> float32 array ``(samples,)`` at ``target_sr`` Hz, mono.

    Stereo is downmixed (mean of channels); another sample rate is resampled with
    torchaudio's sinc resampler. Missing/unreadable/empty/too-short audio and NaN/inf
    samples raise :class:`AudioError`. ``expected`` = ``(utt_id, num_samples, audio_sha256)``
    from the manifest: the file's bytes must hash to ``audio_sha256`` and decode to
    ``num_samples`` samples (at the file's rate), else :class:`AudioChangedError`.
    """
    import io

    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: audio file not found; check the corpus path or re-run `phonecli data prepare`")
    data = path.read_bytes()
    if expected is not None:
        check_unchanged(path, expected[0], expected[2], data)
    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError with libsndfile's text
        raise AudioError(f"{path}: unreadable audio ({e}); re-encode it as WAV/FLAC or remove it from the corpus") from e
    if expected is not None and wav.shape[0] != expected[1]:
        raise AudioChangedError(f"{path} (utterance {expected[0]}) decodes to {wav.shape[0]} samples but the "
                                f"manifest says {expected[1]}: the file changed since `phonecli data prepare`; "
                                "re-run it")
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
