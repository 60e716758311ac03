"""The run directory: what probes, fusions and fine-tuning write, and what evaluate/fuse/report read.

Format ``phonecli-run`` v1::

    RUN/
      run.json                 {"format": "phonecli-run", "version": 1, "kind": ..., "name": ...,
                                "created": ISO time, "phonecli_version": ..., "corpus_id": ...,
                                "data": manifest dir, "vocab": [...], "frame_rate": frames/s,
                                "config": {...resolved options...},
                                "sources": [{"cache"|"run"|"model": ..., "fingerprint": ...}],
                                "selection": {"metric": ..., "value": ..., "epoch": ...}}
      weights.safetensors      the trained parameters (never pickle); absent for late fusion
      posteriors/SPLIT.safetensors
                               "log_probs": float32 (total_frames, vocab) natural-log posteriors
                               "offsets":   int64 (utterances + 1); utterance i is rows
                                            offsets[i]:offsets[i+1]
                               metadata: format, version, split, utt_ids (JSON list),
                                         frame_rate, vocab (JSON list)
      train_log.jsonl          one JSON object per epoch/step (kind-specific keys)
      metrics.json             written by `phonecli evaluate`

``kind`` is one of ``probe``, ``early-fusion``, ``gated-fusion``, ``late-fusion``, ``finetune``.
Vocabulary index 0 is the CTC blank; ``vocab`` is the manifest's (``Manifest.vocab.symbols``;
SpeechOcean762: ``phonecli.data.phones.VOCAB``).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np

from phonecli.errors import RunError  # noqa: F401  (re-exported)

FORMAT = "phonecli-run"
VERSION = 1
POSTERIORS_FORMAT = "phonecli-posteriors"
KINDS = ("probe", "early-fusion", "gated-fusion", "late-fusion", "finetune")


class Run:
    """A run directory on disk. ``info`` is the parsed ``run.json``."""

    def __init__(self, path: str | Path, info: dict):
        self.path = Path(path)
        self.info = info

    # -- creation / opening -------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, kind: str, *, config: dict, corpus_id: str, data: str | Path,
               frame_rate: float, sources: list[dict] | None = None, name: str | None = None,
               overwrite: bool = True, vocab=None) -> "Run":
        from phonecli import __version__
        from phonecli.data.phones import VOCAB
        from phonecli.threads import record as threads_record

        if kind not in KINDS:
            raise RunError(f"unknown run kind {kind!r}; expected one of {', '.join(KINDS)}")
        path = Path(path)
        if (path / "run.json").exists() and not overwrite:
            raise RunError(f"{path}: a run already exists here; choose another --out or remove it")
        path.mkdir(parents=True, exist_ok=True)
        info = {
            "format": FORMAT,
            "version": VERSION,
            "kind": kind,
            "name": name or path.name,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "phonecli_version": __version__,
            "corpus_id": corpus_id,
            "data": str(Path(data).resolve()) if "://" not in str(data) else str(data),
            "vocab": list(vocab) if vocab is not None else list(VOCAB),   # the manifest's (Manifest.vocab)
            "frame_rate": float(frame_rate),
            "config": config,
            "sources": sources or [],
            # probe/fusion results do not depend on it; fine-tuning's CPU backward does (docs/sections/finetune.md)
            "threads": threads_record(),
        }
        run = cls(path, info)
        run.save_info()
        return run

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        path = Path(path)
        f = path / "run.json"
        if not f.exists():
            raise RunError(f"{path}: not a run directory (no run.json); pass a directory written by probe/fuse/finetune")
        try:
            info = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise RunError(f"{f}: malformed run.json ({e})") from e
        if info.get("format") != FORMAT or info.get("version") != VERSION:
            raise RunError(f"{f}: unsupported run format {info.get('format')!r} v{info.get('version')}")
        return cls(path, info)

    def save_info(self) -> None:
        tmp = self.path / "run.json.tmp"
        tmp.write_text(json.dumps(self.info, indent=2, default=str))
        tmp.replace(self.path / "run.json")

    # -- convenience ---------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.info["kind"]

    @property
    def name(self) -> str:
        return self.info.get("name", self.path.name)

    @property
    def frame_rate(self) -> float:
        return float(self.info["frame_rate"])

    @property
    def weights_path(self) -> Path:
        return self.path / "weights.safetensors"

    def manifest(self):
        from phonecli.data.manifest import Manifest

        return Manifest.load(self.info["data"])

    def append_log(self, record: dict) -> None:
        with open(self.path / "train_log.jsonl", "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def read_log(self) -> list[dict]:
        f = self.path / "train_log.jsonl"
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []

    # -- posteriors ------------------------------------------------------------------------
    def posteriors_path(self, split: str) -> Path:
        return self.path / "posteriors" / f"{split}.safetensors"

    def posterior_splits(self) -> list[str]:
        from phonecli.data.manifest import SPLITS

        return [s for s in SPLITS if self.posteriors_path(s).exists()]

    def write_posteriors(self, split: str, log_probs: dict[str, np.ndarray]) -> Path:
        """Write ``{utt_id: (frames, vocab) float log-posteriors}`` for one split (in dict order)."""
        from safetensors.numpy import save_file

        from phonecli.data.phones import VOCAB
        from phonecli.finite import check_posteriors

        vocab = list(self.info.get("vocab") or VOCAB)
        ids = list(log_probs)
        arrays = [np.asarray(log_probs[u], dtype=np.float32) for u in ids]
        for u, a in zip(ids, arrays):
            if a.ndim != 2 or a.shape[1] != len(vocab):
                raise RunError(f"{u}: log-posteriors must be (frames, {len(vocab)}), got {a.shape}")
        check_posteriors(dict(zip(ids, arrays)), file=self.posteriors_path(split), run=self,
                         fix="the stage diverged or read non-finite inputs: lower --lr, check the inputs and re-run it")
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([a.shape[0] for a in arrays])
        flat = np.concatenate(arrays, axis=0) if arrays else np.zeros((0, len(vocab)), np.float32)
        out = self.posteriors_path(split)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        save_file({"log_probs": np.ascontiguousarray(flat), "offsets": offsets}, str(tmp), metadata={
            "format": POSTERIORS_FORMAT, "version": "1", "split": split,
            "utt_ids": json.dumps(ids), "frame_rate": str(self.frame_rate), "vocab": json.dumps(vocab),
        })
        tmp.replace(out)
        return out

    def read_posteriors(self, split: str) -> dict[str, np.ndarray]:
        """``{utt_id: (frames, vocab) float32}`` in the order they were written."""
        from safetensors import safe_open

        f = self.posteriors_path(split)
        if not f.exists():
            raise RunError(f"{self.path}: no {split} posteriors ({f.name} missing); re-run the stage that made this run")
        with safe_open(str(f), framework="numpy") as st:
            meta = st.metadata()
            flat = st.get_tensor("log_probs")
            offsets = st.get_tensor("offsets")
        ids = json.loads(meta["utt_ids"])
        return {u: flat[offsets[i]:offsets[i + 1]] for i, u in enumerate(ids)}
