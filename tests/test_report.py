"""`phonecli report`: results.md (seed summary table + full table), results.csv, plots."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from conftest import make_tiny_corpus
from phonecli.cli import main
from phonecli.data.manifest import Manifest
from phonecli.evaluate import evaluate_run
from phonecli.evaluate.describe import describe
from test_evaluate_run import make_run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_corpus")
    make_tiny_corpus(root, n_train=24, n_dev=15, n_test=24, seed=5)
    m = Manifest.load(root)
    base = tmp_path_factory.mktemp("report_runs")
    a = make_run(base / "fbank-linear", m)                                     # PER > 0 (realized phones)
    b = make_run(base / "hubert-w", m, target="canonical",                     # PER = 0 on every utterance
                 config={"head": "weighted", "layers": "weighted"},
                 sources=[{"cache": "/c/abc/hubert-large.zarr", "fingerprint": "x"}])
    (b.path / "layer_weights.json").write_text(json.dumps({"layers": list(range(5)),
                                                           "weights": [0.1, 0.3, 0.3, 0.2, 0.1]}))
    c = make_run(base / "late", m, splits=("dev", "test"), kind="late-fusion", config={"rule": "log-linear"},
                 sources=[{"run": str(a.path)}, {"run": str(b.path)}])
    evaluate_run(a.path, n_bootstrap=50)
    evaluate_run(b.path, n_bootstrap=50)
    return m, a, b, c            # c has no metrics.json: the report evaluates it first


def _md_table(text: str, header_start: str) -> list[list[str]]:
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return [rows[0]] + rows[2:]       # drop the alignment row


def test_describe_reads_model_input_and_note_defensively(runs):
    _, a, b, c = runs
    assert describe(a.info) == ("fbank (linear)", "Fbank (80)", "probe, head linear")
    model, inp, note = describe(b.info)
    assert (model, inp) == ("hubert-large (weighted)", "Raw Waveform") and "layers weighted" in note
    model, inp, _ = describe(c.info)
    assert model == "Late fusion (fbank (linear) + hubert-large (weighted))"
    assert inp == "Fbank (80) + Raw Waveform"
    assert describe({"kind": "finetune", "config": None, "sources": [{}]})[0] == "?"


def test_report_cli_writes_tables_csv_and_plots(runs, tmp_path):
    _, a, b, c = runs
    out = tmp_path / "results"
    res = CliRunner().invoke(main, ["report", str(a.path), str(b.path), str(c.path), "--out", str(out),
                                    "--bootstrap", "30"])
    assert res.exit_code == 0, res.output
    assert (c.path / "metrics.json").exists()           # evaluated on the fly
    metrics = {r.name: json.loads((r.path / "metrics.json").read_text()) for r in (a, b, c)}
    md = (out / "results.md").read_text()
    summary = _md_table(md, "| Model |")
    assert summary[0] == ["Model", "Input", "Task A PER (HQ)", "Task B Pearson", "Task C AUC", "Note"]
    rows = summary[1:]
    assert len(rows) == 3
    def margin(m, metric, fmt):            # the report's " (+x)": margin over the floor
        v = m["margins"][metric]["margin"]
        return "" if v is None else f" ({'+' if v >= 0 else '−'}{fmt.format(abs(v))})"

    mh = metrics["hubert-w"]["seed"]
    assert rows[0][0] == "hubert-large (weighted)"                                 # sorted by PER, best in bold
    assert rows[0][2] == "**0.00**" + margin(mh, "per_hq", "{:.2f}")
    by_model = {r[0]: r for r in rows}
    fb = by_model["fbank (linear)"]
    ma = metrics["fbank-linear"]["seed"]
    assert fb[2] == f"{ma['task_a']['per_hq']:.2f}" + margin(ma, "per_hq", "{:.2f}")
    assert fb[3].replace("*", "") == f"{ma['task_b']['pearson']:.4f}" + margin(ma, "pearson", "{:.4f}")
    assert fb[4].replace("*", "") == f"{ma['task_c']['auc']:.4f}" + margin(ma, "auc", "{:.4f}")
    # margins are value vs floor (PER: floor - value)
    assert ma["margins"]["per_hq"]["margin"] == pytest.approx(
        ma["floors"]["most_frequent_phone"]["per_hq"] - ma["task_a"]["per_hq"])
    # the report opens with the corpus; this hand-made corpus does not say it is real: no anchors
    corpus = metrics["fbank-linear"]["corpus"]
    assert md.splitlines()[2].startswith("- Corpus: **speechocean762** (synthetic or real: not recorded")
    assert "source `tiny-test`" in md.splitlines()[2] and corpus["corpus_id"] in md.splitlines()[2]
    assert f"train {corpus['splits']['train']['utterances']} utterances / " in md
    assert "GOPT 0.612" not in md and "Literature anchors (SpeechOcean762) are not shown" in md
    floors = {r[0]: r for r in _md_table(md, "| Runs |")[1:]}   # one row per run: late fusion fits on dev
    assert floors["fbank-linear"][2] == f"{ma['floors']['most_frequent_phone']['per_hq']:.2f}"
    assert floors["late"][1:6] == floors["fbank-linear"][1:6]       # seed floors: same test utterances
    assert metrics["late"]["phone"]["floors"]["no_audio"]["fit_on"] == "dev-crossfit"
    assert fb[5] == "probe, head linear"
    full = _md_table(md, "| Run |")
    assert "PCC GOP" in full[0] and "MDD F1" in full[0]
    fl = {r[0]: r for r in full[1:]}["fbank-linear"]
    lo, hi = ma["task_a"]["per_hq_ci95"]
    assert fl[1] == f"{ma['task_a']['per_hq']:.2f} [{lo:.2f}, {hi:.2f}]" + margin(ma, "per_hq", "{:.2f}")
    with open(out / "results.csv") as f:
        table = {r["run"]: r for r in csv.DictReader(f)}
    assert set(table) == {"fbank-linear", "hubert-w", "late"}
    for name, m in metrics.items():
        assert float(table[name]["per_hq"]) == pytest.approx(m["seed"]["task_a"]["per_hq"])
        assert float(table[name]["mdd_auc"]) == pytest.approx(m["phone"]["mdd_auc"])
        assert float(table[name]["pcc_gop_ci_lo"]) == pytest.approx(m["phone"]["pcc_gop_ci95"][0])
        assert float(table[name]["mdd_auc_margin"]) == pytest.approx(m["phone"]["margins"]["mdd_auc"]["margin"])
        assert table[name]["corpus_id"] == m["corpus"]["corpus_id"]
    assert table["late"]["regressor_fit_on"] == "dev-crossfit"
    for png in ("roc_utterance.png", "roc_phone.png", "layer_weights.png", "per_phone_error.png",
                "confusion_fbank-linear.png", "confusion_hubert-w.png", "confusion_late.png"):
        assert (out / png).read_bytes()[:8] == PNG, png
        assert f"]({png})" in md
    assert "| Model | Input | Task A PER (HQ) | Task B Pearson | Task C AUC | Note |" in res.output


def test_report_errors_are_one_clear_line(runs, tmp_path):
    m, a, _, _ = runs
    fresh = make_run(tmp_path / "fresh", m, splits=("dev", "test"))
    res = CliRunner().invoke(main, ["report", str(fresh.path), "--out", str(tmp_path / "o"), "--no-evaluate"])
    assert res.exit_code != 0 and "no metrics.json; run `phonecli evaluate" in res.output
    res = CliRunner().invoke(main, ["report", str(tmp_path / "absent"), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "not a run directory" in res.output
    # one broken run among good ones is skipped and listed, not fatal
    res = CliRunner().invoke(main, ["report", str(a.path), str(tmp_path / "absent"), "--out", str(tmp_path / "o3"),
                                    "--no-plots"])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "o3" / "results.md").read_text()
    assert "## Skipped runs" in md and "absent" in md and "not a run directory" in md
    (a.path / "layer_weights.json").write_text("{not json")       # optional file: ignored, not fatal
    res = CliRunner().invoke(main, ["report", str(a.path), "--out", str(tmp_path / "o2"), "--no-plots"])
    assert res.exit_code == 0, res.output
    assert not list((tmp_path / "o2").glob("*.png"))


def test_describe_late_fusion_of_runs_that_no_longer_exist(tmp_path):
    info = {"kind": "late-fusion", "config": {"rule": "log-linear"},
            "sources": [{"run": str(tmp_path / "gone-a"), "name": "hubert-w"}, {"run": str(tmp_path / "gone-b")}]}
    model, inp, note = describe(info)
    assert model == "Late fusion (hubert-w + gone-b)" and inp == "?" and note == "late-fusion, rule log-linear"


def test_layer_weights_json_in_both_formats(tmp_path):
    from phonecli.evaluate.plots import read_layer_weights

    f = tmp_path / "layer_weights.json"
    f.write_text(json.dumps({"layers": [0, 1, 2], "weights": [0.2, 0.5, 0.3]}))
    assert read_layer_weights(f) == [(None, [0, 1, 2], [0.2, 0.5, 0.3])]
    f.write_text(json.dumps({"streams": [
        {"source": "/c/x/hubert-large.zarr", "layers": [0, 1], "weights": [0.4, 0.6]},
        {"source": "/c/x/wavlm-large.zarr", "layers": [3], "weights": [1.0]}]}))
    assert read_layer_weights(f) == [("hubert-large", [0, 1], [0.4, 0.6]), ("wavlm-large", [3], [1.0])]
    f.write_text(json.dumps({"layers": [0, 1], "weights": [1.0]}))      # inconsistent: ignored
    assert read_layer_weights(f) == []
    assert read_layer_weights(tmp_path / "absent.json") == []
