"""`phonecli quickstart` end to end on the bundled sample corpus (offline), then a second call that skips it all."""

from __future__ import annotations

import csv
import json
import time

import pytest
from click.testing import CliRunner

from phonecli.cli import main

RUNS = ("fbank-linear", "fbank-mlp", "tiny-hubert-weighted", "late-fbank-linear+mlp")


@pytest.mark.slow
def test_quickstart_end_to_end_and_rerun_skips(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    out = tmp_path / "qs"
    res = CliRunner().invoke(main, ["quickstart", "--out", str(out)])
    assert res.exit_code == 0, res.output

    # every stage left its files: the tiny HuBERT saved locally, two complete caches, four evaluated runs, a report
    assert json.loads((out / "models" / "tiny-hubert" / "config.json").read_text())["model_type"] == "hubert"
    from phonecli.cache import FeatureCache

    caches = {p.name: FeatureCache.open(p) for p in (out / "cache").glob("*/*.zarr")}
    assert set(caches) == {"fbank.zarr", "tiny-hubert.zarr"} and all(c.is_complete for c in caches.values())
    assert caches["tiny-hubert.zarr"].layers == [0, 1, 2] and caches["tiny-hubert.zarr"].frame_rate == 50
    metrics = {r: json.loads((out / "runs" / r / "metrics.json").read_text()) for r in RUNS}
    assert json.loads((out / "runs" / "late-fbank-linear+mlp" / "run.json").read_text())["kind"] == "late-fusion"
    sweep = list(csv.DictReader(open(out / "runs" / "late-fbank-linear+mlp" / "sweep.csv")))
    assert len(sweep) == 11

    # meaningful, not just "it ran": an all-blank (or empty) output scores PER 100; the fbank MLP probe clearly beats it
    per = {r: metrics[r]["seed"]["task_a"]["per_all"] for r in RUNS}
    assert per["fbank-mlp"] < 80.0, per
    # the late fusion is chosen on dev, so it cannot be much worse on test than its better input
    assert per["late-fbank-linear+mlp"] <= min(per["fbank-linear"], per["fbank-mlp"]) + 10.0, per

    # the printed table is the report's summary: one row per run
    table = [ln for ln in res.output.splitlines() if ln.startswith("|")]
    assert table[0].startswith("| Model | Input | Task A PER (HQ)") and len(table) == 2 + len(RUNS)
    assert (out / "results" / "results.md").exists() and (out / "results" / "results.csv").exists()

    # a second call in the same directory skips every completed step and leaves the runs alone
    before = {r: (out / "runs" / r / "run.json").read_text() for r in RUNS}
    t0 = time.time()
    res2 = CliRunner().invoke(main, ["quickstart", "--out", str(out)])
    assert res2.exit_code == 0, res2.output
    assert res2.output.count("skipped") == 1 + 1 + 2 + 4 + 4      # prepare, build, 2 extracts, 4 runs, 4 evaluations
    assert {r: (out / "runs" / r / "run.json").read_text() for r in RUNS} == before
    assert time.time() - t0 < 60
