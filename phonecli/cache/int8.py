"""int8 cache values: symmetric per-(layer, channel) quantisation and the (values, scales) pair readers hand on.

An int8 cache stores, per utterance, int8 values ``q`` of shape ``(layers, frames, dim)`` and
float32 scales ``s`` of shape ``(layers, dim)`` with ``x ~= q * s[:, None, :]``. Readers can hand
the pair on undequantised (:class:`Int8Features`): a minibatch then moves 1 byte per value
(+ ``4 * layers * dim`` bytes of scales per utterance) instead of 2 (float16) or 4 (float32),
and whoever consumes it dequantises where the arithmetic happens (the probe: on its device).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT8_MAX = 127


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per (layer, channel) of one utterance.

    ``x``: float32 ``(layers, frames, dim)`` -> (int8 ``(layers, frames, dim)``, float32 scales
    ``(layers, dim)``) with ``x ~= q * scales[:, None, :]`` and ``|x - q*s| <= s/2`` where
    ``s = max_frames |x| / 127``. Per-utterance scales keep quiet utterances precise (a loud one
    elsewhere in the part cannot coarsen them) and make values independent of part grouping.
    """
    scales = (np.abs(x).max(axis=1) / INT8_MAX).astype(np.float32)           # (L, D)
    safe = np.where(scales > 0, scales, np.float32(1.0))
    q = np.clip(np.rint(x / safe[:, None, :]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scales


@dataclass(frozen=True)
class Int8Features:
    """One utterance of an int8 cache, not dequantised.

    ``values``: int8 ``(layers, frames, dim)``; ``scales``: float32 ``(layers, dim)``.
    ``dequantize()`` gives float32 ``values * scales[:, None, :]`` — the same single float32
    multiplication (one rounding) as ``torch`` does on any device, so CPU and on-device
    dequantisation agree bit for bit.
    """

    values: np.ndarray
    scales: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.values.shape

    @property
    def nbytes(self) -> int:
        """Bytes this utterance occupies in RAM / moves to a device (values + scales)."""
        return int(self.values.nbytes + self.scales.nbytes)

    def dequantize(self) -> np.ndarray:
        """float32 ``(layers, frames, dim)``."""
        return np.multiply(self.values, self.scales[:, None, :], dtype=np.float32)

    def with_values(self, values: np.ndarray) -> Int8Features:
        """The same scales over other int8 frames (a frame slice or repetition of these values)."""
        return Int8Features(values, self.scales)
