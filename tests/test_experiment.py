"""`phonecli run`: the seed-table plan offline (every row, estimated sizes), a tiny preset run twice (the second
run skips every completed step), re-running what a changed setting invalidates, bad presets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from phonecli.cli import main
from phonecli.pipeline.experiment import ExperimentError, load_experiment, plan, run_experiment

SEED_TABLE = Path(__file__).resolve().parent.parent / "phonecli" / "configs" / "experiments" / "seed-table.yaml"
SEED_LOG_ROWS = 19


def test_plan_seed_table_offline_lists_every_row_and_sizes(tmp_path):
    res = CliRunner().invoke(main, ["run", "seed-table.yaml", "--plan", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = res.output
    exp = yaml.safe_load(SEED_TABLE.read_text())
    rows = {r["seed_row"]: r for r in exp["runs"] if r.get("seed_row")}
    assert sorted(rows) == list(range(1, SEED_LOG_ROWS + 1))
    for n, r in rows.items():
        line = next(ln for ln in out.splitlines() if re.search(rf"\s{re.escape(r['name'])}\s", ln))
        if r.get("unavailable"):
            assert "unavailable" in line and "transformers 5" in line
        else:
            assert f"seed row {n} (PER {r['seed_result']['per_hq']})" in line
    assert "sizes assume 5000 utterances / 5.6 h" in out
    # wavlm-large, all 25 states x 1024 x float16 at 50 fps over 5.6 h: 5.6 * 3600 * 50 * 25 * 1024 * 2 bytes
    wl = next(ln for ln in out.splitlines() if re.match(r"\d+\s+extract\s+wavlm-large\s", ln))
    assert f"{5.6 * 3600 * 50 * 25 * 1024 * 2 / 1e9:.1f} GB" in wl and "25 layers x 1024 x 2 B" in wl
    assert re.search(r"extract\s+hubert-large\s.*hubert-large\.L24\.zarr.*1 layers", out)     # layers: last
    assert "1 unavailable" in out and not (tmp_path / "cache").exists()        # a plan writes nothing


def test_plan_uses_manifest_durations_when_data_exists(tiny_corpus, tmp_path):
    from phonecli.data.manifest import Manifest

    exp = load_experiment(_write_preset(tmp_path, tiny_corpus))
    steps, corpus, _ = plan(exp, tmp_path)
    m = Manifest.load(tiny_corpus)
    seconds = sum(u.duration for u in m)
    assert corpus.known and corpus.utterances == len(m) and corpus.seconds == pytest.approx(seconds)
    ext = next(s for s in steps if s.kind == "extract")
    assert ext.est_bytes == int(seconds * 100 * 1 * 80 * 2)            # fbank: 100 fps, 1 state x 80, float16
    assert ext.target == str(tmp_path / "cache" / m.corpus_id / "fbank.zarr")
    assert [s.status for s in steps if s.name == "gone"] == ["unavailable"]


def _write_preset(tmp_path: Path, data: Path, epochs: int = 2) -> Path:
    preset = {
        "name": "tiny",
        "paths": {"data": str(data), "cache": "cache", "runs": "runs", "results": "results"},
        "defaults": {"extract": {"device": "cpu"},
                     "probe": {"device": "cpu", "epochs": epochs, "batch_frames": 2000, "patience": 2, "lr": 0.003},
                     "evaluate": {"protocol": "seed", "ci": False}},
        "encoders": {"fbank": {"model": "fbank"}},
        "runs": [
            {"name": "lin", "probe": {"features": ["fbank"], "head": "linear"}},
            {"name": "mlp", "probe": {"features": ["fbank"], "head": "mlp", "epochs": 2}},
            {"name": "late", "late": {"runs": ["lin", "mlp"], "alphas": "0,0.5,1"}},
            {"name": "gone", "unavailable": "needs a removed model", "probe": {"features": ["fbank"], "head": "linear"}},
        ],
        "report": {"plots": False},
    }
    f = tmp_path / "tiny.yaml"
    f.write_text(yaml.safe_dump(preset))
    return f


def test_tiny_preset_second_run_skips_completed_steps(tiny_corpus, tmp_path):
    f = _write_preset(tmp_path, tiny_corpus)
    out = tmp_path / "out"
    lines: list[str] = []
    steps = run_experiment(f, out, echo=lines.append)
    ran = {(s.kind, s.name) for s in steps if s.status == "run"}
    assert ("extract", "fbank") in ran and ("run", "late") in ran and ("report", "tiny") in ran
    assert any("gone: unavailable: needs a removed model" in ln for ln in lines)
    run_json = {n: (out / "runs" / n / "run.json").read_text() for n in ("lin", "mlp", "late")}
    metrics = {n: (out / "runs" / n / "metrics.json").read_text() for n in ("lin", "mlp", "late")}
    assert json.loads(run_json["late"])["experiment"]["preset"] == "tiny"
    assert (out / "results" / "results.md").exists()

    lines = []
    steps = run_experiment(f, out, echo=lines.append)
    assert [s.kind for s in steps if s.status == "run"] == ["report"]
    skipped = [ln for ln in lines if "skipped" in ln]
    assert len(skipped) == 1 + 3 + 3           # extract, 3 runs, 3 evaluations
    assert any("extract fbank: skipped (cache exists and is complete)" in ln for ln in skipped)
    assert any("probe lin: skipped (run exists and is complete (same settings))" in ln for ln in skipped)
    for n in run_json:
        assert (out / "runs" / n / "run.json").read_text() == run_json[n]
        assert (out / "runs" / n / "metrics.json").read_text() == metrics[n]

    # a changed setting redoes that run and everything downstream of it, nothing else
    f2 = _write_preset(tmp_path, tiny_corpus, epochs=3)
    steps = run_experiment(f2, out, echo=lambda s: None)
    again = {(s.kind, s.name) for s in steps if s.status == "run"}
    assert again == {("run", "lin"), ("run", "late"), ("evaluate", "lin"), ("evaluate", "late"), ("report", "tiny")}
    assert json.loads((out / "runs" / "lin" / "run.json").read_text())["config"]["epochs"] == 3


def test_bad_presets_are_one_clear_line(tmp_path, tiny_corpus):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nruns:\n  - {name: a, probe: {features: [nope], head: linear}}\n")
    with pytest.raises(ExperimentError, match="probe feature 'nope' is not under `encoders`"):
        load_experiment(bad)
    bad.write_text("name: x\nruns:\n  - {name: a, late: {runs: [a, b]}}\n")
    with pytest.raises(ExperimentError, match="late-fusion input 'b' is not a run"):
        load_experiment(bad)
    bad.write_text("name: x\nruns: [{name: a}]\n")
    with pytest.raises(ExperimentError, match="exactly one of probe / finetune / late"):
        load_experiment(bad)
    res = CliRunner().invoke(main, ["run", str(tmp_path / "missing.yaml"), "--plan"])
    assert res.exit_code == 1 and "no such preset file" in res.output and len(res.output.strip().splitlines()) == 1
