"""Deterministic grouping of utterances into parts: the unit of writing, completion and resume."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_TARGET_BYTES = 256 * 1024 * 1024


@dataclass
class Part:
    """One region of the cache, written whole by exactly one worker.

    ``utt_ids``/``splits``/``est_frames`` are parallel lists in plan order; ``est_frames`` are the
    planner's estimates (the stored frame counts come from the features actually written).
    """

    index: int
    utt_ids: list[str]
    splits: list[str]
    est_frames: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"index": self.index, "utt_ids": list(self.utt_ids), "splits": list(self.splits),
                "est_frames": [int(x) for x in self.est_frames]}

    @classmethod
    def from_dict(cls, d: dict) -> Part:
        return cls(int(d["index"]), list(d["utt_ids"]), list(d["splits"]), list(d.get("est_frames", [])))

    def identity(self) -> tuple:
        """What must match between runs for a stored part to be reused (estimates may differ)."""
        return (self.index, tuple(self.utt_ids), tuple(self.splits))


def plan_parts(items: list[tuple[str, str, int]], bytes_per_frame: int,
               target_bytes: int = DEFAULT_TARGET_BYTES) -> list[Part]:
    """Group consecutive ``(utt_id, split, est_frames)`` items into parts of ~``target_bytes``.

    ``bytes_per_frame`` = layers * dim * bytes per stored value. A part closes before the item
    that would push it past ``target_bytes`` (a single longer utterance gets a part of its own).
    Pure function of its arguments: every rank and every rerun computes the same plan.
    """
    if bytes_per_frame <= 0:
        raise ValueError(f"bytes_per_frame must be positive, got {bytes_per_frame}")
    seen: set[str] = set()
    parts: list[Part] = []
    cur: Part | None = None
    cur_bytes = 0
    for utt_id, split, est in items:
        if utt_id in seen:
            raise ValueError(f"utterance {utt_id!r} appears twice in the extraction plan")
        seen.add(utt_id)
        nbytes = max(int(est), 1) * bytes_per_frame
        if cur is None or (cur.utt_ids and cur_bytes + nbytes > target_bytes):
            cur = Part(len(parts), [], [], [])
            parts.append(cur)
            cur_bytes = 0
        cur.utt_ids.append(str(utt_id))
        cur.splits.append(str(split))
        cur.est_frames.append(int(est))
        cur_bytes += nbytes
    return parts
