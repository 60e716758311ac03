"""The dev split: speaker-disjoint, deterministic, ~fraction of train speakers, stratified."""

from __future__ import annotations

from collections import Counter

import pytest

from data_corpus import make_openslr
from phonecli.data import prepare_corpus
from phonecli.data.splits import choose_dev_speakers, dev_count, stratum
from phonecli.errors import ConfigError


def _speakers(n: int) -> dict[str, tuple[str, str]]:
    # 4 strata of equal size like SpeechOcean762's mix of boys, girls, men and women
    return {f"{i:04d}": stratum("m" if i % 2 else "f", 8 if (i // 2) % 2 else 30) for i in range(n)}


def test_dev_count():
    assert dev_count(125, 0.1) == 13          # 12.5 rounds half up
    assert dev_count(10, 0.1) == 1
    assert dev_count(5, 0.1) == 1             # never zero when a fraction was asked for ...
    assert dev_count(1, 0.5) == 0             # ... unless train would be left empty
    assert dev_count(3, 0.9) == 2             # at least one speaker stays in train
    assert dev_count(100, 0.0) == 0
    with pytest.raises(ConfigError, match="must be in"):
        dev_count(10, 1.0)


def test_choice_is_deterministic_stratified_and_seed_dependent():
    spk = _speakers(120)
    a = choose_dev_speakers(spk, 0.1, seed=0)
    assert a == choose_dev_speakers(dict(reversed(list(spk.items()))), 0.1, seed=0)   # order-independent
    assert len(a) == 12
    assert Counter(spk[s] for s in a) == {st: 3 for st in set(spk.values())}          # 3 per stratum of 30
    b = choose_dev_speakers(spk, 0.1, seed=1)
    assert len(b) == 12 and a != b
    # removing a speaker that was not chosen leaves the choice unchanged (hash ranking, no reshuffle)
    # as long as stratum quotas stay the same
    smaller = dict(spk)
    gone = next(s for s in spk if s not in a and spk[s] == spk[a[0]])
    del smaller[gone]
    assert set(choose_dev_speakers(smaller, 0.1, seed=0)) == set(a)


def test_largest_remainder_allocation():
    spk = {f"m{i}": ("m", "adult") for i in range(7)} | {f"f{i}": ("f", "child") for i in range(3)}
    chosen = choose_dev_speakers(spk, 0.2, seed=0)                   # 2 of 10: quotas 1.4 / 0.6
    assert sorted(s[0] for s in chosen) == ["f", "m"]


def test_prepared_dev_split_is_speaker_disjoint(tmp_path):
    root = tmp_path / "c"
    make_openslr(root, n_train_speakers=20, n_test_speakers=2, per_speaker=1)
    m = prepare_corpus(root, tmp_path / "m", dev_fraction=0.1, seed=3)
    spk = {s: {u.speaker for u in m.split(s)} for s in ("train", "dev", "test")}
    assert len(spk["dev"]) == 2 and len(spk["train"]) == 18
    assert not spk["train"] & spk["dev"] and not spk["dev"] & spk["test"]
    assert sorted(spk["dev"]) == m.dev["speakers"] and m.dev["fraction"] == 0.1 and m.dev["seed"] == 3
    again = prepare_corpus(root, tmp_path / "m2", dev_fraction=0.1, seed=3)
    assert again.corpus_id == m.corpus_id and again.dev == m.dev
    other = prepare_corpus(root, tmp_path / "m3", dev_fraction=0.1, seed=4)
    assert other.dev["speakers"] != m.dev["speakers"] and other.corpus_id != m.corpus_id
    assert not prepare_corpus(root, tmp_path / "m4", dev_fraction=0).split("dev")
