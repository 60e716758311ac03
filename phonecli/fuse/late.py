"""Late fusion: combine the saved log-posteriors of 2+ runs, sweep the weights on dev, write a run.

No encoder and no probe is touched: the inputs are ``posteriors/SPLIT.safetensors`` of finished
runs (probe, early/gated fusion, fine-tuning, or another late fusion).

Rules, for weights ``a_i >= 0`` with ``sum(a_i) = 1`` and per-frame log-posteriors ``logp_i``
of shape ``(frames, vocab)``:

- ``log-linear`` (product of experts): ``log_softmax(sum_i a_i * logp_i)`` over the vocabulary.
- ``linear`` (mixture): ``log(sum_i a_i * exp(logp_i))``, computed as
  ``logsumexp_i(log a_i + logp_i)``; renormalised too, so float rounding never leaves a row
  that does not sum to one.

Terms with ``a_i = 0`` are dropped, never multiplied: ``0 * (-inf)`` is NaN in IEEE floats and
a run may legitimately put ``-inf`` on a phone. A weight vector with all its mass on one run
returns that run's posteriors unchanged (renormalising already-normalised rows would only add
float rounding), so ``alpha = 1`` / ``alpha = 0`` reproduce the input runs' metrics exactly.

Frame rates: runs at different rates are brought to the fastest one by repeating each frame of
the slower run ``k = fast / slow`` times (``align="repeat"``, the same rule as early fusion);
the rates must be integer multiples of each other and, after repetition, the frame counts of
one utterance must agree within one frame of the slowest run (conv edge rules differ), then
all are trimmed to the shortest. ``align="refuse"`` refuses any rate mismatch instead.

Selection: every weight vector of the grid is scored on DEV in parallel (joblib); the one with
the best dev metric (default: dev PER over all dev utterances, with the corpus' scoring rule:
TIMIT folded 48 -> 39, L2-ARCTIC against the perceived phones, as ``evaluate`` reports it; ties ->
lower dev CTC loss of the canonical phones, then the grid order) is used for every split. Test
metrics of every grid point go to ``sweep.csv`` for the record, in columns labelled as not used
for selection.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from phonecli import ctc
from phonecli.config import FUSION_ALIGN, FUSION_RULES, LateFusionConfig
from phonecli.finite import check_posteriors, refuse_failed
from phonecli.runs import Run, RunError, finish_run, prepare_run, refuse_structural_change, start_run
from phonecli.storage import atomic_write, check_free_space
from phonecli.errors import DataError, FusionError  # noqa: F401  (re-exported)

log = logging.getLogger("phonecli.fuse")

RULES, ALIGN = FUSION_RULES, FUSION_ALIGN
DEFAULT_ALPHAS = LateFusionConfig.alpha_grid
#: rows whose logsumexp is further than this from 0 are not log-posteriors
NORMALISATION_TOLERANCE = 1e-3
SWEEP_CSV = "sweep.csv"
SWEEP_PNG = "sweep.png"
TEST_LABEL = "(not used for selection)"
#: auto ``n_jobs``: one worker per this many (grid points x dev+test frames)
MIN_FRAMES_PER_WORKER = 2_000_000

# name -> (key in seed_protocol.score output, higher is better)
SELECT_METRICS = {
    "per": ("per_all", False),
    "per_hq": ("per_hq", False),
    "auc": ("auc", True),
    "pearson": ("pearson", True),
    "spearman": ("spearman", True),
    "f1": ("f1", True),
    "ctc_loss": ("ctc_loss", False),
}
REPORTED = ("per_all", "per_hq", "pearson", "spearman", "auc", "f1", "ctc_loss")


# ---------------------------------------------------------------------------------------------
# the weight grid


def _number(text: str, spec: str) -> Fraction:
    try:
        # Fractions keep 0:1:0.1 exact: 0.1 * 3 is 0.30000000000000004 in floats
        return Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise FusionError(f"--alphas {spec!r}: {text.strip()!r} is not a number; use e.g. 0.3,0.5,0.7 or 0:1:0.1")


def parse_values(spec: str) -> list[Fraction]:
    """``"0.3,0.5,0.7"`` or ``"START:STOP:STEP"`` (STOP included) -> sorted distinct values in [0, 1]."""
    spec = str(spec).strip()
    if not spec:
        raise FusionError("--alphas is empty; use e.g. 0.3,0.5,0.7 or 0:1:0.1")
    if ":" in spec:
        parts = spec.split(":")
        if len(parts) != 3:
            raise FusionError(f"--alphas {spec!r}: a range is START:STOP:STEP (STOP included), e.g. 0:1:0.1")
        start, stop, step = (_number(p, spec) for p in parts)
        if step <= 0:
            raise FusionError(f"--alphas {spec!r}: STEP must be > 0")
        if stop < start:
            raise FusionError(f"--alphas {spec!r}: STOP must be >= START")
        n = int((stop - start) / step)
        values = [start + i * step for i in range(n + 1)]
    else:
        values = [_number(p, spec) for p in spec.split(",") if p.strip()]
    bad = [v for v in values if not 0 <= v <= 1]
    if bad:
        raise FusionError(f"--alphas {spec!r}: weights must lie in [0, 1] (got {float(bad[0]):g})")
    return sorted(set(values))


def weight_grid(spec: str | Sequence[float] | None, n_runs: int) -> list[tuple[float, ...]]:
    """The weight vectors to sweep, each of length ``n_runs`` summing to 1.

    Two runs: each value ``a`` gives ``(a, 1 - a)`` (alpha = weight of the first run). Three or
    more: every vector whose weights all come from the values and sum to 1 (a simplex grid;
    ``0:1:0.1`` over 3 runs gives 66 points). ``spec`` may also be a list of numbers.
    """
    if n_runs < 2:
        raise FusionError(f"late fusion needs at least 2 runs, got {n_runs}")
    if spec is None:
        spec = DEFAULT_ALPHAS
    if isinstance(spec, str):
        values = parse_values(spec)
    else:
        values = sorted({Fraction(str(float(v))) for v in spec})
        if any(not 0 <= v <= 1 for v in values):
            raise FusionError(f"alphas {list(spec)}: weights must lie in [0, 1]")
        if not values:
            raise FusionError("alphas: empty list")
    if n_runs == 2:
        return [(float(a), float(1 - a)) for a in values]
    grid: list[tuple[Fraction, ...]] = []

    def extend(prefix: tuple[Fraction, ...], left: Fraction) -> None:
        if len(prefix) == n_runs - 1:
            if left in values_set:
                grid.append(prefix + (left,))
            return
        for v in values:
            if v <= left:
                extend(prefix + (v,), left - v)

    values_set = set(values)
    extend((), Fraction(1))
    if not grid:
        raise FusionError(f"--alphas {spec!r}: no weight vector over {n_runs} runs uses only these values and "
                          f"sums to 1; use a step that divides 1, e.g. 0:1:0.1")
    grid.sort(key=lambda w: tuple(-x for x in w))
    return [tuple(float(x) for x in w) for w in grid]


# ---------------------------------------------------------------------------------------------
# the fusion rule


def fuse_logprobs(logps: Sequence[np.ndarray], weights: Sequence[float], rule: str = "log-linear") -> np.ndarray:
    """Fuse aligned ``(frames, vocab)`` log-posteriors with ``weights`` -> ``(frames, vocab)`` float32.

    Computed in float64. Zero weights are skipped (``0 * -inf`` would be NaN); a one-hot weight
    vector returns that input unchanged.
    """
    if rule not in RULES:
        raise FusionError(f"--rule {rule!r}: choose {' or '.join(RULES)}")
    if len(logps) != len(weights):
        raise FusionError(f"{len(logps)} posteriors but {len(weights)} weights")
    active = [(float(w), lp) for w, lp in zip(weights, logps) if w > 0]
    if not active:
        raise FusionError(f"weights {list(weights)} are all zero")
    if len(active) == 1:
        return np.asarray(active[0][1], dtype=np.float32)
    from scipy.special import logsumexp

    if rule == "log-linear":
        s = sum(w * lp.astype(np.float64) for w, lp in active)
    else:
        s = logsumexp(np.stack([math.log(w) + lp.astype(np.float64) for w, lp in active]), axis=0)
    with np.errstate(invalid="ignore"):
        z = logsumexp(s, axis=-1, keepdims=True)
        out = s - z
    if not np.isfinite(z).all():
        row = int(np.flatnonzero(~np.isfinite(z[:, 0]))[0])
        raise FusionError(f"frame {row}: every phone has probability 0 under the weighted inputs; "
                          f"the inputs' posteriors are degenerate there (check the runs with `phonecli evaluate`)")
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# loading and aligning the inputs


@dataclass
class SplitData:
    """One split's aligned inputs: per run a flat ``(total_frames, vocab)`` float32 array."""

    utt_ids: list[str]
    offsets: np.ndarray          # int64 (utterances + 1,)
    flats: list[np.ndarray]      # per run

    def per_utt(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {u: flat[self.offsets[i]:self.offsets[i + 1]] for i, u in enumerate(self.utt_ids)}


def _open_runs(runs) -> list[Run]:
    out = []
    for r in runs:
        if isinstance(r, Run):
            out.append(r)
            continue
        try:
            out.append(Run.open(r))
        except RunError as e:
            raise FusionError(str(e)) from e
        refuse_failed(out[-1], FusionError)
    return out


def check_compatible(runs: list[Run], align: str = "repeat") -> tuple[float, list[int]]:
    """Same corpus, vocab and integer-multiple frame rates -> ``(fused frames/s, repeat factor per run)``."""
    first = runs[0]
    for r in runs[1:]:
        if r.info.get("corpus_id") != first.info.get("corpus_id"):
            raise FusionError(f"{r.path}: corpus_id {r.info.get('corpus_id')} differs from {first.path} "
                              f"({first.info.get('corpus_id')}); fuse only runs made from the same prepared corpus")
        if list(r.info.get("vocab") or []) != list(first.info.get("vocab") or []):
            raise FusionError(f"{r.path}: its vocabulary differs from {first.path}'s; posteriors of different "
                              f"phone sets cannot be combined")
    paths = [r.path.resolve() for r in runs]
    if len(set(paths)) != len(paths):
        raise FusionError(f"{runs[0].path}: the same run is given twice; pass distinct runs")
    rates = [r.frame_rate for r in runs]
    if align not in ALIGN:
        raise FusionError(f"--align {align!r}: choose {' or '.join(ALIGN)}")
    fast = max(rates)
    factors = []
    for r, rate in zip(runs, rates):
        if align == "refuse" and rate != fast:
            raise FusionError(f"{r.path}: {rate:g} frames/s but {runs[rates.index(fast)].path} has {fast:g}; "
                              f"pass --align repeat to repeat the slower run's frames, or fuse runs of one rate")
        k = fast / rate
        if abs(k - round(k)) > 1e-6:
            raise FusionError(f"{r.path}: {rate:g} frames/s is not an integer fraction of {fast:g} frames/s; "
                              f"late fusion aligns rates by repeating frames (100/50/25/12.5 fps)")
        factors.append(int(round(k)))
    return fast, factors


def load_split(runs: list[Run], split: str, factors: list[int]) -> SplitData:
    """Read and align ``split`` of every run (refusing different utterance sets or frame counts)."""
    from scipy.special import logsumexp

    posts = []
    for r in runs:
        try:
            p = r.read_posteriors(split)
        except RunError as e:        # missing, truncated or inconsistent: one line naming the file
            raise FusionError(str(e)) from e
        check_posteriors(p, file=r.posteriors_path(split), error=FusionError,
                         fix=f"the stage that made {r.path} diverged; re-run it (e.g. with a lower --lr)")
        posts.append(p)
    ids = list(posts[0])
    for r, p in zip(runs[1:], posts[1:]):
        if set(p) != set(ids):
            only_a, only_b = sorted(set(ids) - set(p)), sorted(set(p) - set(ids))
            ex = (only_a or only_b)[0]
            raise FusionError(
                f"{r.path}: its {split} utterances differ from {runs[0].path}'s ({len(only_a)} only in the first, "
                f"{len(only_b)} only in this one, e.g. {ex}); fuse runs made from the same manifest and splits")
    tol = max(factors)
    lengths = np.zeros(len(ids), dtype=np.int64)
    aligned: list[list[np.ndarray]] = [[] for _ in runs]
    for i, u in enumerate(ids):
        arrs = []
        for r, p, k in zip(runs, posts, factors):
            lp = p[u]
            arrs.append(np.repeat(lp, k, axis=0) if k > 1 else lp)
        lens = [a.shape[0] for a in arrs]
        if max(lens) - min(lens) > tol:
            detail = ", ".join(f"{r.path.name}: {p[u].shape[0]} @ {r.frame_rate:g} fps" for r, p in zip(runs, posts))
            raise FusionError(f"utterance {u} ({split}): frame counts disagree after alignment ({detail}); "
                              f"these runs were not computed from the same audio")
        n = min(lens)
        lengths[i] = n
        for j, a in enumerate(arrs):
            aligned[j].append(a[:n])
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    vocab = posts[0][ids[0]].shape[1] if ids else 0
    flats = [np.concatenate(a, axis=0) if a else np.zeros((0, vocab), np.float32) for a in aligned]
    for r, flat in zip(runs, flats):
        if len(flat):
            with np.errstate(invalid="ignore"):
                dev = float(np.nanmax(np.abs(logsumexp(flat.astype(np.float64), axis=1))))
            if not dev <= NORMALISATION_TOLERANCE:
                raise FusionError(f"{r.posteriors_path(split)}: rows are not log-posteriors (max |logsumexp| = "
                                  f"{dev:.3g}); the stage that made {r.path} must write log_softmax outputs")
    return SplitData(ids, offsets, flats)


# ---------------------------------------------------------------------------------------------
# scoring one weight vector


def _ctc_loss(per_utt: dict[str, np.ndarray], targets: dict[str, list[int]]) -> float:
    """Mean over the dev utterances with a finite loss of CTC loss / target length (:mod:`phonecli.ctc`)."""
    losses = [ctc.posterior_ctc_loss(lp, targets.get(u) or []) for u, lp in per_utt.items()]
    losses = [x for x in losses if x is not None]
    return float(np.mean(losses)) if losses else float("nan")


def selection_references(manifest) -> tuple[dict[str, dict], object]:
    """What the sweep scores against, per dev/test utterance, and the folding applied to both sides:
    the corpus' own PER rule where it has the ``per`` protocol (reference = perceived phones where
    annotated, else canonical; both folded with the scoring map, e.g. TIMIT 48 -> 39), so that the
    selected weights minimise the PER ``evaluate`` reports; SpeechOcean762: canonical phones, unfolded
    (the seed protocol's rule). Returns ``(refs, fold)`` with ``fold`` None where nothing is folded."""
    from phonecli.evaluate.protocols import reference_phones

    spec = manifest.corpus
    per_protocol = "per" in spec.protocols
    fold = spec.fold if per_protocol and spec.scoring_map else None
    refs = {}
    for s in ("dev", "test"):
        for u in manifest.split(s):
            ref = reference_phones(u) if per_protocol else u.canonical_phones
            refs[u.utt_id] = {"speaker": u.speaker, "ref": fold(ref) if fold else list(ref), "accuracy": u.accuracy,
                              "vocab": manifest.vocab.symbols}
    return refs, fold


def _utt_table(per_utt: dict[str, np.ndarray], refs: dict[str, dict], fold=None):
    from phonecli.evaluate.seed_protocol import UttTable

    rows = []
    for u, lp in per_utt.items():
        if u in refs:
            hyp = ctc.greedy_phones(lp, refs[u]["vocab"])
            rows.append({"utt_id": u, "speaker": refs[u]["speaker"], "hyp": fold(hyp) if fold else hyp,
                         "ref": refs[u]["ref"], "accuracy": refs[u]["accuracy"]})
    return UttTable.build(rows)


def score_point(weights: tuple[float, ...], rule: str, dev: SplitData, test: SplitData | None,
                refs: dict[str, dict], targets: dict[str, list[int]], fold=None) -> dict:
    """Seed-protocol metrics of one weight vector: dev (with its own threshold) and test at that threshold.
    ``refs``/``fold``: :func:`selection_references` (PER with the corpus' scoring rule)."""
    from phonecli.evaluate import seed_protocol

    out: dict = {"weights": list(weights)}
    dev_post = dev.per_utt(fuse_logprobs(dev.flats, weights, rule))
    dev_t = _utt_table(dev_post, refs, fold)
    fitted = seed_protocol.fit(dev_t)
    d = seed_protocol.score(dev_t, fitted, oracle=False)
    d["ctc_loss"] = _ctc_loss(dev_post, targets)
    out["dev"] = {k: d.get(k) for k in REPORTED}
    if test is not None:
        test_post = test.per_utt(fuse_logprobs(test.flats, weights, rule))
        t = seed_protocol.score(_utt_table(test_post, refs, fold), fitted, oracle=False)
        out["test"] = {k: t.get(k) for k in REPORTED if k != "ctc_loss"}
    return out


def select(points: list[dict], metric: str) -> int:
    """Index of the best point on dev ``metric``; ties -> lower dev CTC loss, then grid order."""
    key, higher = SELECT_METRICS[metric]

    def rank(i: int):
        v = points[i]["dev"].get(key)
        v = float("nan") if v is None else float(v)
        bad = not math.isfinite(v)
        primary = (-v if higher else v) if not bad else math.inf
        loss = points[i]["dev"].get("ctc_loss")
        loss = math.inf if loss is None or not math.isfinite(loss) else loss
        return (bad, round(primary, 9), loss, i)

    best = min(range(len(points)), key=rank)
    if rank(best)[0]:
        raise FusionError(f"dev {metric} is undefined for every weight (e.g. AUC needs a positive and a negative "
                          f"dev utterance); choose another --select-on, e.g. per")
    return best


# ---------------------------------------------------------------------------------------------
# the whole thing


def _fingerprint(run: Run) -> str:
    h = hashlib.sha256((run.path / "run.json").read_bytes())
    for s in run.posterior_splits():
        st = run.posteriors_path(s).stat()
        h.update(f"{s}:{st.st_size}".encode())
    return "sha256:" + h.hexdigest()[:16]


def fuse_late(runs: Sequence[str | Path | Run], out: str | Path, config: LateFusionConfig | None = None, *,
              overwrite: bool = False, resume: bool = False, n_jobs: int = -1, plot: bool = True,
              name: str | None = None, progress: bool | None = None, **overrides) -> Run:
    """Fuse the log-posteriors of ``runs`` and write a ``late-fusion`` run at ``out``.

    Args:
        runs: 2+ finished run directories (or :class:`~phonecli.runs.Run`) of one corpus, each with
            ``posteriors/{dev,test}.safetensors`` (float32 ``(frames, 40)`` log-posteriors).
        out: the run directory to write.
        config: a :class:`~phonecli.config.LateFusionConfig`; ``overrides`` are keyword options on top
            of it. ``alpha_grid`` (``--alphas``): ``"0.3,0.5,0.7"``, ``"START:STOP:STEP"`` (inclusive) or
            a list of numbers, alpha = weight of the first run (3+ runs: a simplex grid, see
            :func:`weight_grid`); ``rule``: ``log-linear`` or ``linear``; ``select_on``: the dev metric
            that picks the weights (``dev-per`` = dev PER over all dev utterances, ``dev-per-hq``,
            ``dev-auc``, ``dev-pearson``, ``dev-spearman``, ``dev-f1``, ``dev-ctc-loss``); ``align``:
            ``repeat`` (bring slower runs to the fastest rate) or ``refuse``.
        overwrite: replace a run already at ``out``; without it a finished run there is refused.
        resume: finish an interrupted fusion (it is recomputed: a sweep takes seconds); a complete one is
            returned as it is.
        n_jobs: joblib worker processes for the sweep; -1 = one per core, but no more than one per
            ``MIN_FRAMES_PER_WORKER`` frames of work (serial on tiny corpora). plot: write sweep.png.

    Returns:
        The :class:`~phonecli.runs.Run`: ``posteriors/{dev,test}.safetensors`` (and ``train`` when every
        input has it) at the chosen weights and the fastest input frame rate, ``sweep.csv`` (every grid
        point: dev metrics, and test metrics labelled as not used for selection) and ``sweep.png``.
    """
    from joblib import Parallel, delayed

    cfg = LateFusionConfig.build(config, **overrides)
    rule, align, alphas, metric = cfg.rule, cfg.align, cfg.alpha_grid, cfg.metric
    t0 = time.time()
    runs = _open_runs(runs)
    grid = weight_grid(alphas, len(runs))
    out = Path(out)
    if any(out.resolve() == r.path.resolve() for r in runs):
        raise FusionError(f"--out {out}: is one of the input runs; choose a new directory")
    start = prepare_run(out, ("late-fusion",), overwrite=overwrite, resume=resume)
    if start.action == "done":
        log.info("%s: the run is complete; nothing to resume", out)
        return start.run
    fast, factors = check_compatible(runs, align)
    for r in runs:
        for s in ("dev", "test"):
            if not r.posteriors_path(s).exists():
                raise FusionError(f"{r.path}: no {s} posteriors (posteriors/{s}.safetensors); late fusion needs "
                                  f"dev and test posteriors of every run")
    for r, k in zip(runs, factors):
        if k > 1:
            log.info("%s: %g fps, each frame repeated %dx to %g fps", r.path, r.frame_rate, k, fast)
    try:
        manifest = runs[0].manifest()
    except DataError as e:
        raise FusionError(f"{runs[0].path}/run.json points at data {runs[0].info.get('data')!r}: {e}") from e
    if manifest.corpus_id != runs[0].info.get("corpus_id"):
        raise FusionError(f"{runs[0].path}: run.json corpus {runs[0].info.get('corpus_id')} but its data dir "
                          f"{runs[0].info.get('data')} holds {manifest.corpus_id}; fix run.json 'data'")
    data = {s: load_split(runs, s, factors) for s in ("dev", "test")}
    for s, sd in data.items():
        missing = [u for u in sd.utt_ids if u not in manifest]
        if missing:
            raise FusionError(f"utterance {missing[0]} of the {s} posteriors is not in the manifest "
                              f"{runs[0].info.get('data')}; the runs were made from another corpus")
    refs, fold = selection_references(manifest)
    dev_ids = set(data["dev"].utt_ids)
    targets = {u.utt_id: manifest.vocab.encode(u.canonical_phones) for u in manifest.split("dev") if u.utt_id in dev_ids}

    # ---- the sweep: every grid point on dev (and test, reported only) in parallel ----
    show = sys.stderr.isatty() if progress is None else progress
    if n_jobs in (-1, None):
        # worker start-up (a process importing numpy/scipy/torch) costs ~1-2 s: only worth it for big sweeps
        work = len(grid) * sum(len(sd.flats[0]) for sd in data.values())
        jobs = max(1, min(len(grid), _cpu_count(), work // MIN_FRAMES_PER_WORKER))
    else:
        jobs = max(1, min(len(grid), n_jobs))
    log.info("sweeping %d weight vectors (%s) on %d dev utterances with %d worker(s)", len(grid), rule,
             len(data["dev"].utt_ids), jobs)
    t_sweep = time.time()
    points = Parallel(n_jobs=jobs, verbose=0, prefer="processes" if jobs > 1 else None)(
        delayed(score_point)(w, rule, data["dev"], data["test"], refs, targets, fold) for w in _progress(grid, show))
    sweep_seconds = time.time() - t_sweep
    best = select(points, metric)
    weights = tuple(points[best]["weights"])
    for i, p in enumerate(points):
        p["selected"] = i == best

    # ---- write the run (train is checked before anything is written) ----
    train = load_split(runs, "train", factors) if all(r.posteriors_path("train").exists() for r in runs) else None
    key = SELECT_METRICS[metric][0]
    config = {**cfg.to_dict(), "alpha": weights[0], "weights": list(weights), "grid_size": len(grid),
              "frame_rate_factors": factors, "runs": [str(r.path) for r in runs]}
    sources = [{"run": str(r.path.resolve()), "name": r.name, "kind": r.kind, "frame_rate": r.frame_rate,
                "repeat": k, "weight": w, "fingerprint": _fingerprint(r)} for r, k, w in zip(runs, factors, weights)]
    if start.action == "resume":
        refuse_structural_change(start.run, start.run.record.config, config, LateFusionConfig.structural_fields())
    frames = sum(len(sd.flats[0]) for sd in [*data.values(), *([train] if train is not None else [])])
    check_free_space(out, frames * len(runs[0].record.vocab) * 4 + 2**20, "the late-fusion run (posteriors)")
    run = start_run(start, "late-fusion", config=config, corpus_id=runs[0].record.corpus_id, data=runs[0].record.data,
                    frame_rate=fast, sources=sources, vocab=runs[0].record.vocab, name=name,
                    outputs=("posteriors", SWEEP_CSV, SWEEP_PNG))
    for s, sd in data.items():
        run.write_posteriors(s, sd.per_utt(fuse_logprobs(sd.flats, weights, rule)))
    if train is not None:
        run.write_posteriors("train", train.per_utt(fuse_logprobs(train.flats, weights, rule)))
    run.record.selection = {"metric": f"dev_{metric}", "value": points[best]["dev"][key], "weights": list(weights),
                             "alpha": weights[0], "dev_ctc_loss": points[best]["dev"]["ctc_loss"],
                             "chosen_on": "dev", "scored_on": manifest.corpus.scored_on,
                             "reference": "perceived where annotated" if "per" in manifest.corpus.protocols
                             else "canonical"}
    run.info["seconds"] = round(time.time() - t0, 3)
    run.info["sweep_seconds"] = round(sweep_seconds, 3)
    run.info["sweep_workers"] = jobs
    write_sweep_csv(run.path / SWEEP_CSV, points, runs)
    if plot:
        plot_sweep(run.path / SWEEP_PNG, points, runs, metric)
    finish_run(run)
    log.info("chose weights %s on dev %s = %.4g; run written to %s", _fmt_w(weights), metric,
             points[best]["dev"][key], run.path)
    return run


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _progress(grid, show: bool):
    from tqdm.auto import tqdm

    return tqdm(grid, desc="late-fusion sweep", unit="weights", disable=not show, leave=False)


def _fmt_w(w) -> str:
    return "(" + ", ".join(f"{x:.3g}" for x in w) + ")"


def sweep_columns(runs: list[Run]) -> tuple[list[str], list[str], list[str]]:
    names = []
    for r in runs:
        n, k = f"w_{r.name}", 2
        while n in names:
            n, k = f"w_{r.name}_{k}", k + 1
        names.append(n)
    dev_cols = [f"dev_{k}" for k in REPORTED]
    test_cols = [f"test_{k} {TEST_LABEL}" for k in REPORTED if k != "ctc_loss"]
    return names, dev_cols, test_cols


def write_sweep_csv(path: Path, points: list[dict], runs: list[Run]) -> None:
    """One row per weight vector: weights, dev metrics, selected flag, test metrics (not used for selection)."""
    wcols, dev_cols, test_cols = sweep_columns(runs)
    header = ["alpha", *wcols, *dev_cols, "selected", *test_cols]

    def f(v):
        return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.12g}"

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for p in points:
                test = p.get("test", {})
                w.writerow([f(p["weights"][0]), *(f(x) for x in p["weights"]),
                            *(f(p["dev"].get(k)) for k in REPORTED), "yes" if p["selected"] else "",
                            *(f(test.get(k)) for k in REPORTED if k != "ctc_loss")])

    atomic_write(path, write)


def read_sweep_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def plot_sweep(path: Path, points: list[dict], runs: list[Run], metric: str) -> None:
    """Dev metric (selection) and test metric (reported only) against the weight of the first run.

    Two runs: x = alpha. Three or more: x = grid index, weights listed in sweep.csv.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, _ = SELECT_METRICS[metric]
    two = len(runs) == 2
    x = [p["weights"][0] for p in points] if two else list(range(len(points)))
    dev = [np.nan if p["dev"].get(key) is None else p["dev"][key] for p in points]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(x, dev, "o-", label=f"dev {metric} (selects)")
    if key != "ctc_loss" and all("test" in p for p in points):
        test = [np.nan if p["test"].get(key) is None else p["test"][key] for p in points]
        ax.plot(x, test, "s--", alpha=0.7, label=f"test {metric} (not used for selection)")
    best = next(i for i, p in enumerate(points) if p["selected"])
    ax.axvline(x[best], color="grey", lw=0.8, ls=":", label=f"chosen {_fmt_w(points[best]['weights'])}")
    ax.set_xlabel(f"alpha = weight of {runs[0].name}" if two else "grid point (weights in sweep.csv)")
    ax.set_ylabel(metric)
    ax.set_title(f"late fusion: {' + '.join(r.name for r in runs)}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
