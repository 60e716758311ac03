"""Training data for fine-tuning: manifest -> examples (audio + phone targets), guards, collation.

Guards, decided before any audio is decoded (from ``num_samples`` in the manifest):

* an utterance whose CTC target cannot fit its frames (``len(target)`` + one blank between equal
  neighbours > ``num_frames(samples)``) is skipped for training, counted and reported with its id
  (CTC would give an infinite loss, silently zeroed by ``zero_infinity``);
* an utterance without any phone is skipped for training;
* ``--max-audio-seconds S`` **drops** longer training utterances (counted and reported). Cropping
  was rejected: the phone targets cannot be cut with the audio without an alignment, and a
  cropped waveform with the full transcript teaches the model to hallucinate phones.

Dev/train/test posteriors are always computed for every utterance (the guards only concern
the training loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from phonecli import ctc
from phonecli.errors import ConfigError

SAMPLE_RATE = 16_000
TARGETS = ("canonical", "realized")


@dataclass
class Example:
    utt_id: str
    audio: str                  # absolute path
    samples: int                # at 16 kHz
    frames: int                 # encoder frames (adapter.num_frames)
    target: list[int]           # vocabulary ids 1..39
    expected: tuple | None = None   # (utt_id, num_samples, audio_sha256) from the manifest: load_audio checks them


def samples_16k(u) -> int:
    return int(round(u.num_samples * SAMPLE_RATE / u.sample_rate)) if u.sample_rate else int(u.num_samples)


def make_examples(manifest, split: str, targets: str, num_frames, *, max_audio_seconds: float | None = None,
                  training: bool = True) -> tuple[list[Example], list[dict]]:
    """``(examples, skipped)`` for one split in manifest order; ``skipped``: ``[{"utt_id", "reason"}]``.

    ``num_frames(samples) -> frames`` is the encoder's own formula. With ``training=False`` nothing is
    skipped except utterances that give no frame at all.
    """
    if targets not in TARGETS:
        raise ConfigError(f"--targets {targets!r}: choose canonical or realized")
    out: list[Example] = []
    skipped: list[dict] = []
    for u in manifest.split(split):
        n = samples_16k(u)
        frames = int(num_frames(n))
        phones = u.canonical_phones if targets == "canonical" else u.realized_phones
        target = manifest.vocab.encode(phones)
        reason = None
        if frames < 1:
            reason = f"audio too short ({n / SAMPLE_RATE:.3f} s) for a single encoder frame"
        elif training and not target:
            reason = f"no {targets} phones"
        elif training and max_audio_seconds and n > max_audio_seconds * SAMPLE_RATE:
            reason = f"{n / SAMPLE_RATE:.2f} s > --max-audio-seconds {max_audio_seconds:g} (dropped)"
        elif training and ctc.min_frames(target) > frames:
            reason = (f"{len(target)} {targets} phones need {ctc.min_frames(target)} CTC frames but the audio "
                      f"gives {frames}")
        if reason:
            skipped.append({"utt_id": u.utt_id, "split": split, "reason": reason})
        else:
            out.append(Example(u.utt_id, str(manifest.audio_path(u)), n, frames, target,
                               (u.utt_id, u.num_samples, u.audio_sha256) if u.audio_sha256 else None))
    return out, skipped


class Collator:
    """``[(Example, wave float32 (samples,))] -> batch dict`` of tensors for :class:`CTCModel`.

    Keys: model inputs (``input_values`` for SSL encoders, ``input_features`` for W2V-BERT and
    Whisper, ``attention_mask`` when the encoder is padding-safe), ``frames`` ``(B,)`` int64,
    ``num_samples`` ``(B,)``, ``labels`` ``(B, max_target)`` int64 padded with -100,
    ``target_lengths`` ``(B,)``, ``utt_ids`` (list); Whisper adds ``window_utt``/``window_samples``.
    """

    def __init__(self, adapter):
        self.adapter = adapter
        self.family = adapter.spec.family

    def __call__(self, items: list[tuple[Example, np.ndarray]]) -> dict:
        waves = [w for _, w in items]
        batch: dict = {"utt_ids": [e.utt_id for e, _ in items],
                       "num_samples": torch.tensor([len(w) for w in waves], dtype=torch.long),
                       "frames": torch.tensor([self.adapter.num_frames(len(w)) for w in waves], dtype=torch.long)}
        batch.update(self.inputs(waves))
        t = max((len(e.target) for e, _ in items), default=0)
        labels = torch.full((len(items), max(t, 1)), -100, dtype=torch.long)
        for i, (e, _) in enumerate(items):
            labels[i, : len(e.target)] = torch.tensor(e.target, dtype=torch.long)
        batch["labels"] = labels
        batch["target_lengths"] = torch.tensor([len(e.target) for e, _ in items], dtype=torch.long)
        return batch

    def inputs(self, waves: list[np.ndarray]) -> dict:
        """Model inputs through the adapter's own feature extractor (its normalisation settings)."""
        fe = self.adapter.feature_extractor
        if self.family == "whisper":
            from phonecli.encoders.adapters.whisper import split_windows

            pieces = [(u, w) for u, wave in enumerate(waves) for w in split_windows(wave, self.adapter.window_samples)]
            return {"input_features": self.adapter.features([w for _, w in pieces]),
                    "window_utt": torch.tensor([u for u, _ in pieces], dtype=torch.long),
                    "window_samples": torch.tensor([len(w) for _, w in pieces], dtype=torch.long)}
        enc = fe(waves, sampling_rate=SAMPLE_RATE, padding=True, return_attention_mask=True, return_tensors="pt")
        if self.family == "w2v-bert":
            return {"input_features": enc["input_features"], "attention_mask": enc["attention_mask"]}
        out = {"input_values": enc["input_values"]}
        # GroupNorm-CNN / stacked-pos-conv encoders were pre-trained without an attention mask (see the
        # SSL adapter); they get zero padding only, like HF's own fine-tuning recipes for base models.
        if self.adapter.padding_safe and len({len(w) for w in waves}) > 1:
            out["attention_mask"] = enc["attention_mask"]
        return out


def load_waves(examples: list[Example]) -> list[np.ndarray]:
    """16 kHz mono float32 waveforms; a bad file stops with one line naming it (checkpoints are kept)."""
    from phonecli.data.audio import AudioError, load_audio
    from phonecli.finetune.model import FinetuneError

    out = []
    for e in examples:
        try:
            out.append(load_audio(e.audio, expected=e.expected))
        except AudioError as err:
            raise FinetuneError(f"utterance {e.utt_id}: {err}; fix the file (or remove the utterance with "
                                "`phonecli data prepare --on-error skip`) and rerun with --resume") from err
    return out


def to_device(batch: dict, device: str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def inference_batches(examples: list[Example], batch_seconds: float, padding_safe: bool,
                      max_utts: int | None = None) -> list[list[int]]:
    """Index batches for posteriors: length-sorted, padded size <= ``batch_seconds``, at most ``max_utts``
    utterances (Whisper: every utterance is a 30 s window whatever its length); encoders that are not
    padding-safe get exact-length groups (so posteriors do not depend on the batch)."""
    order = sorted(range(len(examples)), key=lambda i: (examples[i].samples, i))
    cap = int(batch_seconds * SAMPLE_RATE)
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        n = examples[i].samples
        full = max_utts is not None and len(cur) >= max_utts
        if cur and (full or (not padding_safe and n != examples[cur[0]].samples) or n * (len(cur) + 1) > cap):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out
