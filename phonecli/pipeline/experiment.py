"""Experiment presets: one YAML file -> the ordered steps prepare, build, extract, probe/finetune, fuse,
evaluate, report; ``plan`` says what each step would do (with estimated cache sizes), ``run_experiment``
does it, skipping work that already exists and is complete.

Preset format (``phonecli/configs/experiments/*.yaml``; relative ``paths`` are resolved against
the output root, ``--out`` or the current directory)::

    name: seed-table
    paths: {data: data/speechocean762, cache: cache, runs: runs/seed-table, results: results/seed-table}
    data: {source: speechocean762, dev_fraction: 0.1, seed: 0}   # source: `sample`, OpenSLR dir or parquet dir,
                                                                 # or any `data prepare` SOURCE (+ format, lexicon,
                                                                 # phone_set, parts: its options);
                                                                  # omit `source` to use an existing manifest dir
    expected: {utterances: 5000, hours: 5.6}        # what --plan assumes while the data dir does not exist
    defaults: {extract: {...}, probe: {...}, finetune: {...}, late: {...}, evaluate: {...}}
    encoders:                                       # caches; `model` = registry name or save_pretrained dir
      hubert-large: {model: hubert-large}
      tiny-hubert: {model: models/tiny-hubert, build: {kind: tiny-hubert, layers: 2, hidden_size: 32}}
      qwen2-audio: {model: qwen2-audio, layers: last}
    runs:                                           # one of probe / finetune / late per entry
      - {name: fbank-linear, probe: {features: [fbank], head: linear, epochs: 30}}
      - {name: hubert-ft, finetune: {model: hubert-large, mode: freeze-feature-encoder, lr: 3e-5}}
      - {name: late, late: {runs: [fbank-linear, hubert-ft], alphas: "0:1:0.1"}}
      - {name: m-ctc-t, unavailable: "why it cannot run", finetune: {...}}
    report: {}                                      # every evaluated run of the preset

Per-run keys besides the step: ``seed_row`` (row of the seed's table), ``seed_result``
(``{per_hq, pearson, auc}`` the seed reported), ``note``.

Probe ``batch_utterances: N`` (the seed's batch size) becomes ``batch_frames = N x mean utterance
seconds x frame rate`` (the manifest's mean duration; 4.03 s = 5.6 h / 5,000 for the planned corpus).

A step is skipped when its output exists, is complete and was made from the same settings
(``run.json`` ``experiment.spec_sha``) and none of its inputs is being redone; a run directory
that exists and is complete but was not made by a preset is kept as it is (said so).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from phonecli.config import (
    EvaluateConfig,
    ExtractConfig,
    FinetuneConfig,
    LateFusionConfig,
    ProbeConfig,
    ReportConfig,
)
from phonecli.errors import DataError, ExperimentError, PhonecliError

STEP_KINDS = ("prepare", "build", "extract", "probe", "finetune", "late", "evaluate", "report")
RUN_KINDS = ("probe", "finetune", "late")
TOP_KEYS = ("name", "paths", "data", "expected", "defaults", "encoders", "runs", "report")
DEFAULT_BLOCKS = ("extract", "probe", "finetune", "late", "evaluate")
RUN_KEYS = ("name", "seed_row", "seed_result", "note", "unavailable")
#: preset keys that are a step's inputs (or preset conveniences), not options of its stage config
INPUT_KEYS = {"extract": ("model", "build"), "probe": ("features", "batch_utterances"), "finetune": ("model",),
              "late": ("runs", "jobs")}
STAGE_CONFIGS = {"probe": ProbeConfig, "finetune": FinetuneConfig, "late": LateFusionConfig}
BYTES = {"float16": 2, "float32": 4, "int8": 1}
DEFAULT_EXPECTED = {"utterances": 5000, "hours": 5.6}


@dataclass
class Step:
    """One unit of work. ``status``: run | skip | unavailable. ``est_bytes``: estimated cache size."""

    kind: str
    name: str
    target: str
    status: str = "run"
    reason: str = ""
    est_bytes: int | None = None
    size_note: str = ""
    deps: list[str] = field(default_factory=list)
    spec: dict = field(default_factory=dict)
    config: object = None              # the step's typed stage config (phonecli.config), when it has one
    seconds: float | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"


# ---------------------------------------------------------------------------------------------
# loading


def load_experiment(path: str | Path, overrides: dict | None = None) -> dict:
    """Parse and check a preset YAML file; a bad key is one clear line naming the file and the key.

    ``overrides``: ``{block: {key: value}}`` shallow updates of the ``defaults`` blocks *and* of every
    run of that kind (e.g. ``{"probe": {"epochs": 5}}`` for a quick smoke run), applied before the check.
    Every block becomes a typed stage config (``exp["_configs"]``).
    """
    import yaml

    path = Path(path)
    if not path.exists():
        builtin = Path(__file__).resolve().parent.parent / "configs" / "experiments" / path.name
        if path.parent == Path(".") and builtin.exists():
            path = builtin
        else:
            raise ExperimentError(f"{path}: no such preset file; see phonecli/configs/experiments/ for examples")
    try:
        exp = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ExperimentError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from e
    if not isinstance(exp, dict):
        raise ExperimentError(f"{path}: a preset is a YAML mapping with name, paths, data, encoders, runs")
    exp["_file"] = str(path)
    for block, values in (overrides or {}).items():
        exp.setdefault("defaults", {}).setdefault(block, {}).update(values)
        for r in exp.get("runs") or []:
            if isinstance(r, dict) and isinstance(r.get(block), dict):
                r[block].update(values)
    return check_experiment(exp)


def check_experiment(exp: dict) -> dict:
    """Validate a parsed preset (``exp["_file"]`` names it) and build its typed configs into ``exp["_configs"]``."""
    path = exp.get("_file", "<preset>")
    unknown = sorted(set(exp) - set(TOP_KEYS) - {"_file"})
    if unknown:
        raise ExperimentError(f"{path}: unknown top-level key {unknown[0]!r}; valid keys: {', '.join(TOP_KEYS)}")
    for key in ("name", "runs"):
        if key not in exp:
            raise ExperimentError(f"{path}: missing top-level key {key!r}")
    defaults = exp.get("defaults") or {}
    bad = sorted(set(defaults) - set(DEFAULT_BLOCKS))
    if bad:
        raise ExperimentError(f"{path}: unknown defaults block {bad[0]!r}; valid blocks: {', '.join(DEFAULT_BLOCKS)}")
    encoders = exp.setdefault("encoders", {}) or {}
    exp["encoders"] = encoders
    configs: dict[str, object] = {}
    for enc, spec in encoders.items():
        if not isinstance(spec, dict) or "model" not in spec:
            raise ExperimentError(f"{path}: encoders.{enc} needs a `model` (registry name or save_pretrained dir)")
        merged = {**_defaults(exp, "extract"), **spec}
        configs[f"extract:{enc}"] = ExtractConfig.from_dict(
            {k: v for k, v in merged.items() if k not in INPUT_KEYS["extract"]}, where=f"{path}: encoders.{enc}")
    names = set()
    for i, r in enumerate(exp["runs"]):
        if not isinstance(r, dict) or "name" not in r:
            raise ExperimentError(f"{path}: runs[{i}] needs a `name`")
        kinds = [k for k in RUN_KINDS if k in r]
        if len(kinds) != 1:
            raise ExperimentError(f"{path}: run {r['name']!r} needs exactly one of probe / finetune / late")
        extra = sorted(set(r) - set(RUN_KEYS) - set(RUN_KINDS))
        if extra:
            raise ExperimentError(f"{path}: run {r['name']!r}: unknown key {extra[0]!r}; valid keys: "
                                  f"{', '.join(RUN_KEYS)} and one of {', '.join(RUN_KINDS)}")
        if r["name"] in names:
            raise ExperimentError(f"{path}: run name {r['name']!r} is used twice")
        names.add(r["name"])
        kind = kinds[0]
        spec = {**_defaults(exp, kind), **(r[kind] or {})}
        if kind == "probe" and "batch_utterances" in spec and "batch_frames" in (r[kind] or {}):
            raise ExperimentError(f"{path}: run {r['name']!r}: give batch_utterances or batch_frames, not both")
        options = {k: v for k, v in spec.items() if k not in INPUT_KEYS[kind]}
        if kind == "probe" and "batch_utterances" in spec:
            options.pop("batch_frames", None)   # computed from batch_utterances by plan()
        configs[f"run:{r['name']}"] = STAGE_CONFIGS[kind].from_dict(options, where=f"{path}: run {r['name']!r} {kind}")
        if kind == "probe":
            feats = spec.get("features")
            if not feats:
                raise ExperimentError(f"{path}: run {r['name']!r}: probe.features lists the encoders to read")
            for f in ([feats] if isinstance(feats, str) else feats):
                if f not in encoders:
                    raise ExperimentError(f"{path}: run {r['name']!r}: probe feature {f!r} is not under `encoders`")
        if kind == "finetune" and not spec.get("model"):
            raise ExperimentError(f"{path}: run {r['name']!r}: finetune.model names the encoder to fine-tune")
    for r in exp["runs"]:
        if "late" in r:
            for src in r["late"].get("runs", []):
                if src not in names:
                    raise ExperimentError(f"{path}: run {r['name']!r}: late-fusion input {src!r} is not a run of "
                                          f"this preset")
            if len(r["late"].get("runs", [])) < 2:
                raise ExperimentError(f"{path}: run {r['name']!r}: late.runs needs 2+ run names")
    configs["evaluate"] = EvaluateConfig.from_dict(_defaults(exp, "evaluate"), where=f"{path}: defaults.evaluate")
    report = exp.get("report", {})
    if report is not None:
        configs["report"] = ReportConfig.from_dict(report, where=f"{path}: report")
    exp["_configs"] = configs
    return exp


def _root_paths(exp: dict, out: str | Path | None) -> dict[str, Path]:
    root = Path(out) if out is not None else Path.cwd()
    p = {"data": "data", "cache": "cache", "runs": "runs", "results": "results", "models": "models"}
    p.update(exp.get("paths") or {})
    return {k: (Path(v) if Path(v).is_absolute() else root / v) for k, v in p.items()}


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _defaults(exp: dict, kind: str) -> dict:
    return dict((exp.get("defaults") or {}).get(kind) or {})


# ---------------------------------------------------------------------------------------------
# sizes


def layer_indices(spec, n_states: int, source: str = "encoder") -> list[int]:
    """Stored hidden-state indices for an extraction ``layers`` spec (:mod:`phonecli.layers`: ``all``, ``last``,
    ``0,6,9-12``, a list) of a model with ``n_states`` hidden states."""
    from phonecli.layers import EXTRACT, resolve

    return list(resolve("all" if spec is None else spec, range(n_states), EXTRACT, source=source).layers)


def encoder_shape(enc: dict, paths: dict[str, Path]) -> tuple[str, float, int, int]:
    """``(cache name, frames/s, hidden states of the model, dim)`` from the registry row, a built dir or its build spec."""
    from phonecli.extract.models import resolve_model as resolve

    model = str(enc["model"])
    build = enc.get("build")
    local = _model_path(model, paths)
    if build and not (local / "config.json").exists():
        states = int(build.get("layers", 2)) + 1
        name, rate, dim = local.name, 50.0, int(build.get("hidden_size", 32))
    else:
        spec, _ = resolve(str(local) if (local / "config.json").exists() else model)  # unknown names: one line
        name, rate, states, dim = spec.name, float(spec.frame_rate), int(spec.layers), int(spec.hidden_size)
    return name, rate, states, dim


def _model_path(model: str, paths: dict[str, Path]) -> Path:
    p = Path(model)
    if p.is_absolute():
        return p
    if model.startswith("models/"):
        return paths["models"] / p.relative_to("models")
    return p


def human_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


# ---------------------------------------------------------------------------------------------
# planning


@dataclass
class Corpus:
    """What the plan knows about the data: from the manifest when it exists, else the preset's expectation."""

    corpus_id: str
    utterances: int
    seconds: float
    known: bool
    data_dir: Path

    @property
    def mean_seconds(self) -> float:
        return self.seconds / max(self.utterances, 1)


def corpus_facts(exp: dict, paths: dict[str, Path]) -> Corpus:
    from phonecli.data.manifest import Manifest

    mfile = paths["data"] / "manifest.json"
    if mfile.exists():
        try:
            m = Manifest.load(paths["data"])
        except DataError as e:
            raise ExperimentError(f"{mfile}: unreadable manifest ({e}); re-run `phonecli data prepare`") from e
        return Corpus(m.corpus_id, len(m), float(sum(u.duration for u in m)), True, paths["data"])
    exp_ = {**DEFAULT_EXPECTED, **(exp.get("expected") or {})}
    return Corpus("<corpus_id>", int(exp_["utterances"]), float(exp_["hours"]) * 3600.0, False, paths["data"])


def _run_complete(run_dir: Path) -> tuple[bool, dict | None]:
    f = run_dir / "run.json"
    if not f.exists():
        return False, None
    try:
        info = json.loads(f.read_text())
    except json.JSONDecodeError:
        return False, None
    ok = info.get("status") in (None, "complete") and all(
        (run_dir / "posteriors" / f"{s}.safetensors").exists() for s in ("dev", "test"))
    return ok, info


def _cache_complete(path) -> bool:
    if not Path(str(path)).exists():
        return False
    from phonecli.cache import FeatureCache
    from phonecli.errors import CacheError

    try:
        return FeatureCache.open(path).is_complete
    except CacheError:  # an unreadable/foreign store is simply "not complete": extraction says why
        return False


def plan(exp: dict, out: str | Path | None = None) -> tuple[list[Step], Corpus, dict[str, Path]]:
    """The ordered steps of ``exp`` with status run/skip/unavailable and estimated cache sizes."""
    from phonecli.extract.runner import cache_location

    paths = _root_paths(exp, out)
    corpus = corpus_facts(exp, paths)
    steps: list[Step] = []
    by_key: dict[str, Step] = {}

    def add(step: Step) -> Step:
        if step.status == "run" or any(by_key[d].status == "run" for d in step.deps if d in by_key):
            if step.status == "skip":
                step.status, step.reason = "run", "an input is being redone"
        steps.append(step)
        by_key[step.key] = step
        return step

    data = exp.get("data") or {}
    if data.get("source"):
        st = "skip" if corpus.known else "run"
        add(Step("prepare", "data", str(paths["data"]), st,
                 f"manifest exists (corpus {corpus.corpus_id}, {corpus.utterances} utterances)" if corpus.known
                 else f"prepare {data['source']}", spec=dict(data)))
    elif not corpus.known:
        add(Step("prepare", "data", str(paths["data"]), "unavailable",
                 f"no manifest.json in {paths['data']} and no data.source to prepare it from"))

    # encoders actually used by runnable probes
    used: list[str] = []
    unavailable_runs = {r["name"]: r["unavailable"] for r in exp["runs"] if r.get("unavailable")}
    for r in exp["runs"]:
        if "probe" in r and r["name"] not in unavailable_runs:
            feats = r["probe"]["features"]
            for f in ([feats] if isinstance(feats, str) else feats):
                if f not in used:
                    used.append(f)
    cache_paths: dict[str, Path] = {}
    enc_info: dict[str, tuple] = {}
    ext_defaults = _defaults(exp, "extract")
    for enc_name in used:
        enc = {**ext_defaults, **exp["encoders"][enc_name]}
        local = _model_path(str(enc["model"]), paths)
        deps = ["prepare:data"]
        if enc.get("build"):
            built = (local / "config.json").exists()
            add(Step("build", enc_name, str(local), "skip" if built else "run",
                     "model directory exists" if built else f"save a random {enc['build'].get('kind')} "
                     f"({enc['build'].get('layers', 2)} layers x {enc['build'].get('hidden_size', 32)})",
                     spec=dict(enc["build"])))
            deps.append(f"build:{enc_name}")
        name, rate, all_states, dim = encoder_shape(enc, paths)
        ecfg = exp["_configs"][f"extract:{enc_name}"]
        dtype = ecfg.dtype
        sel = layer_indices(ecfg.layers, all_states, source=f"{exp['_file']}: encoders.{enc_name}")
        n_layers = len(sel)
        cpath = cache_location(paths["cache"], corpus.corpus_id, name, layers=sel, all_layers=list(range(all_states)),
                               dtype=dtype, splits=["all"], all_splits=["all"])
        cache_paths[enc_name] = Path(cpath)
        enc_info[enc_name] = (rate, n_layers, dim)
        est = corpus.seconds * rate * n_layers * dim * BYTES[dtype]
        done = corpus.known and _cache_complete(cpath)
        add(Step("extract", enc_name, str(cpath), "skip" if done else "run",
                 "cache exists and is complete" if done else f"extract {enc['model']} -> {cpath}",
                 est_bytes=int(est),
                 size_note=f"{corpus.utterances} utts x {corpus.mean_seconds:.2f} s x {rate:g} fps x {n_layers} layers "
                           f"x {dim} x {BYTES[dtype]} B",
                 deps=deps, spec={k: v for k, v in enc.items() if k != "build"}, config=ecfg))

    # runs
    run_dirs: dict[str, Path] = {}
    for r in exp["runs"]:
        kind = next(k for k in RUN_KINDS if k in r)
        rdir = paths["runs"] / r["name"]
        run_dirs[r["name"]] = rdir
        spec = {**_defaults(exp, kind), **r[kind]}
        cfg = exp["_configs"][f"run:{r['name']}"]
        deps = ["prepare:data"]
        inputs: dict = {}
        if kind == "probe":
            feats = spec["features"]
            feats = [feats] if isinstance(feats, str) else list(feats)
            deps += [f"extract:{f}" for f in feats]
            if "batch_utterances" in spec and r["name"] not in unavailable_runs:
                rate = max(enc_info[f][0] for f in feats)
                spec["batch_frames"] = int(round(spec.pop("batch_utterances") * corpus.mean_seconds * rate))
                cfg = replace(cfg, batch_frames=spec["batch_frames"])
            inputs = {"features": [str(cache_paths.get(f, "")) for f in feats]}
        elif kind == "late":
            deps += [f"run:{x}" for x in spec["runs"]]
            inputs = {"runs": list(spec["runs"])}
        else:
            inputs = {"model": str(spec["model"])}
        if r.get("unavailable"):
            add(Step("run", r["name"], str(rdir), "unavailable", str(r["unavailable"]), spec={"kind": kind, **spec},
                     config=cfg))
            continue
        # the settings a run is made from: its typed config (defaults resolved) and its inputs
        sha = _sha({"kind": kind, "config": cfg.to_dict(), "inputs": inputs})
        complete, info = _run_complete(rdir)
        if not complete:
            status, reason = "run", describe_run(r, kind, spec)
        else:
            made = (info.get("experiment") or {}).get("spec_sha")
            if made is None:
                status, reason = "skip", "run exists and is complete (not made by a preset; kept as is)"
            elif made == sha:
                status, reason = "skip", "run exists and is complete (same settings)"
            else:
                status, reason = "run", "settings changed since the run was made"
        add(Step("run", r["name"], str(rdir), status, reason, deps=deps, spec={"kind": kind, "sha": sha, **spec},
                 config=cfg))

    # evaluation of every run that can exist, then one report
    ev = exp["_configs"]["evaluate"]
    for r in exp["runs"]:
        if r.get("unavailable"):
            continue
        rdir = run_dirs[r["name"]]
        mfile = rdir / "metrics.json"
        post = rdir / "posteriors" / "test.safetensors"
        fresh = mfile.exists() and post.exists() and mfile.stat().st_mtime >= post.stat().st_mtime
        add(Step("evaluate", r["name"], str(mfile), "skip" if fresh else "run",
                 "metrics.json is newer than the posteriors" if fresh else "evaluate", deps=[f"run:{r['name']}"],
                 config=ev))
    if exp.get("report", {}) is not None:
        add(Step("report", exp["name"], str(paths["results"]), "run", "results table over every evaluated run",
                 deps=[s.key for s in steps if s.kind == "evaluate"], config=exp["_configs"]["report"]))
    return steps, corpus, paths


_SHOWN = ("model", "mode", "features", "head", "layers", "lr", "epochs", "batch_frames", "batch_seconds", "runs",
          "alphas", "rule")


def describe_run(r: dict, kind: str, spec: dict) -> str:
    """One line: the seed row it reproduces (and the seed's PER) + the settings that matter."""
    bits = []
    if r.get("seed_row"):
        res = r.get("seed_result") or {}
        bits.append(f"seed row {r['seed_row']}" + (f" (PER {res['per_hq']})" if "per_hq" in res else "") + ":")
    parts = []
    for k in _SHOWN:
        if k in spec:
            v = spec[k]
            v = "+".join(map(str, v)) if isinstance(v, list) else v
            parts.append(f"{k} {v}")
    bits.append(f"{kind} " + ", ".join(parts))
    return " ".join(bits)


def format_plan(exp: dict, steps: list[Step], corpus: Corpus) -> str:
    """The plan as a table: step, target, status, estimated cache size, reason."""
    lines = [f"experiment {exp['name']} ({exp['_file']})"]
    if corpus.known:
        lines.append(f"data: {corpus.data_dir} (corpus {corpus.corpus_id}: {corpus.utterances} utterances, "
                     f"{corpus.seconds / 3600:.2f} h, from the manifest)")
    else:
        lines.append(f"data: {corpus.data_dir} not prepared yet; sizes assume {corpus.utterances} utterances / "
                     f"{corpus.seconds / 3600:.1f} h")
    rows = []
    for i, s in enumerate(steps, 1):
        label = s.kind if s.kind != "run" else s.spec.get("kind", "run")
        rows.append([str(i), label, s.name, s.status, human_bytes(s.est_bytes) if s.est_bytes is not None else "",
                     s.reason + (f" [{s.size_note}]" if s.size_note else "")])
    widths = [max(len(r[c]) for r in rows + [["#", "step", "name", "status", "est. cache", ""]]) for c in range(5)]
    head = ["#", "step", "name", "status", "est. cache"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  note")
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r[:5], widths)) + "  " + r[5])
    total = sum(s.est_bytes or 0 for s in steps if s.kind == "extract" and s.status == "run")
    counts = {k: sum(s.status == k for s in steps) for k in ("run", "skip", "unavailable")}
    lines.append(f"{counts['run']} to run, {counts['skip']} to skip, {counts['unavailable']} unavailable; "
                 f"new cache space needed: about {human_bytes(total)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# running


def run_experiment(path: str | Path | dict, out: str | Path | None = None, *, plan_only: bool = False,
                   echo: Callable[[str], None] = print, progress: bool | None = None) -> list[Step]:
    """Plan the preset at ``path`` and (unless ``plan_only``) execute every ``run`` step in order.

    Skipped and unavailable steps are reported through ``echo``. A failing step raises
    :class:`ExperimentError` naming the step; everything finished before it stays on disk and is
    skipped when the same command is repeated.
    """
    exp = load_experiment(path) if not isinstance(path, dict) else path if "_configs" in path else check_experiment(path)
    steps, corpus, paths = plan(exp, out)
    if plan_only:
        echo(format_plan(exp, steps, corpus))
        return steps
    echo(f"experiment {exp['name']}: {sum(s.status == 'run' for s in steps)} step(s) to run")
    ctx: dict = {"exp": exp, "paths": paths, "caches": {}, "runs": {}, "progress": progress}
    i = 0
    while i < len(steps):
        s = steps[i]
        i += 1
        label = f"[{i}/{len(steps)}] {s.kind if s.kind != 'run' else s.spec.get('kind')} {s.name}"
        if s.status == "unavailable":
            echo(f"{label}: unavailable: {s.reason}")
            continue
        if s.status == "skip":
            echo(f"{label}: skipped ({s.reason})")
            _remember(ctx, s)
            continue
        echo(f"{label}: {s.reason} ...")
        t0 = time.time()
        try:
            _EXEC[s.kind](ctx, s)
        except ExperimentError:
            raise
        except (PhonecliError, FileNotFoundError) as e:   # a bug (any other exception) keeps its traceback
            msg = " ".join(str(e).split())
            raise ExperimentError(f"step {i} ({s.kind} {s.name}) failed: {msg}; finished steps are kept, "
                                  f"re-run the same command to continue") from e
        s.seconds = time.time() - t0
        echo(f"{label}: done in {s.seconds:.1f} s")
        if s.kind == "prepare":
            # the corpus id is known only now: re-plan the cache paths and skips
            steps_new, corpus, paths = plan(exp, out)
            done = {x.key for x in steps[:i]}
            steps = steps[:i] + [x for x in steps_new if x.key not in done]
    return steps


def _remember(ctx: dict, s: Step) -> None:
    if s.kind == "extract":
        ctx["caches"][s.name] = s.target
    elif s.kind == "run":
        ctx["runs"][s.name] = s.target


def _exec_prepare(ctx: dict, s: Step) -> None:
    from phonecli.data import prepare_corpus

    d = s.spec
    lexicon = d.get("lexicon")
    prepare_corpus(d["source"], ctx["paths"]["data"], dev_fraction=float(d.get("dev_fraction", 0.1)),
                   seed=int(d.get("seed", 0)), on_error=d.get("on_error", "fail"), progress=ctx["progress"],
                   fmt=d.get("format"), options={"lexicon": [lexicon] if isinstance(lexicon, str) else lexicon,
                                                 "phone_set": d.get("phone_set"), "parts": d.get("parts")})


def _exec_build(ctx: dict, s: Step) -> None:
    from phonecli.pipeline.tiny import build_model

    build_model(s.spec, Path(s.target))


def _exec_extract(ctx: dict, s: Step) -> None:
    from phonecli.extract.runner import run_extraction

    model = str(s.spec["model"])
    model = str(_model_path(model, ctx["paths"])) if model.startswith("models/") else model
    rep = run_extraction(model, ctx["paths"]["data"], None, s.config, out=s.target, progress=ctx["progress"])
    ctx["caches"][s.name] = str(rep.path)


def _mark(run_dir: Path, s: Step, exp: dict) -> None:
    from phonecli.runs import Run

    run = Run.open(run_dir)
    run.info["experiment"] = {"preset": exp["name"], "file": exp["_file"], "spec_sha": s.spec["sha"]}
    run.save_info()


def _exec_run(ctx: dict, s: Step) -> None:
    kind = s.spec["kind"]
    exp, paths = ctx["exp"], ctx["paths"]
    out = Path(s.target)
    # the plan runs this step because the run is missing, interrupted, or made by this preset with other
    # settings: the last is replaced explicitly; an interrupted probe continues from its last epoch
    exists = (out / "run.json").exists()
    complete = exists and _run_complete(out)[0]
    if kind == "probe":
        from phonecli.probe import train_probe

        feats = s.spec["features"]
        feats = [feats] if isinstance(feats, str) else feats
        caches = [ctx["caches"][f] for f in feats]
        train_probe(caches if len(caches) > 1 else caches[0], paths["data"], out, s.config, overwrite=complete,
                    resume=exists and not complete, progress=ctx["progress"])
    elif kind == "late":
        from phonecli.fuse.late import fuse_late

        srcs = [ctx["runs"].get(x, str(paths["runs"] / x)) for x in s.spec["runs"]]
        fuse_late(srcs, out, s.config, overwrite=exists, n_jobs=int(s.spec.get("jobs", -1)),
                  progress=ctx["progress"])
    elif kind == "finetune":
        _exec_finetune(ctx, s, out)
    _mark(out, s, exp)
    ctx["runs"][s.name] = str(out)


def _exec_finetune(ctx: dict, s: Step, out: Path) -> None:
    """Through the fine-tuning API with the preset's typed config (every option reaches the run)."""
    from phonecli.finetune.train import finetune

    model = str(s.spec["model"])
    model = str(_model_path(model, ctx["paths"])) if model.startswith("models/") else model
    resume = False
    if (out / "run.json").exists():
        complete, _ = _run_complete(out)
        if complete:
            # a finished fine-tune is GPU-hours of work: never overwrite it behind the user's back
            raise ExperimentError(f"run {s.name}: {out} holds a finished fine-tune made with other settings; "
                                  f"move it away (or rename the run in the preset) to train again")
        resume = True      # interrupted earlier: continue from its last checkpoint
    finetune(model, ctx["paths"]["data"], out, s.config, resume=resume, progress=ctx["progress"])


def _exec_evaluate(ctx: dict, s: Step) -> None:
    from phonecli.evaluate import evaluate_run

    evaluate_run(Path(s.target).parent, s.config, progress=ctx["progress"])


def _exec_report(ctx: dict, s: Step) -> None:
    from phonecli.evaluate.report import write_report

    dirs = [Path(r) for r in ctx["runs"].values() if (Path(r) / "metrics.json").exists()]
    if not dirs:
        raise ExperimentError(f"report {s.name}: no evaluated run to report")
    ctx["report"] = write_report(dirs, s.target, replace(s.config, evaluate_missing=False))


_EXEC = {"prepare": _exec_prepare, "build": _exec_build, "extract": _exec_extract, "run": _exec_run,
         "evaluate": _exec_evaluate, "report": _exec_report}


def summary_rows(steps: list[Step]) -> list[dict]:
    """Machine-readable record of what happened (for tests and ``--json``)."""
    return [{"kind": s.kind if s.kind != "run" else s.spec.get("kind"), "name": s.name, "status": s.status,
             "reason": s.reason, "target": s.target, "est_bytes": s.est_bytes,
             "seconds": None if s.seconds is None or math.isnan(s.seconds) else round(s.seconds, 2)} for s in steps]

