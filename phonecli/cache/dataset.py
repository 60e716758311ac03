"""Torch access to a cache: a Dataset of utterances and a frame-budget, length-bucketed sampler.

    ds = FeatureDataset(cache, "train", layers=[6, 12])
    sampler = LengthBucketSampler(ds.frame_counts, batch_frames=20_000, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=pad_collate)
    for utt_ids, feats, lengths in loader:   # feats (B, L, T_max, D), lengths (B,) in frames
        ...
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from phonecli.cache.reader import FeatureCache
from phonecli.errors import ConfigError


class FeatureDataset(Dataset):
    """Utterances of one split: item ``i`` -> ``(utt_id, tensor (len(layers), frames, dim))``.

    The tensor dtype is the cache's (float16/float32; int8 caches yield float32).
    ``preload=True`` loads the split into RAM in one sequential pass (``cache.load_split``);
    check ``cache.nbytes_split(split, layers)`` first.
    """

    def __init__(self, cache: FeatureCache | str, split: str, layers: list[int] | None = None,
                 preload: bool = False):
        self.cache = cache if isinstance(cache, FeatureCache) else FeatureCache.open(cache)
        self.split = split
        self.layers = list(self.cache.layers) if layers is None else [int(x) for x in layers]
        self.utt_ids = self.cache.utterance_ids(split)
        self.frame_counts = [self.cache.num_frames(u) for u in self.utt_ids]
        self._ram = self.cache.load_split(split, self.layers) if preload else None

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor]:
        u = self.utt_ids[i]
        x = self._ram[u] if self._ram is not None else self.cache.read(u, self.layers)
        return u, torch.from_numpy(x)

    def __getitems__(self, indices: list[int]) -> list[tuple[str, torch.Tensor]]:
        """Batched fetch used by DataLoader: one ``read_many`` per minibatch."""
        ids = [self.utt_ids[i] for i in indices]
        if self._ram is not None:
            xs = [self._ram[u] for u in ids]
        else:
            xs = self.cache.read_many(ids, self.layers)
        return [(u, torch.from_numpy(x)) for u, x in zip(ids, xs)]


def pad_collate(batch: list[tuple[str, torch.Tensor]]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """-> (utt_ids, features ``(B, L, T_max, D)`` zero-padded, lengths ``(B,)`` int64 frames)."""
    ids = [u for u, _ in batch]
    lengths = torch.tensor([x.shape[1] for _, x in batch], dtype=torch.long)
    L, _, D = batch[0][1].shape
    out = torch.zeros((len(batch), L, int(lengths.max()), D), dtype=batch[0][1].dtype)
    for i, (_, x) in enumerate(batch):
        out[i, :, : x.shape[1]] = x
    return ids, out, lengths


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of dataset indices whose PADDED size ``len(batch) * max(frames)`` <= ``batch_frames``.

    Utterances are sorted by length so a batch holds similar lengths (little padding). With
    ``shuffle=True`` the lengths are jittered by up to ±``jitter`` (relative) before sorting, so
    batch composition changes between epochs, and the batch order is shuffled; both use
    ``numpy.random.default_rng(seed + epoch)`` — deterministic for a given (seed, epoch); call
    :meth:`set_epoch` each epoch. An utterance longer than ``batch_frames`` gets a batch of its
    own (never dropped). ``num_replicas``/``rank`` give each DDP rank every ``num_replicas``-th
    batch (the batch list is padded by repetition so every rank gets the same count).
    """

    def __init__(self, frame_counts: list[int], batch_frames: int, shuffle: bool = True, seed: int = 0,
                 jitter: float = 0.1, num_replicas: int = 1, rank: int = 0):
        if batch_frames < 1:
            raise ConfigError(f"batch size {batch_frames} (frames or samples) must be >= 1; raise the batch size option")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside num_replicas {num_replicas}")
        self.frame_counts = [int(f) for f in frame_counts]
        self.batch_frames = int(batch_frames)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.jitter = float(jitter)
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self) -> list[list[int]]:
        """All batches of this epoch (before the DDP rank split)."""
        n = len(self.frame_counts)
        if n == 0:
            return []
        lengths = np.asarray(self.frame_counts, dtype=np.float64)
        rng = np.random.default_rng(self.seed + self.epoch)
        if self.shuffle:
            key = lengths * (1.0 + rng.uniform(-self.jitter, self.jitter, size=n))
        else:
            key = lengths
        order = np.lexsort((np.arange(n), key))      # stable: ties by index
        out: list[list[int]] = []
        cur: list[int] = []
        cur_max = 0
        for i in order.tolist():
            f = self.frame_counts[i]
            new_max = max(cur_max, f)
            if cur and new_max * (len(cur) + 1) > self.batch_frames:
                out.append(cur)
                cur, new_max = [], f
            cur.append(i)
            cur_max = new_max
        if cur:
            out.append(cur)
        if self.shuffle:
            perm = rng.permutation(len(out))
            out = [out[j] for j in perm]
        return out

    def __iter__(self):
        b = self.batches()
        if self.num_replicas > 1:
            per_rank = math.ceil(len(b) / self.num_replicas)
            b = (b * math.ceil(per_rank * self.num_replicas / max(len(b), 1)))[: per_rank * self.num_replicas]
            b = b[self.rank::self.num_replicas]
        return iter(b)

    def __len__(self) -> int:
        n = len(self.batches())
        return math.ceil(n / self.num_replicas) if self.num_replicas > 1 else n
