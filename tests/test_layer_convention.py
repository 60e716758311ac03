"""One layer convention (index N = encoder output after its final LayerNorm) recorded in every cache,
and caches written with another one refused on open, on resume and in early fusion -- never mixed.

Old caches are made the way the previous phonecli wrote them: a real cache whose root attributes
lack ``layer_convention`` (and, for pre-LN encoders, name the last state "(pre final LayerNorm)").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from phonecli.cache import FeatureCache
from phonecli.cli import main
from phonecli.errors import CacheMismatchError
from phonecli.extract.runner import extract_features

OLD_PRE_LN_INFO = [{"index": 0, "name": "embeddings", "frame_rate": 50.0, "note": ""},
                   {"index": 1, "name": "transformer.1", "frame_rate": 50.0, "note": ""},
                   {"index": 2, "name": "transformer.2 (pre final LayerNorm)", "frame_rate": 50.0,
                    "note": "last layer output before encoder.layer_norm"}]


@pytest.fixture(scope="module")
def fbank_cache(tiny_corpus, tmp_path_factory) -> Path:
    return Path(extract_features("fbank", tiny_corpus, tmp_path_factory.mktemp("cache"), device="cpu",
                                 progress=False))


def age(src: Path, dst: Path, **attrs) -> Path:
    """A copy of cache ``src`` whose root attributes look like an older phonecli's: no layer_convention
    (``attrs`` set/override others; a value of None removes the key)."""
    shutil.copytree(src, dst)
    doc = json.loads((dst / "zarr.json").read_text())
    a = doc["attributes"]
    a.pop("layer_convention")
    for k, v in attrs.items():
        if v is None:
            a.pop(k, None)
        else:
            a[k] = v
    (dst / "zarr.json").write_text(json.dumps(doc))
    return dst


def test_new_caches_record_the_convention_and_what_each_index_is(fbank_cache):
    md = FeatureCache.open(fbank_cache).metadata
    assert md["layer_convention"] == "superb-v1"
    assert md["layer_info"] == [{"index": 0, "name": "log-mel fbank (80)", "frame_rate": 100.0,
                                 "note": "Kaldi fbank, 25 ms window / 10 ms shift, snip_edges",
                                 "reference": "torchaudio.compliance.kaldi.fbank (settings in "
                                              "docs/sections/models-spectral.md)"}]


@pytest.mark.parametrize("attrs, why", [
    ({"layer_info": OLD_PRE_LN_INFO}, "an older phonecli, whose last layer is the state before the final LayerNorm"),
    ({}, "an older phonecli that recorded no layer convention"),
    ({"layer_convention": "future-v9"}, "layer_convention 'future-v9', this phonecli reads 'superb-v1'"),
])
def test_caches_of_another_convention_are_refused_on_open(fbank_cache, tmp_path, attrs, why):
    old = age(fbank_cache, tmp_path / "old.zarr", **attrs)
    if "layer_convention" in attrs:  # age() removed it; put the foreign value back
        doc = json.loads((old / "zarr.json").read_text())
        doc["attributes"]["layer_convention"] = attrs["layer_convention"]
        (old / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(CacheMismatchError) as e:
        FeatureCache.open(old)
    msg = str(e.value)
    assert "\n" not in msg and why in msg and f"cache {old}" in msg
    assert f"re-extract it (`phonecli cache rm {old}`, then the same `phonecli extract` command)" in msg


def test_cli_refuses_reading_but_lists_and_removes_an_old_cache(fbank_cache, tmp_path):
    old = age(fbank_cache, tmp_path / "root" / "corpus" / "old.zarr", layer_info=OLD_PRE_LN_INFO)
    res = CliRunner().invoke(main, ["cache", "info", str(old)])
    assert res.exit_code != 0
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "before the final LayerNorm" in errors[0] and "re-extract" in errors[0]
    res = CliRunner().invoke(main, ["cache", "ls", str(tmp_path / "root")])
    assert res.exit_code == 0 and "old.zarr" in res.output
    res = CliRunner().invoke(main, ["cache", "rm", str(old), "--yes"])
    assert res.exit_code == 0 and not old.exists()


def test_resuming_an_old_cache_is_refused(fbank_cache, tiny_corpus, tmp_path):
    old = age(fbank_cache, tmp_path / "old.zarr")
    with pytest.raises(CacheMismatchError) as e:
        extract_features("fbank", tiny_corpus, out=old, device="cpu", progress=False)
    assert "\n" not in str(e.value) and "layer_convention=None" in str(e.value) and "refusing to mix" in str(e.value)


def test_early_fusion_never_mixes_conventions(fbank_cache, tiny_corpus, tmp_path):
    from phonecli.probe import train_probe

    old = age(fbank_cache, tmp_path / "old.zarr", layer_info=OLD_PRE_LN_INFO)
    with pytest.raises(CacheMismatchError, match="re-extract it"):
        train_probe([fbank_cache, old], tiny_corpus, tmp_path / "run", head="linear", layers=["0", "0"],
                    epochs=1, patience=1, progress=False)
    assert not (tmp_path / "run").exists()
