"""``phonecli data prepare``: any supported corpus source -> one normalized manifest directory.

SOURCE is an OpenSLR-layout directory, a directory of HF parquet shards, the word ``sample``
(the bundled synthetic corpus, OpenSLR layout), or another corpus layout recognised by
:func:`phonecli.data.corpus.detect_format` (L2-ARCTIC, TIMIT, LibriSpeech, Kaldi data dirs,
lhotse manifests) or named with ``fmt``. Everything the later stages need is in
``OUT/manifest.json``; audio decoded out of parquet shards or cut out of longer recordings goes
to ``OUT/audio/``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from phonecli.data.audio import content_hash, file_hash
from phonecli.errors import ConfigError
from phonecli.data.manifest import Manifest, Utterance
from phonecli.data.normalize import CorpusError, Problem, RawRecord, UtteranceError, build_utterance
from phonecli.data.openslr import OpenSLRCorpus, is_openslr
from phonecli.data.parquet import ParquetCorpus, parquet_shards
from phonecli.data.splits import choose_dev_speakers, stratum

ON_ERROR = ("fail", "skip")


def sample_corpus_dir() -> Path:
    """The bundled synthetic corpus (package data, OpenSLR layout)."""
    import phonecli.data

    return Path(phonecli.data.__file__).parent / "sample_corpus"


def open_source(source: str | Path, fmt: str | None = None, options: dict | None = None):
    """``(reader, kind)`` for a SOURCE argument; :class:`CorpusError` when no reader fits.

    ``fmt`` forces a layout (``speechocean762`` or a :data:`phonecli.data.corpus.FORMATS` name);
    ``options`` are reader options such as ``{"lexicon": path}``.
    """
    from phonecli.data.corpus import detect_format, open_reader
    from phonecli.data.openslr import SCORES

    path = Path(source)
    if fmt is None and str(source) != "sample" and path.is_dir() and not (path / SCORES).exists() \
            and not parquet_shards(path):
        fmt = detect_format(path)       # None: fall through to the SpeechOcean762 checks and their message
    if fmt not in (None, "speechocean762"):
        if not path.exists():
            raise CorpusError(f"{source}: no such directory")
        return open_reader(path, fmt, options or {}), fmt
    if options and any(v is not None for v in options.values()):
        raise CorpusError(f"{source}: reader options ({', '.join(k for k, v in options.items() if v is not None)}) "
                          "do not apply to SpeechOcean762")
    if str(source) == "sample":
        root = sample_corpus_dir()
        if not is_openslr(root):
            raise CorpusError(f"{root}: the bundled sample corpus is missing from this installation; "
                              "reinstall phonecli or generate one with `phonecli data synth --out DIR`")
        return OpenSLRCorpus(root), "sample"
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"{source}: no such directory; pass an OpenSLR corpus root, a directory of "
                          "parquet shards, or `sample`")
    if is_openslr(path):
        return OpenSLRCorpus(path), "openslr"
    if parquet_shards(path):
        return ParquetCorpus(path), "parquet"
    raise CorpusError(f"{source}: neither an OpenSLR corpus (resource/scores.json, train/wav.scp) nor a directory "
                      "of *.parquet shards, nor L2-ARCTIC, TIMIT, LibriSpeech, Kaldi data dirs or lhotse manifests; "
                      "pass --format, or for SpeechOcean762 run `phonecli data download --to DIR`")


def describe_source(root: Path, kind: str) -> dict:
    """The manifest's ``source``: reader kind, path and whether the audio is synthetic.

    The bundled sample and every ``phonecli data synth`` output carry ``synth-info.json``.
    Reports print this and show literature anchors only for the real SpeechOcean762.
    """
    synthetic = kind == "sample" or (Path(root) / "synth-info.json").exists()
    return {"kind": kind, "path": str(root), "synthetic": synthetic}


def synthetic_spec(root: Path, kind: str):
    """A ``data synth`` corpus in the OpenSLR layout is not SpeechOcean762: its own corpus spec (not a
    standard benchmark); None otherwise (the manifest then takes the layout's default spec)."""
    from phonecli.data.corpus import CorpusSpec

    if kind != "sample" and (Path(root) / "synth-info.json").exists():
        return CorpusSpec(name="synthetic", benchmark="synthetic corpus (phonecli data synth)", standard=False)
    return None


def _progress(total: int, desc: str, enabled: bool | None):
    from tqdm import tqdm

    disable = not sys.stderr.isatty() if enabled is None else not enabled
    return tqdm(total=total, desc=desc, unit="utt", disable=disable, dynamic_ncols=True)


def _write_payload(out: Path, rec: RawRecord) -> None:
    """Write parquet audio bytes unchanged (no re-encoding: sample counts must match the source)."""
    path = out / rec.audio
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size == len(rec.payload or b"") and path.read_bytes() == rec.payload:
        return  # re-run: identical file already there
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(rec.payload or b"")
    os.replace(tmp, path)


def assign_dev(utterances: list[Utterance], fraction: float, seed: int) -> list[str]:
    """Move the utterances of the chosen dev speakers from train to dev (in place); returns them."""
    speakers: dict[str, tuple[str, str]] = {}
    for u in utterances:
        if u.split == "train":
            speakers.setdefault(u.speaker, stratum(u.gender, u.age))
    dev = set(choose_dev_speakers(speakers, fraction, seed))
    for u in utterances:
        if u.split == "train" and u.speaker in dev:
            u.split = "dev"
    return sorted(dev)


def prepare_corpus(source: str | Path, out: str | Path, dev_fraction: float = 0.1, seed: int = 0,
                   on_error: str = "fail", progress: bool | None = None,
                   warnings: list[Problem] | None = None, fmt: str | None = None,
                   options: dict | None = None) -> Manifest:
    """Read SOURCE, normalize every utterance, carve dev, write ``OUT/manifest.json``.

    ``on_error="fail"`` stops at the first bad utterance with an :class:`UtteranceError`
    naming it; ``"skip"`` drops it and records ``{"utt_id", "reason"}`` in ``manifest.skipped``.
    Non-fatal findings (resampled/stereo audio, text mismatches...) are appended to
    ``warnings`` when given. ``progress=None`` shows a bar only on a terminal. ``fmt`` and
    ``options``: see :func:`open_source`. A corpus whose benchmark fixes the dev split (TIMIT,
    LibriSpeech, L2-ARCTIC) keeps it; ``dev_fraction``/``seed`` carve dev for the others.
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"--on-error {on_error!r}: expected one of {', '.join(ON_ERROR)}")
    from phonecli.data.splits import dev_count

    dev_count(2, dev_fraction)  # validates the fraction before any work is done
    corpus, kind = open_source(source, fmt, options)
    build = getattr(corpus, "build", build_utterance)      # readers of other corpora build their own rows
    spec = getattr(corpus, "spec", None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    found = warnings if warnings is not None else []
    found += [p for p in corpus.problems if not p.is_error]
    utterances: list[Utterance] = []
    mappings: list[dict] = []
    skipped: list[dict] = list(getattr(corpus, "skipped", []))   # left out by the reader (known-bad files)
    with _progress(len(corpus), f"prepare {kind}", progress) as bar:
        for rec in corpus.records():
            bar.update(1)
            try:
                utt, warns = build(rec, mappings)
            except UtteranceError as e:
                if on_error == "fail":
                    raise UtteranceError(e.utt_id, f"{e.reason} (re-run with --on-error skip to drop it)") from None
                skipped.append({"utt_id": e.utt_id, "reason": e.reason})
                continue
            if rec.payload is not None:
                _write_payload(out, rec)
            if not utt.audio_sha256:  # readers that do not go through inspect_audio (segments, lhotse cuts)
                utt.audio_sha256 = (content_hash(rec.payload) if rec.payload is not None
                                    else file_hash(utt.audio_path(out)))
            found += warns
            utterances.append(utt)
    if not utterances:
        raise CorpusError(f"{source}: no usable utterance ({len(skipped)} skipped); run `phonecli data validate {source}`")
    if spec is not None and spec.dev is not None:
        dev = dict(spec.dev)
    else:
        dev = {"fraction": dev_fraction, "seed": seed, "speakers": assign_dev(utterances, dev_fraction, seed)}
    manifest = Manifest(
        utterances=utterances,
        source=describe_source(corpus.root, kind),
        corpus=spec if spec is not None else synthetic_spec(corpus.root, kind),
        dev=dev,
        phone_mappings=mappings,
        skipped=skipped,
    )
    manifest.save(out)
    return manifest


def load_manifest(directory: str | Path) -> Manifest:
    """Load ``DIR/manifest.json`` written by :func:`prepare_corpus`."""
    return Manifest.load(directory)
