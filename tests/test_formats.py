"""The shared on-disk formats: manifest round trip and run-directory posteriors."""

import numpy as np
import pytest

from phonecli.data.manifest import Manifest
from phonecli.data.phones import VOCAB, normalize_phone, UnknownPhoneError
from phonecli.runs import Run, RunError


def test_manifest_roundtrip(tiny_corpus):
    m = Manifest.load(tiny_corpus)
    assert len(m) == 24 and m.splits() == ["train", "dev", "test"]
    again = Manifest.load(tiny_corpus / "manifest.json")
    assert again.corpus_id == m.corpus_id
    u = m.split("test")[0]
    assert m.audio_path(u).exists()
    assert len(u.canonical_phones) == len(u.phone_accuracy)
    spk = {s: {u.speaker for u in m.split(s)} for s in m.splits()}
    assert not spk["train"] & spk["dev"] and not spk["train"] & spk["test"]


def test_phone_normalization():
    assert normalize_phone("AH0") == ("AH",)
    assert normalize_phone("tr") == ("T", "R")
    with pytest.raises(UnknownPhoneError):
        normalize_phone("QX")


def test_posteriors_roundtrip(tmp_path, tiny_corpus):
    m = Manifest.load(tiny_corpus)
    run = Run.create(tmp_path / "r", "probe", config={"a": 1}, corpus_id=m.corpus_id, data=tiny_corpus, frame_rate=50)
    rng = np.random.default_rng(0)
    lp = {u.utt_id: np.log(rng.dirichlet(np.ones(len(VOCAB)), size=7)).astype(np.float32) for u in m.split("dev")}
    run.write_posteriors("dev", lp)
    back = Run.open(tmp_path / "r").read_posteriors("dev")
    assert list(back) == list(lp)
    for k in lp:
        np.testing.assert_array_equal(back[k], lp[k])
    with pytest.raises(RunError, match="no test posteriors"):
        run.read_posteriors("test")
