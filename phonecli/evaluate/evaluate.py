"""``evaluate_run``: both protocols on a run directory -> metrics.json, predictions.jsonl, phone_scores.jsonl.

Files written into RUN (JSON: NaN/undefined values are ``null``):

- ``metrics.json``: ``{"format": "phonecli-metrics", "version": 1, "run", "benchmark": {...},
  "corpus": {...}, "seed": {...}, "phone": {...} | "per": {...}, "mdd": {...}, "bootstrap": {...},
  "counts": {...}}``; see the protocol modules for the definitions. The protocols that apply come
  from the manifest (``corpus.protocols``; :mod:`.protocols`). The seed and phone blocks also hold
  ``floors`` (what predictors that see no audio score, :mod:`phonecli.evaluate.floors`) and
  ``margins`` (each headline number's margin over its floor). ``corpus`` names what the numbers
  were computed on (:func:`~phonecli.evaluate.describe.corpus_summary`). Evaluating one protocol
  keeps the other's block from an earlier evaluation.
- ``predictions.jsonl``: one line per dev/test utterance with posteriors:
  ``{"utt_id", "split", "speaker", "hyp": [phones], "ref": [phones], "accuracy"}``.
- ``phone_scores.jsonl``: one line per canonical phone of dev/test:
  ``{"utt_id", "split", "index", "phone", "human", "gop", "score"}``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np

from phonecli.evaluate import floors, phone_protocol, protocols, seed_protocol
from phonecli.evaluate.bootstrap import speaker_bootstrap
from phonecli import ctc
from phonecli.config import EvaluateConfig
from phonecli.data.corpus import PROTOCOLS as CORPUS_PROTOCOLS
from phonecli.evaluate.describe import corpus_summary
from phonecli.errors import DataError, EvaluateError  # noqa: F401  (re-exported)
from phonecli.finite import check_posteriors, refuse_failed
from phonecli.storage import atomic_write_text

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
PHONE_SCORES_FILE = "phone_scores.jsonl"
log = logging.getLogger("phonecli.evaluate")
LOG_FLOOR = -100.0   # natural log; e**-100 is 0 for every practical purpose


def clean(obj):
    """JSON-safe copy: numpy scalars -> Python, NaN/inf -> None."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def _write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(clean(obj), indent=2))


def _write_jsonl(path: Path, rows) -> None:
    atomic_write_text(path, "".join(json.dumps(clean(r)) + "\n" for r in rows))


def _load(run_dir):
    from phonecli.runs import Run, RunError

    try:
        run = Run.open(run_dir)
    except RunError as e:
        raise EvaluateError(str(e)) from e
    refuse_failed(run, EvaluateError)
    try:
        manifest = run.manifest()
    except DataError as e:
        raise EvaluateError(f"{run.path}/run.json points at data {run.info.get('data')!r}: {e}") from e
    from phonecli.data.phones import VOCAB

    vocab = list(manifest.vocab.symbols)
    # a run.json without "vocab" predates other corpora: it was made with SpeechOcean762's VOCAB
    if (run.info.get("vocab") or list(VOCAB)) != vocab:
        raise EvaluateError(f"{run.path}/run.json: vocabulary differs from the {len(vocab)}-symbol vocabulary of "
                            f"{run.info.get('data')} (blank + its phone_set in order); re-map the posteriors first")
    want = run.info.get("corpus_id")
    if want and manifest.corpus_id != want:
        raise EvaluateError(
            f"{run.path}: run was trained on corpus {want} but {run.info['data']} holds corpus "
            f"{manifest.corpus_id}; point run.json 'data' at the manifest the run was made from")
    return run, manifest


def _posteriors(run, manifest, split: str, required: bool) -> dict[str, np.ndarray] | None:
    from phonecli.runs import RunError

    n_vocab = len(manifest.vocab)
    if not run.posteriors_path(split).exists():
        if required:
            raise EvaluateError(
                f"{run.path}: no {split} posteriors (posteriors/{split}.safetensors); "
                f"evaluation needs dev and test posteriors: re-run the probe/fuse/finetune stage")
        return None
    try:
        post = run.read_posteriors(split)
    except RunError as e:        # missing, truncated or inconsistent: one line naming the file
        raise EvaluateError(str(e)) from e
    for u, lp in post.items():
        if u not in manifest:
            raise EvaluateError(f"{run.posteriors_path(split)}: utterance {u} is not in the manifest "
                                f"{run.info['data']}; the run was made from another corpus")
        if manifest[u].split != split:
            raise EvaluateError(f"{run.posteriors_path(split)}: utterance {u} is in split "
                                f"{manifest[u].split!r} of the manifest, not {split!r}")
        if lp.ndim != 2 or lp.shape[1] != n_vocab:
            raise EvaluateError(f"{run.posteriors_path(split)}: utterance {u} has posteriors of shape "
                                f"{lp.shape}, expected (frames, {n_vocab})")
    check_posteriors(post, file=run.posteriors_path(split), error=EvaluateError,
                     fix=f"the stage that made {run.path} diverged; re-run it (e.g. with a lower --lr)")
    # log(0) = -inf is legal in a posterior but would make GOP means -inf: floor at LOG_FLOOR
    return {u: np.maximum(lp, LOG_FLOOR) for u, lp in post.items()}


def _predictions(manifest, split: str, post: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for u in manifest.split(split):
        if u.utt_id in post:
            rows.append({"utt_id": u.utt_id, "split": split, "speaker": u.speaker,
                         "hyp": ctc.greedy_phones(post[u.utt_id], manifest.vocab.symbols), "ref": u.canonical_phones,
                         "accuracy": u.accuracy})
    return rows


def evaluate_run(run_dir, config: EvaluateConfig | None = None, *, progress: bool | None = None,
                 **overrides) -> dict:
    """Evaluate the run at ``run_dir``; write and return its metrics (see module docstring).

    Args:
        run_dir: a finished run (directory or :class:`~phonecli.runs.Run`) with
            ``posteriors/{dev,test}.safetensors`` (float32 ``(frames, vocab)`` log-posteriors per utterance;
            ``train`` too for the phone protocol's regressor).
        config: an :class:`~phonecli.config.EvaluateConfig`; ``overrides`` on top of it. ``protocol``:
            ``"all"`` (every protocol of the run's corpus), ``"seed"``, ``"phone"``, ``"per"`` or ``"mdd"``; ``ci``: add ``*_ci95`` speaker-bootstrap intervals
            (``n_bootstrap`` replicates, RNG ``seed``). Thresholds and the regressor are fit on train/dev
            only; test labels enter the final scoring only.
        progress: tqdm bars (default: when stderr is a terminal).

    Returns:
        The metrics dict written to ``metrics.json`` (PER in percent, correlations and AUC in [-1, 1]
        / [0, 1], undefined values as None).
    """
    cfg = EvaluateConfig.build(config, **overrides)
    protocol, ci, n_bootstrap, seed = cfg.protocol, cfg.ci, cfg.n_bootstrap, cfg.seed
    if progress is None:
        progress = sys.stderr.isatty()
    run, manifest = _load(getattr(run_dir, "path", run_dir))
    applicable = tuple(manifest.corpus.protocols)
    if protocol != "all" and protocol not in applicable:
        raise EvaluateError(f"--protocol {protocol} does not apply to {manifest.corpus.benchmark} "
                            f"({run.info.get('data')}); its protocols: {', '.join(applicable)}")
    selected = applicable if protocol == "all" else (protocol,)
    post = {s: _posteriors(run, manifest, s, required=True) for s in ("dev", "test")}
    missing = {s: [u.utt_id for u in manifest.split(s) if u.utt_id not in post[s]] for s in ("dev", "test")}
    if any(missing.values()):
        log.warning("%s: %d test and %d dev utterances have no posteriors (skipped upstream); they are listed in "
                    "metrics.json", run.path, len(missing["test"]), len(missing["dev"]))

    do_seed = "seed" in selected
    do_phone = "phone" in selected
    unit_speakers: dict[str, np.ndarray] = {}
    scorers = []
    result: dict = {}

    if do_seed:
        rows = {s: _predictions(manifest, s, post[s]) for s in ("dev", "test")}
        _write_jsonl(run.path / PREDICTIONS_FILE, rows["dev"] + rows["test"])
        dev_t, test_t = seed_protocol.UttTable.build(rows["dev"]), seed_protocol.UttTable.build(rows["test"])
        if not test_t.utt_ids:
            raise EvaluateError(f"{run.path}: no test utterance has posteriors; nothing to evaluate")
        seed_fit = seed_protocol.fit(dev_t)
        seed_flat = seed_protocol.score(test_t, seed_fit)
        unit_speakers["utt"] = test_t.speakers
        scorers.append(lambda ix: seed_protocol.score(test_t, seed_fit, ix["utt"]))

    if do_phone:
        train_post = _posteriors(run, manifest, "train", required=False)
        tables = {}
        for s, p in (("train", train_post), ("dev", post["dev"]), ("test", post["test"])):
            if p is not None:
                tables[s] = phone_protocol.build_table(s, manifest.split(s), p, progress=progress)
        phone_fit = phone_protocol.fit(tables.get("train"), tables["dev"], seed=seed)
        test_p = tables["test"]
        test_scores = phone_fit.predict(test_p)
        test_uscores = phone_protocol.utterance_means(test_p, test_scores)
        phone_flat = phone_protocol.score(test_p, test_scores, test_uscores, phone_fit)
        _write_jsonl(run.path / PHONE_SCORES_FILE, _phone_rows(tables["dev"], phone_fit.dev_scores)
                     + _phone_rows(test_p, test_scores))
        unit_speakers["phone"] = test_p.speakers
        unit_speakers["putt"] = test_p.utt_speakers
        scorers.append(lambda ix: phone_protocol.score(test_p, test_scores, test_uscores, phone_fit,
                                                       ix["phone"], ix["putt"]))

    extra = [protocols.build(name, manifest, post) for name in protocols.EXTRA_PROTOCOLS if name in selected]
    for proto in extra:
        unit_speakers.update(proto.unit_speakers)
        scorers.append(proto.score)
    if extra and not do_seed:
        _write_jsonl(run.path / PREDICTIONS_FILE, extra[0].rows)

    cis: dict = {}
    undefined: dict = {}
    if ci:
        # threshold-free oracle_f1 is re-swept per replicate inside seed_protocol.score
        cis, undefined = speaker_bootstrap(unit_speakers, lambda ix: {k: v for f in scorers for k, v in f(ix).items()},
                                           n=n_bootstrap, seed=seed, progress=progress)
    if do_seed:
        result["seed"] = seed_protocol.to_metrics(seed_flat, test_t, seed_fit, cis)
        result["seed"]["counts"]["n_test_missing_posteriors"] = len(missing["test"])
        result["seed"]["counts"]["n_dev_missing_posteriors"] = len(missing["dev"])
        floors.attach(result["seed"], seed_flat, floors.seed_floors(manifest, dev_t, test_t, seed), floors.SEED_MARGINS)
    if do_phone:
        result["phone"] = phone_protocol.to_metrics(phone_flat, test_p, tables, phone_fit, cis)
        floors.attach(result["phone"], phone_flat, floors.phone_floors(manifest, tables, phone_fit.fit_on, seed),
                      floors.PHONE_MARGINS)
    for proto in extra:
        result[proto.name] = proto.to_metrics(proto.score(), cis)

    metrics_path = run.path / METRICS_FILE
    old = {}
    if metrics_path.exists():
        try:
            old = json.loads(metrics_path.read_text())
        except json.JSONDecodeError:
            old = {}
    stamp = _posteriors_stamp(run)
    # keep the other protocol's block only if it was computed from these very posteriors
    out = {k: v for k, v in old.items() if k in CORPUS_PROTOCOLS and old.get("posteriors") == stamp}
    out.update(result)
    out = {
        "format": "phonecli-metrics", "version": 1, "run": run.name, "kind": run.kind,
        "evaluated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "benchmark": {"corpus": manifest.corpus.name, "name": manifest.corpus.benchmark,
                      "standard": manifest.corpus.standard, "scored_on": manifest.corpus.scored_on},
        "corpus": corpus_summary(manifest),
        **out,
        "bootstrap": {"n": n_bootstrap if ci else 0, "seed": seed, "unit": "test speaker", "level": 0.95,
                      "method": "percentile", "undefined_replicates": {k: v for k, v in undefined.items() if v}},
        "missing_posteriors": missing,
        "posteriors": stamp,
    }
    from phonecli import __version__

    out["phonecli_version"] = __version__
    out = clean(out)
    _write_json(metrics_path, out)
    return out


def _posteriors_stamp(run) -> dict:
    """Size and mtime of each posterior file: identifies what a metrics block was computed from."""
    out = {}
    for split in run.posterior_splits():
        st = run.posteriors_path(split).stat()
        out[split] = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    return out


def _phone_rows(t: phone_protocol.PhoneTable, scores: np.ndarray) -> list[dict]:
    phones = t.phones
    return [{"utt_id": t.utt_ids[i], "split": t.split, "index": int(t.index[i]), "phone": phones[i],
             "human": float(t.human[i]), "gop": float(t.gop[i]), "score": float(scores[i])}
            for i in range(len(t))]
