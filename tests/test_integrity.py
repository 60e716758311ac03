"""No silently wrong number: verified cache reads, non-finite stops, audio-aware corpus ids.

Real parts throughout: a real fbank cache of the tiny corpus (prepare + extract), real bytes
flipped in its chunk file, real WAV files re-levelled or truncated after ``data prepare``.
"""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from phonecli.cli import main
from phonecli.data.manifest import Manifest
from phonecli.errors import CacheError, CacheMismatchError, DataError, NonFiniteError

FAST = ["--epochs", "2", "--patience", "2"]


@pytest.fixture(scope="module")
def fbank_tiny(tiny_corpus, tmp_path_factory):
    """(manifest dir, fbank cache) of the tiny corpus through the real extraction."""
    from phonecli.extract.runner import extract_features

    return tiny_corpus, Path(extract_features("fbank", tiny_corpus, tmp_path_factory.mktemp("c"), device="cpu",
                                              progress=False))


@pytest.fixture
def cache_copy(fbank_tiny, tmp_path):
    data, cache = fbank_tiny
    dst = tmp_path / "fbank.zarr"
    shutil.copytree(cache, dst)
    return data, dst


def _chunk(cache: Path, part: int = 0) -> Path:
    return cache / "parts" / f"p{part:05d}" / "data" / "c" / "0" / "0" / "0"


def _marker_file(cache: Path, part: int = 0) -> Path:
    return cache / "done" / f"p{part:05d}" / "zarr.json"


def _one_error_line(res) -> str:
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    return lines[0]


# ------------------------------------------------------------------------------------------ verified reads
def test_flipped_bytes_probe_refuses_naming_part_and_file(cache_copy, tmp_path):
    data, cache = cache_copy
    chunk = _chunk(cache)
    raw = bytearray(chunk.read_bytes())
    raw[1000:1064] = bytes(b ^ 0x5A for b in raw[1000:1064])     # 64 bytes flipped, values stay finite
    chunk.write_bytes(bytes(raw))
    res = CliRunner().invoke(main, ["probe", "--features", str(cache), "--data", str(data), "--out",
                                    str(tmp_path / "run"), *FAST])
    line = _one_error_line(res)
    assert "part p00000 fails its crc32 check" in line and str(chunk) in line and "cache verify --repair" in line
    assert not (tmp_path / "run" / "run.json").exists()                # nothing was written
    # the fsspec path (ranged reads through zarr) verifies the same way
    from phonecli.cache import FeatureCache

    remote = FeatureCache.open(f"file://{cache}")
    remote._local = False
    with pytest.raises(CacheError, match="part p00000 fails its crc32 check"):
        remote.read(remote.utterance_ids()[0])


def _nan_with_matching_crc(cache: Path) -> tuple[str, int]:
    """Set 2 frames of the 3rd utterance of part 0 to 0xFF (NaN in float16) and re-record the crc32."""
    marker_doc = json.loads(_marker_file(cache).read_text())
    m = marker_doc["attributes"]
    L, T, D = m["shape"]
    utt, offset = m["utt_ids"][2], m["offsets"][2]
    chunk = _chunk(cache)
    raw = bytearray(chunk.read_bytes())
    start = ((0 * T) + offset + 1) * D * 2
    raw[start:start + 64] = b"\xff" * 64
    chunk.write_bytes(bytes(raw))
    m["crc32"] = zlib.crc32(bytes(raw)) & 0xFFFFFFFF              # only the finite check can catch it now
    _marker_file(cache).write_text(json.dumps(marker_doc))
    return utt, m["index"]


def test_nan_features_with_matching_crc_stop_naming_the_utterance(cache_copy, tmp_path):
    data, cache = cache_copy
    utt, part = _nan_with_matching_crc(cache)
    res = CliRunner().invoke(main, ["probe", "--features", str(cache), "--data", str(data), "--out",
                                    str(tmp_path / "run"), *FAST])
    line = _one_error_line(res)
    assert line.startswith(f"Error: utterance {utt}: NaN/inf features at layer 0") and str(_chunk(cache)) in line
    assert "re-run" in line or "phonecli extract" in line
    assert not (tmp_path / "run" / "run.json").exists()
    # the cache's own verify reports the same utterance
    from phonecli.cache.verify import verify_cache

    assert any(f"utterance {utt}" in p for p in verify_cache(str(cache), progress=False))


def test_each_part_is_checked_once_per_process(cache_copy, monkeypatch):
    from phonecli.cache import FeatureCache, checksum

    data, cache = cache_copy
    calls = []
    real = checksum._verify_data
    monkeypatch.setattr(checksum, "_verify_data", lambda c, p, m: (calls.append(p), real(c, p, m)))
    checksum.VERIFIED.clear()
    a = FeatureCache.open(cache)
    ids = a.utterance_ids()
    a.read_many(ids)
    a.read_many(ids[:3])
    FeatureCache.open(cache).load_split("train")                       # another object, same process
    assert sorted(calls) == sorted(set(a.complete_parts))             # each part exactly once
    assert FeatureCache.open(cache, verify=False).read(ids[0]).shape[0] == 1


# ------------------------------------------------------------------------------------------ non-finite stops
def test_nan_loss_stops_the_probe_and_marks_the_run_failed(tiny_corpus, tmp_path):
    from phonecli.evaluate import EvaluateError, evaluate_run
    from phonecli.probe import train_probe
    from phonecli.probe.features import ArrayStream
    from phonecli.runs import Run

    m = Manifest.load(tiny_corpus)
    rng = np.random.default_rng(0)
    feats = {u.utt_id: rng.standard_normal((1, int(u.duration * 100), 8)).astype(np.float32) for u in m}
    bad = m.split("train")[4].utt_id
    feats[bad][0, 3, 2] = np.nan                                      # in-memory: no cache reader to catch it
    stream = ArrayStream(feats, {u.utt_id: u.split for u in m}, frame_rate=100, corpus_id=m.corpus_id,
                         name="memory-features")
    with pytest.raises(NonFiniteError, match=rf"^utterance {bad}: non-finite train loss .*memory-features.*lower --lr"):
        train_probe(stream, tiny_corpus, tmp_path / "run", epochs=2, patience=2, standardize=False,
                    batch_frames=100, progress=False)
    run = Run.open(tmp_path / "run", require_complete=False)
    assert run.info["status"] == "failed" and bad in run.info["error"]
    assert not run.weights_path.exists() and not (run.path / "posteriors").exists()
    with pytest.raises(EvaluateError, match="this run failed"):
        evaluate_run(run.path)


def test_evaluate_names_the_utterance_with_a_nan_posterior(tiny_corpus, tmp_path):
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    from phonecli.evaluate import EvaluateError, evaluate_run
    from phonecli.runs import Run

    m = Manifest.load(tiny_corpus)
    run = Run.create(tmp_path / "run", "probe", config={}, corpus_id=m.corpus_id, data=tiny_corpus, frame_rate=100)
    rng = np.random.default_rng(0)
    for split in ("dev", "test"):
        run.write_posteriors(split, {u.utt_id: np.log(rng.dirichlet(np.ones(40), size=30)) for u in m.split(split)})
    # a file another tool wrote: the 3rd test utterance has one NaN frame
    f = run.posteriors_path("test")
    with safe_open(str(f), framework="numpy") as st:
        meta = st.metadata()
    t = load_file(str(f))
    target = m.split("test")[2].utt_id
    t["log_probs"][int(t["offsets"][2]) + 5, 7] = np.nan
    save_file(t, str(f), metadata=meta)
    with pytest.raises(EvaluateError, match=rf"^utterance {target}: NaN/\+inf log-posteriors in {f}"):
        evaluate_run(run.path, ci=False)


# ------------------------------------------------------------------------------------------ audio fingerprints
@pytest.fixture
def wav_corpus(tmp_path):
    """An OpenSLR-layout corpus of real WAV files (tests/data_corpus.py) and its prepared manifest."""
    from data_corpus import make_openslr

    from phonecli.data.prepare import prepare_corpus

    root = tmp_path / "so"
    make_openslr(root, n_train_speakers=3, n_test_speakers=2, per_speaker=2)
    m = prepare_corpus(root, tmp_path / "m1", dev_fraction=0.34, progress=False)
    return root, m


def test_relevelled_audio_changes_corpus_id_and_is_never_reused(wav_corpus, tmp_path):
    from phonecli.data.prepare import prepare_corpus
    from phonecli.extract.runner import extract_features

    root, m1 = wav_corpus
    old = Path(extract_features("fbank", tmp_path / "m1", tmp_path / "cache", device="cpu", progress=False))
    for u in m1:                                               # x0.25, same ids, text, lengths
        x, sr = sf.read(u.audio, dtype="float32")
        sf.write(u.audio, 0.25 * x, sr, subtype="PCM_16")
    # not re-prepared: the complete cache is not reused, extract refuses naming a changed file
    res = CliRunner().invoke(main, ["extract", "--model", "fbank", "--data", str(tmp_path / "m1"), "--cache",
                                    str(tmp_path / "cache"), "--device", "cpu"])
    line = _one_error_line(res)
    assert "changed since `phonecli data prepare`" in line and str(root) in line
    m2 = prepare_corpus(root, tmp_path / "m2", dev_fraction=0.34, progress=False)
    assert [u.utt_id for u in m2] == [u.utt_id for u in m1] and [u.text for u in m2] == [u.text for u in m1]
    assert [u.num_samples for u in m2] == [u.num_samples for u in m1]
    assert m2.corpus_id != m1.corpus_id
    new = Path(extract_features("fbank", tmp_path / "m2", tmp_path / "cache", device="cpu", progress=False))
    assert new != old and new.parent.name == m2.corpus_id
    # the store of the old audio is refused, not reused, even at an explicit --out
    with pytest.raises(CacheMismatchError, match="corpus_id"):
        extract_features("fbank", tmp_path / "m2", out=old, device="cpu", progress=False)


def test_truncated_file_after_prepare_is_refused_naming_it(wav_corpus, tmp_path):
    root, m = wav_corpus
    victim = m.split("test")[1]
    x, sr = sf.read(victim.audio, dtype="float32")
    sf.write(victim.audio, x[: len(x) // 3], sr, subtype="PCM_16")
    res = CliRunner().invoke(main, ["extract", "--model", "fbank", "--data", str(tmp_path / "m1"), "--cache",
                                    str(tmp_path / "cache"), "--device", "cpu", "--on-error", "skip"])
    line = _one_error_line(res)                                    # never skipped: the manifest is stale
    assert victim.audio in line and f"utterance {victim.utt_id}" in line and "re-run `phonecli data prepare`" in line


def test_manifest_without_hashes_loads_but_extract_asks_to_reprepare(wav_corpus, tmp_path):
    _, m = wav_corpus
    doc = json.loads((tmp_path / "m1" / "manifest.json").read_text())
    for u in doc["utterances"]:
        del u["audio_sha256"]                                      # as written by phonecli before hashes
    (tmp_path / "m1" / "manifest.json").write_text(json.dumps(doc))
    old = Manifest.load(tmp_path / "m1")                           # still format v1-readable
    assert len(old) == len(m) and old.corpus_id == m.corpus_id
    res = CliRunner().invoke(main, ["extract", "--model", "fbank", "--data", str(tmp_path / "m1"), "--cache",
                                    str(tmp_path / "cache")])
    line = _one_error_line(res)
    assert "without audio content hashes" in line and "re-run `phonecli data prepare`" in line
    with pytest.raises(DataError):
        old.require_audio_hashes()
