"""The CTC core (phonecli.ctc) against independent references: torch's own CTC normalisation,
jiwer and torchaudio for PER (the empty-reference rule included), hand-computed cases; and a
source check that the stages use it instead of their own copies."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import jiwer
import numpy as np
import pytest
import torch
import torchaudio.functional as TAF
from torch.nn import functional as F

from phonecli import ctc
from phonecli.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent / "phonecli"


def test_min_frames_counts_a_blank_between_equal_neighbours():
    assert ctc.min_frames([1, 2, 3]) == 3
    assert ctc.min_frames([3, 3, 4]) == 4           # A A needs A _ A
    assert ctc.min_frames([1, 1, 2, 2, 2]) == 8
    assert ctc.min_frames([]) == 0
    assert ctc.feasible([3, 3], 3) and not ctc.feasible([3, 3], 2)
    assert not ctc.feasible([], 10)                  # no target: no finite CTC loss to learn from


def test_min_frames_agrees_with_torch_ctc_finiteness():
    """The first frame count at which torch's CTC loss becomes finite is min_frames."""
    rng = random.Random(0)
    for _ in range(30):
        target = [rng.randint(1, 3) for _ in range(rng.randint(1, 6))]
        first = next(t for t in range(1, 20)
                     if math.isfinite(float(F.ctc_loss(torch.zeros(t, 1, 5).log_softmax(-1), torch.tensor([target]),
                                                       torch.tensor([t]), torch.tensor([len(target)]),
                                                       reduction="sum"))))
        assert first == ctc.min_frames(target)


def test_greedy_decoding_numpy_and_torch_agree():
    lp = np.log(np.full((9, 5), 0.05))
    for t, k in enumerate([0, 2, 2, 0, 2, 3, 3, 0, 0]):
        lp[t, k] = np.log(0.8)
    assert ctc.greedy_ids(lp) == [2, 2, 3]           # A _ A stays two labels; A A merges
    assert ctc.greedy_ids(torch.from_numpy(lp)) == [2, 2, 3]
    assert ctc.greedy_ids(np.zeros((0, 5))) == []
    assert ctc.greedy_phones(lp, vocab=["_", "a", "b", "c", "d"]) == ["b", "b", "c"]


def test_per_empty_reference_rule_matches_jiwer_and_torchaudio():
    """One rule: 100 * edits / max(reference phones, 1) — what jiwer 4 does — at utterance and corpus level;
    only an empty set of utterances has no PER."""
    rng = random.Random(1)
    refs, hyps = [], []
    for i in range(120):
        ref = [] if i % 10 == 0 else [rng.choice("abcdefgh") for _ in range(rng.randint(1, 10))]
        hyp = [] if i % 7 == 0 else [rng.choice("abcdefgh") for _ in range(rng.randint(1, 10))]
        refs.append(ref)
        hyps.append(hyp)
        assert ctc.edit_distance(ref, hyp) == TAF.edit_distance(ref, hyp)
        assert ctc.phone_error_rate([ref], [hyp]) == pytest.approx(100 * jiwer.wer(" ".join(ref), " ".join(hyp)))
        assert ctc.utterance_per(ctc.edit_distance(ref, hyp), len(ref)) == ctc.phone_error_rate([ref], [hyp])
    expected = 100 * jiwer.wer([" ".join(r) for r in refs], [" ".join(h) for h in hyps])
    assert ctc.phone_error_rate(refs, hyps) == pytest.approx(expected, rel=1e-12)
    # every reference empty: the insertions are the errors (jiwer: wer = insertions)
    only_empty = ([[], []], [["a"], ["b", "c"]])
    assert ctc.phone_error_rate(*only_empty) == pytest.approx(100 * jiwer.wer(["", ""], ["a", "b c"])) == 300.0
    assert ctc.phone_error_rate([[]], [[]]) == 0.0
    assert math.isnan(ctc.phone_error_rate([], []))
    assert math.isnan(ctc.corpus_per(np.array([], dtype=int), np.array([], dtype=int)))


def test_scored_per_folds_ids_like_the_corpus_folds_symbols():
    """TIMIT: dev PER in id space with ``scoring_ids`` equals jiwer's WER over the symbol sequences folded
    with the corpus' own 48 -> 39 map (cl/vcl/epi -> sil, ao -> aa, ...); nothing folds -> None."""
    from phonecli.data.corpus import CorpusSpec
    from phonecli.data.phones import Vocabulary
    from phonecli.data.timit import FOLD_48_TO_39, PHONES48

    spec = CorpusSpec(name="timit", phone_set=tuple(PHONES48), scoring_map=FOLD_48_TO_39)
    symbols = Vocabulary(spec.phone_set).symbols
    scoring = ctc.scoring_ids(symbols, spec.fold)
    assert scoring[0] == 0 and scoring[symbols.index("cl")] == scoring[symbols.index("sil")]
    assert scoring[symbols.index("ao")] == scoring[symbols.index("aa")] != scoring[symbols.index("ae")]
    rng = random.Random(3)
    refs = [[rng.randrange(1, len(symbols)) for _ in range(rng.randint(1, 12))] for _ in range(60)]
    hyps = [[rng.randrange(1, len(symbols)) for _ in range(rng.randint(0, 12))] for _ in range(60)]
    words = lambda ids: " ".join(spec.fold([symbols[i] for i in ids]))  # noqa: E731
    want = 100 * jiwer.wer([words(r) for r in refs], [words(h) for h in hyps])
    assert ctc.phone_error_rate(refs, hyps, scoring) == pytest.approx(want, rel=1e-12)
    assert ctc.phone_error_rate(refs, hyps, scoring) < ctc.phone_error_rate(refs, hyps)   # merges forgive errors
    drop = CorpusSpec(phone_set=("a", "b", "c"), scoring_map={"c": ""})
    drop_ids = ctc.scoring_ids(Vocabulary(drop.phone_set).symbols, drop.fold)
    assert drop_ids == [0, 1, 2, -1] and ctc.fold_ids([3, 1, 3, 2], drop_ids) == [1, 2]
    assert ctc.scoring_ids(Vocabulary(("a", "b")).symbols, CorpusSpec(phone_set=("a", "b")).fold) is None


def test_loss_per_phone_equals_torch_mean_reduction():
    """torch's reduction="mean" divides each utterance's loss by its target length, then averages."""
    torch.manual_seed(0)
    lp = torch.randn(3, 12, 6).log_softmax(-1)
    lengths = torch.tensor([12, 9, 7])
    targets = [[1, 2, 2, 3], [4], [5, 1, 5]]
    flat, tl = ctc.flatten_targets(targets)
    per = ctc.ctc_loss_per_phone(lp, lengths, flat, tl)
    ref = F.ctc_loss(lp.transpose(0, 1), flat, lengths, tl, blank=0, reduction="mean")
    assert float(per.mean()) == pytest.approx(float(ref), rel=1e-6)
    one = F.ctc_loss(lp[1:2, :9].transpose(0, 1), torch.tensor([4]), torch.tensor([9]), torch.tensor([1]),
                     reduction="sum")
    assert float(per[1]) == pytest.approx(float(one), rel=1e-6)
    # the numpy-posterior form: same number, None where no finite loss exists, -inf floored
    x = lp[0].numpy()
    assert ctc.posterior_ctc_loss(x, targets[0]) == pytest.approx(float(per[0]), rel=1e-6)
    assert ctc.posterior_ctc_loss(x[:3], targets[0]) is None       # 4 phones + 1 repeat need 5 frames
    assert ctc.posterior_ctc_loss(x, []) is None
    y = x.copy()
    y[0, 3] = -np.inf
    assert math.isfinite(ctc.posterior_ctc_loss(y, targets[0]))


def test_best_epoch_rule_rounds_per_then_breaks_ties_on_loss():
    best = ctc.selection_key(40.0, 1.5)
    assert ctc.improves(40.0 + 1e-9, 1.4, best)       # float noise in the PER: the lower loss wins
    assert not ctc.improves(40.0 + 1e-9, 1.6, best)
    assert ctc.improves(39.9, 9.0, best)              # a real PER gain wins whatever the loss
    assert not ctc.improves(float("nan"), 0.1, best)  # NaN ranks last
    assert ctc.improves(float("nan"), float("nan"), None)


def test_device_resolution():
    assert ctc.resolve_device("cpu") == "cpu"
    assert ctc.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match=r"--device 'gpu': use auto, cpu, cuda, cuda:N or mps"):
        ctc.resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cuda:1: no CUDA device is visible"):
            ctc.resolve_device("cuda:1")


def test_stages_use_the_one_core():
    """No stage re-implements a CTC piece: the loss, min frames, greedy decoding, PER and device
    resolution are defined in phonecli/ctc.py only."""
    patterns = {
        r"F\.ctc_loss\(|functional\.ctc_loss\(": "CTC loss",
        r"def \w*min_frames\(": "min frames",
        r"def greedy_\w+\(": "greedy decoding",
        r"def _?resolve_device\(": "device resolution",
        r"def (phone_error_rate|corpus_per|utterance_per|edit_distance)\(": "PER",
        r"\.argmax\(-1\)|\.argmax\(axis=-?1\)": "greedy argmax",
    }
    offenders = []
    for f in ROOT.rglob("*.py"):
        if f.name == "ctc.py" and f.parent == ROOT:
            continue
        text = f.read_text()
        for pat, what in patterns.items():
            if re.search(pat, text):
                offenders.append(f"{f.relative_to(ROOT.parent)}: {what}")
    assert offenders == []
