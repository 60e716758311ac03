"""The run directory: its typed record (run.json), its lifecycle, and what probes, fusions and fine-tuning
write and evaluate/fuse/report read.

Format ``phonecli-run`` v1 (:class:`RunRecord` reads and writes it unchanged; keys it does not know
are kept, in order)::

    RUN/
      run.json                 {"format": "phonecli-run", "version": 1, "kind": ..., "name": ...,
                                "created": ISO time, "phonecli_version": ..., "corpus_id": ...,
                                "data": manifest dir, "vocab": [...], "frame_rate": frames/s,
                                "config": {...asdict of the resolved stage config + derived values...},
                                "sources": [{"cache"|"run"|"model": ..., "fingerprint": ...}],
                                "selection": {"metric": ..., "value": ..., "epoch": ...},
                                "status": "running" | "complete"}
      weights.safetensors      the trained parameters (never pickle); absent for late fusion
      posteriors/SPLIT.safetensors
                               "log_probs": float32 (total_frames, vocab) natural-log posteriors
                               "offsets":   int64 (utterances + 1); utterance i is rows
                                            offsets[i]:offsets[i+1]
                               metadata: format, version, split, utt_ids (JSON list),
                                         frame_rate, vocab (JSON list)
      train_log.jsonl          one JSON object per epoch/step (kind-specific keys)
      checkpoints/             while a probe or fine-tuning runs: LATEST + the newest whole checkpoint
      metrics.json, predictions.jsonl, phone_scores.jsonl
                               derived: written by `phonecli evaluate` (report reads them)

``kind`` is one of ``probe``, ``early-fusion``, ``gated-fusion``, ``late-fusion``, ``finetune``.
Vocabulary index 0 is the CTC blank; ``vocab`` is the manifest's (``Manifest.vocab.symbols``;
SpeechOcean762: ``phonecli.data.phones.VOCAB``). ``status`` is absent in runs
written before it existed (they are complete); a finetune run may say ``"training"`` (= running).

**Lifecycle** (:func:`prepare_run` then :func:`start_run` … :func:`finish_run`; the same for probe,
fusion and fine-tuning):

- a directory that holds a *finished* run is never replaced silently: the stage refuses in one line,
  ``overwrite=True`` (``--overwrite``) replaces it whole (derived files included), ``resume=True``
  (``--resume``) has nothing to do;
- an *interrupted* run (status ``running``) is refused too unless ``--resume`` (continue from the last
  checkpoint; a structural option may not change) or ``--overwrite``;
- whenever a run changes (new, replaced or resumed) the files derived from it (:data:`DERIVED_FILES`)
  and the stage's own outputs are removed before any work, so no metric of an older model survives;
- while it is written the run says ``status: running``; readers (:meth:`Run.open`) refuse it.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from phonecli.errors import RunError, RunNotFoundError
from phonecli.storage import atomic_write, atomic_write_text, os_errors

FORMAT = "phonecli-run"
VERSION = 1
POSTERIORS_FORMAT = "phonecli-posteriors"
KINDS = ("probe", "early-fusion", "gated-fusion", "late-fusion", "finetune")
RUNNING, COMPLETE = "running", "complete"
FAILED = "failed"  # stopped at a non-finite loss/posterior (phonecli.finite.fail_run): results removed
#: files other stages derive from a run (evaluate; report reads them): removed whenever the run changes
DERIVED_FILES = ("metrics.json", "predictions.jsonl", "phone_scores.jsonl")
CHECKPOINTS = "checkpoints"


# -- the record ---------------------------------------------------------------------------------

@dataclass
class RunRecord:
    """``run.json``, typed. ``extra`` keeps every other key (``seconds``, ``experiment``, ``skipped``,
    ``gate``, ``sweep_seconds``, ...) so a v1 file is written back unchanged."""

    kind: str
    name: str
    created: str
    phonecli_version: str
    corpus_id: str
    data: str
    vocab: list[str]
    frame_rate: float
    config: dict = field(default_factory=dict)
    sources: list[dict] = field(default_factory=list)
    selection: dict | None = None
    status: str | None = None
    extra: dict = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION
    _order: list[str] = field(default_factory=list, repr=False, compare=False)

    REQUIRED = ("kind", "corpus_id", "data", "frame_rate")

    @classmethod
    def from_json(cls, d: dict, where: str | Path = "run.json") -> "RunRecord":
        """Parse a run.json mapping; a wrong format/version, kind or missing key is one :class:`RunError`."""
        if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("version") != VERSION:
            got = (d.get("format"), d.get("version")) if isinstance(d, dict) else (type(d).__name__, None)
            raise RunError(f"{where}: unsupported run format {got[0]!r} v{got[1]} (expected {FORMAT} v{VERSION})")
        missing = [k for k in cls.REQUIRED if k not in d]
        if missing:
            raise RunError(f"{where}: run.json lacks {', '.join(missing)}; re-run the stage that made it")
        if d["kind"] not in KINDS:
            raise RunError(f"{where}: unknown run kind {d['kind']!r}; expected one of {', '.join(KINDS)}")
        names = {f.name for f in fields(cls) if f.name not in ("extra", "_order")}
        known = {k: d[k] for k in names if k in d}
        known.setdefault("name", Path(str(where)).parent.name)
        for k, default in (("created", ""), ("phonecli_version", ""), ("vocab", [])):
            known.setdefault(k, default)
        return cls(**known, extra={k: v for k, v in d.items() if k not in names}, _order=list(d))

    def to_json(self) -> dict:
        """The run.json mapping: keys in the order they were read, new keys after them."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "_order")}
        values.update(self.extra)
        optional_none = {"selection", "status"}
        out = {k: values[k] for k in self._order if k in values and not (k in optional_none and values[k] is None)}
        for k, v in values.items():
            if k not in out and not (k in optional_none and v is None):
                out[k] = v
        return out

    @property
    def is_complete(self) -> bool:
        """Finished: status ``complete``, or no status at all (runs written before statuses existed)."""
        return self.status in (None, COMPLETE)


class _InfoView(MutableMapping):
    """``run.info``: the record as the run.json mapping (reads and writes go to the typed fields)."""

    def __init__(self, record: RunRecord):
        self._r = record

    def _fields(self) -> set[str]:
        return {f.name for f in fields(self._r) if f.name not in ("extra", "_order")}

    def __getitem__(self, k):
        return self._r.to_json()[k]

    def __setitem__(self, k, v):
        if k in self._fields():
            setattr(self._r, k, v)
        else:
            self._r.extra[k] = v
        if k not in self._r._order:
            self._r._order.append(k)

    def __delitem__(self, k):
        if k in ("selection", "status"):
            setattr(self._r, k, None)
        elif k in self._r.extra:
            del self._r.extra[k]
        else:
            raise KeyError(k)

    def __iter__(self):
        return iter(self._r.to_json())

    def __len__(self):
        return len(self._r.to_json())


# -- the run directory --------------------------------------------------------------------------

class Run:
    """A run directory on disk: ``path`` and its typed ``record`` (``info``: the same as a mapping)."""

    def __init__(self, path: str | Path, record: RunRecord | dict):
        self.path = Path(path)
        self.record = record if isinstance(record, RunRecord) else RunRecord.from_json(record, self.path / "run.json")

    @property
    def info(self) -> MutableMapping:
        return _InfoView(self.record)

    # -- creation / opening -------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, kind: str, *, config: dict, corpus_id: str, data: str | Path,
               frame_rate: float, sources: list[dict] | None = None, name: str | None = None,
               status: str | None = None, vocab=None) -> "Run":
        """Write a new run.json at ``path`` (low level: stages go through :func:`start_run`)."""
        from phonecli import __version__
        from phonecli.data.phones import VOCAB
        from phonecli.threads import record as threads_record

        if kind not in KINDS:
            raise RunError(f"unknown run kind {kind!r}; expected one of {', '.join(KINDS)}")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        record = RunRecord(
            kind=kind, name=name or path.name,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            phonecli_version=__version__, corpus_id=corpus_id,
            data=str(Path(data).resolve()) if "://" not in str(data) else str(data),
            vocab=list(vocab) if vocab is not None else list(VOCAB),   # the manifest's (Manifest.vocab)
            frame_rate=float(frame_rate), config=config, sources=sources or [], status=status,
            # probe/fusion results do not depend on it; fine-tuning's CPU backward does (docs/sections/finetune.md)
            extra={"threads": threads_record()},
            _order=["format", "version", "kind", "name", "created", "phonecli_version", "corpus_id", "data", "vocab",
                    "frame_rate", "config", "sources", "threads"])
        run = cls(path, record)
        run.save_info()
        return run

    @classmethod
    def open(cls, path: str | Path, *, require_complete: bool = True) -> "Run":
        """Open the run at ``path``. A run still being written or interrupted (status ``running``) is
        refused unless ``require_complete=False`` (the stage that continues it)."""
        path = Path(path)
        f = path / "run.json"
        if not f.exists():
            raise RunNotFoundError(f"{path}: not a run directory (no run.json); pass a directory written by "
                                   "probe/fuse/finetune")
        try:
            info = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise RunError(f"{f}: malformed run.json ({e}); re-run the stage that made it") from e
        run = cls(path, RunRecord.from_json(info, f))
        if require_complete:
            run.require_complete()
        return run

    def require_complete(self) -> "Run":
        if self.record.status == FAILED:
            raise RunError(f"{self.path}: this run failed ({self.record.extra.get('error', 'no reason recorded')}); "
                           "fix the cause and re-run the stage with --resume or --overwrite")
        if not self.record.is_complete:
            raise RunError(f"{self.path}: the run is not complete (status {self.record.status!r}: interrupted or "
                           "still being written); continue it with the same command plus --resume, or pass "
                           "--overwrite to start it again")
        return self

    def save_info(self) -> None:
        atomic_write_text(self.path / "run.json", json.dumps(self.record.to_json(), indent=2, default=str))

    # -- convenience ---------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.record.kind

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def frame_rate(self) -> float:
        return float(self.record.frame_rate)

    @property
    def weights_path(self) -> Path:
        return self.path / "weights.safetensors"

    def manifest(self):
        from phonecli.data.manifest import Manifest

        return Manifest.load(self.record.data)

    def append_log(self, record: dict) -> None:
        with open(self.path / "train_log.jsonl", "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def write_log(self, records: list[dict]) -> None:
        """Replace train_log.jsonl with ``records`` (a resumed run rewrites it from its checkpoint)."""
        atomic_write_text(self.path / "train_log.jsonl", "".join(json.dumps(r, default=float) + "\n" for r in records))

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

        vocab = list(self.record.vocab or VOCAB)
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
        meta = {"format": POSTERIORS_FORMAT, "version": "1", "split": split, "utt_ids": json.dumps(ids),
                "frame_rate": str(self.frame_rate), "vocab": json.dumps(vocab)}
        return atomic_write(out, lambda tmp: save_file({"log_probs": np.ascontiguousarray(flat), "offsets": offsets},
                                                       str(tmp), metadata=meta))

    def read_posteriors(self, split: str) -> dict[str, np.ndarray]:
        """``{utt_id: (frames, vocab) float32}`` in the order they were written.

        A missing, truncated or inconsistent file is one :class:`RunError` naming it.
        """
        from safetensors import SafetensorError, safe_open

        f = self.posteriors_path(split)
        if not f.exists():
            raise RunError(f"{self.path}: no {split} posteriors ({f.name} missing); re-run the stage that made this run")
        try:
            with safe_open(str(f), framework="numpy") as st:
                meta = st.metadata() or {}
                flat = st.get_tensor("log_probs")
                offsets = st.get_tensor("offsets")
            ids = json.loads(meta["utt_ids"])
        except (SafetensorError, KeyError, json.JSONDecodeError) as e:
            raise RunError(f"{f}: unreadable posteriors ({' '.join(str(e).split())}): the file is truncated or "
                           "damaged; re-run the stage that made this run") from e
        ok = (flat.ndim == 2 and offsets.ndim == 1 and len(offsets) == len(ids) + 1 and offsets[0] == 0
              and offsets[-1] == flat.shape[0] and bool(np.all(np.diff(offsets) >= 0)))
        if not ok:
            raise RunError(f"{f}: inconsistent posteriors (log_probs {flat.shape}, {len(offsets)} offsets for "
                           f"{len(ids)} utterances); re-run the stage that made this run")
        return {u: flat[offsets[i]:offsets[i + 1]] for i, u in enumerate(ids)}


# -- the lifecycle ------------------------------------------------------------------------------

@dataclass
class RunStart:
    """What :func:`prepare_run` decided: ``action`` ``new`` (start from scratch), ``resume`` (continue the
    interrupted ``run``) or ``done`` (``run`` is complete and ``--resume`` asked for nothing more)."""

    path: Path
    action: str
    run: Run | None = None
    overwrite: bool = False


def prepare_run(path: str | Path, kinds: tuple[str, ...], *, overwrite: bool = False,
                resume: bool = False) -> RunStart:
    """Decide, before any work, what to do with the run directory ``path`` (see the module docstring).

    ``kinds``: the run kinds this stage makes (a resumed run must be one of them). Refusals are one
    :class:`RunError` line; nothing is deleted here (:func:`start_run` does that once the stage's
    inputs are checked).
    """
    path = Path(path)
    if overwrite and resume:
        raise RunError("--overwrite and --resume exclude each other: replace the run, or continue it")
    if not (path / "run.json").exists():
        if path.exists() and any(path.iterdir()):
            raise RunError(f"{path}: the directory holds files but no run.json, so it is not a run; choose an "
                           "empty or new --out")
        if resume:
            raise RunError(f"{path}: no run to resume here; drop --resume to start one")
        return RunStart(path, "new")
    run = Run.open(path, require_complete=False)
    if overwrite:
        return RunStart(path, "new", run, overwrite=True)
    if run.record.status == FAILED and not resume:
        raise RunError(f"{path}: holds a failed {run.kind} run ({run.record.extra.get('error', 'no reason recorded')}); "
                       "fix the cause, then pass --resume to continue from its last checkpoint (e.g. with a lower "
                       "--lr) or --overwrite to start again")
    if not resume:
        what, hint = (("a finished", "pass --overwrite to replace it (its metrics, predictions and plots go too)")
                      if run.record.is_complete else
                      ("an interrupted", "pass --resume to continue it or --overwrite to start again"))
        raise RunError(f"{path}: holds {what} {run.kind} run; {hint}, or choose another --out")
    if run.kind not in kinds:
        raise RunError(f"{path}: holds a {run.kind} run, which this stage cannot resume; choose another --out")
    return RunStart(path, "done" if run.record.is_complete else "resume", run)


def refuse_structural_change(run: Run, recorded: dict, now: dict, structural: list[str]) -> None:
    """One line when a resumed run would change a structural option (see :mod:`phonecli.config`)."""
    for k in structural:
        if k in recorded and k in now and recorded[k] != now[k]:
            raise RunError(f"{run.path}: --resume with {k}={now[k]!r} but the run was started with {recorded[k]!r}; "
                           "rerun with the original options, or pass --overwrite to start again")


def start_run(start: RunStart, kind: str, *, config: dict, corpus_id: str, data: str | Path, frame_rate: float,
              sources: list[dict], vocab=None, name: str | None = None, outputs: tuple[str, ...] = ()) -> Run:
    """Begin writing the run decided by :func:`prepare_run`: a replaced run is removed whole; the derived
    files and the stage's ``outputs`` of a resumed one go (its checkpoints and log stay); run.json is
    (re)written with ``status: running``."""
    path = start.path
    if start.action == "done":
        raise RunError(f"{path}: the run is complete; nothing to start")
    if start.overwrite:
        _remove_run(path)
    for rel in (*DERIVED_FILES, *outputs):
        _remove(path / rel)
    if start.action == "resume":
        run = start.run
        run.record.config, run.record.sources, run.record.status = config, sources, RUNNING
        run.record.selection = None
        run.record.extra.pop("error", None)   # a failed run continued (phonecli.finite.fail_run's reason)
        run.save_info()
        return run
    for rel in ("train_log.jsonl", CHECKPOINTS):
        _remove(path / rel)
    return Run.create(path, kind, config=config, corpus_id=corpus_id, data=data, frame_rate=frame_rate,
                      sources=sources, name=name, status=RUNNING, vocab=vocab)


def finish_run(run: Run) -> Run:
    """Mark the run complete (its outputs are all written) and drop its checkpoints."""
    run.record.status = COMPLETE
    run.save_info()
    _remove(run.path / CHECKPOINTS)
    return run


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def _remove_run(path: Path) -> None:
    """``--overwrite``: remove a run directory whole; only one that holds a phonecli run.json."""
    Run.open(path, require_complete=False)      # refuses anything that is not a run
    shutil.rmtree(path)
    path.mkdir(parents=True)


# -- checkpoints (probe and fine-tuning resume) -----------------------------------------------

class Checkpoints:
    """``RUN/checkpoints/``: each checkpoint is a directory written whole under a temporary name and then
    renamed; ``LATEST`` names the newest whole one and is replaced atomically last, so a kill, Ctrl-C or
    a full disk at any moment leaves the previous checkpoint usable."""

    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir) / CHECKPOINTS

    def latest(self) -> Path | None:
        pointer = self.root / "LATEST"
        if not pointer.exists():
            return None
        ckpt = self.root / pointer.read_text().strip()
        return ckpt if ckpt.is_dir() else None

    def save(self, name: str, write: Callable[[Path], None]) -> Path:
        """``write(directory)`` fills a fresh checkpoint directory; it becomes ``name`` and LATEST."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.tmp"
        _remove(tmp)
        tmp.mkdir()
        with os_errors(tmp):
            write(tmp)
        final = self.root / name
        _remove(final)
        tmp.rename(final)
        atomic_write_text(self.root / "LATEST", name)   # the pointer moves only once the checkpoint is whole
        for old in self.root.iterdir():
            if old.is_dir() and old != final:
                _remove(old)
        return final

    def clear(self) -> None:
        _remove(self.root)


def save_optimizer(optimizer, path: Path) -> None:
    """An optimizer's ``state_dict`` as safetensors (tensors) + its JSON metadata (hyper-parameters, the
    per-parameter layout): no pickle, and a full disk is an ``OSError`` like any other write."""
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors, layout = {}, {}
    for i, st in sd["state"].items():
        layout[str(i)] = sorted(st)
        for k, v in st.items():
            tensors[f"{i}.{k}"] = v.detach().cpu().contiguous() if hasattr(v, "detach") else _scalar_tensor(v)
    save_file(tensors, str(path), metadata={"param_groups": json.dumps(sd["param_groups"]),
                                             "layout": json.dumps(layout)})


def load_optimizer(optimizer, path: Path, device: str = "cpu") -> None:
    """Restore what :func:`save_optimizer` wrote into ``optimizer`` (tensors moved to ``device`` by torch)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        layout = json.loads(meta["layout"])
        state = {int(i): {k: f.get_tensor(f"{i}.{k}") for k in keys} for i, keys in layout.items()}
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})


def _scalar_tensor(v):
    import torch

    return torch.tensor(v)
