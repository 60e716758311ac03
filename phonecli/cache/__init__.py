"""The Zarr v3 feature cache: per-utterance hidden states ``(layers, frames, dim)`` of one encoder.

Public API (the contract every stage uses)::

    from phonecli.cache import FeatureCache, CacheWriter, plan_parts, CacheError, CacheMismatchError, CacheOverflowError

See ``phonecli/cache/store.py`` for the on-disk layout and the completion protocol.
``phonecli.cache.dataset`` (torch) is imported separately so this package does not import torch.
"""

from __future__ import annotations

from phonecli.cache.int8 import Int8Features, quantize_int8
from phonecli.cache.plan import DEFAULT_TARGET_BYTES, Part, plan_parts
from phonecli.cache.reader import FeatureCache
from phonecli.cache.store import FORMAT, VERSION, CacheError, CacheMismatchError, CacheOverflowError
from phonecli.cache.writer import CacheWriter

__all__ = [
    "CacheError", "CacheMismatchError", "CacheOverflowError", "CacheWriter", "DEFAULT_TARGET_BYTES",
    "FORMAT", "FeatureCache", "Int8Features", "Part", "VERSION", "plan_parts", "quantize_int8",
]
