"""The typed run record (run.json v1 read and written unchanged, every run kind) and the one run lifecycle
(probe, fuse, finetune): a finished run is never replaced silently, --overwrite replaces it whole with its
derived files, --resume continues, readers refuse a half-written run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from phonecli.cli import main
from phonecli.errors import RunError
from phonecli.runs import DERIVED_FILES, Run, RunRecord

V1 = Path(__file__).parent / "data" / "run_v1"
KINDS = ("probe", "early-fusion", "gated-fusion", "late-fusion", "finetune")


def _round_trip_text(text: str, where: Path) -> str:
    record = RunRecord.from_json(json.loads(text), where)
    return json.dumps(record.to_json(), indent=2, default=str)


@pytest.mark.parametrize("kind", KINDS)
def test_v1_files_written_before_the_record_round_trip_unchanged(kind, tmp_path):
    """run.json files written by the code before this record existed (tests/data/run_v1, one per kind)."""
    f = V1 / f"{kind}.json"
    text = f.read_text()
    assert _round_trip_text(text, f) == text
    d = tmp_path / kind
    d.mkdir()
    (d / "run.json").write_text(text)
    run = Run.open(d)                               # no status (or "complete"): a finished run
    assert run.kind == kind and run.record.config == json.loads(text)["config"]
    assert isinstance(run.frame_rate, float) and run.record.sources == json.loads(text)["sources"]
    run.save_info()
    assert (d / "run.json").read_text() == text     # written back byte for byte
    assert run.info["selection"] == json.loads(text)["selection"]


def test_runs_written_now_round_trip_for_every_kind(tiny_corpus, tmp_path):
    """Runs of every kind made by the stages today read back into the same record and the same bytes."""
    import torch
    from transformers import HubertConfig, HubertModel

    from phonecli.data.manifest import Manifest
    from phonecli.finetune import train as ft
    from phonecli.fuse import fuse_late
    from phonecli.probe import train_probe
    from phonecli.probe.features import ArrayStream

    m = Manifest.load(tiny_corpus)
    rng = np.random.default_rng(0)

    def stream(name):
        feats = {u.utt_id: rng.standard_normal((2, int(u.duration * 50), 8)).astype(np.float32) for u in m}
        return ArrayStream(feats, {u.utt_id: u.split for u in m}, frame_rate=50.0, corpus_id=m.corpus_id, name=name)

    fast = dict(epochs=2, patience=2, progress=False, device="cpu")
    a, b = stream("a"), stream("b")
    made = {"probe": train_probe(a, tiny_corpus, tmp_path / "probe", head="mlp", **fast),
            "early-fusion": train_probe([a, b], tiny_corpus, tmp_path / "early", **fast),
            "gated-fusion": train_probe([a, b], tiny_corpus, tmp_path / "gated", head="gated", **fast)}
    other = train_probe(stream("c"), tiny_corpus, tmp_path / "probe2", **fast)
    made["late-fusion"] = fuse_late([made["probe"], other], tmp_path / "late", alphas="0,1", n_jobs=1, plot=False)
    torch.manual_seed(0)
    HubertModel(HubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             conv_dim=(8, 8, 16), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8),
                             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)).save_pretrained(tmp_path / "h")
    made["finetune"] = ft.finetune(str(tmp_path / "h"), tiny_corpus, tmp_path / "ft", mode="full", epochs=1, lr=1e-3,
                                   batch_seconds=4.0, device="cpu", progress=False).run
    for kind, run in made.items():
        f = run.path / "run.json"
        text = f.read_text()
        assert run.kind == kind and json.loads(text)["status"] == "complete"
        assert _round_trip_text(text, f) == text
        assert Run.open(run.path).record == run.record


# -- the lifecycle through the CLI --------------------------------------------------------------------

def _probe(cache, data, out, *extra):
    return CliRunner().invoke(main, ["probe", "--features", str(cache), "--data", str(data), "--head", "linear",
                                     "--epochs", "2", "--patience", "2", "--device", "cpu", "--out", str(out), *extra])


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_a_finished_probe_is_never_replaced_silently(tiny_fbank, tiny_corpus, tmp_path):
    out = tmp_path / "r"
    assert _probe(tiny_fbank, tiny_corpus, out).exit_code == 0
    ev = CliRunner().invoke(main, ["evaluate", str(out), "--no-ci"])
    assert ev.exit_code == 0, ev.output
    assert all((out / f).exists() for f in DERIVED_FILES)
    before = _snapshot(out)

    again = _probe(tiny_fbank, tiny_corpus, out, "--lr", "0.01")
    assert again.exit_code == 1 and _snapshot(out) == before
    assert again.output.strip() == (f"Error: {out}: holds a finished probe run; pass --overwrite to replace it (its "
                                    "metrics, predictions and plots go too), or choose another --out")
    # --resume of a finished run: nothing to do, nothing touched
    res = _probe(tiny_fbank, tiny_corpus, out, "--resume")
    assert res.exit_code == 0 and _snapshot(out) == before

    # --overwrite: the new run replaces the old whole; the old model's metrics/predictions/phone scores are gone
    res = _probe(tiny_fbank, tiny_corpus, out, "--overwrite", "--lr", "0.01")
    assert res.exit_code == 0, res.output
    assert not any((out / f).exists() for f in DERIVED_FILES)
    run = Run.open(out)
    assert run.record.status == "complete" and run.record.config["lr"] == 0.01
    assert not (out / "checkpoints").exists()
    # the report evaluates the new model afresh (it would otherwise plot the old predictions)
    rep = CliRunner().invoke(main, ["report", str(out), "--out", str(tmp_path / "res"), "--bootstrap", "20"])
    assert rep.exit_code == 0, rep.output
    assert json.loads((out / "metrics.json").read_text())["posteriors"]["test"]["mtime_ns"] == \
        run.posteriors_path("test").stat().st_mtime_ns


def test_structural_change_on_resume_and_half_written_runs_are_refused(tiny_fbank, tiny_corpus, tmp_path):
    out = tmp_path / "r"
    assert _probe(tiny_fbank, tiny_corpus, out).exit_code == 0
    run = Run.open(out)
    run.record.status = "running"                  # as a killed run leaves it
    run.save_info()
    res = _probe(tiny_fbank, tiny_corpus, out)
    assert res.exit_code == 1 and "holds an interrupted probe run; pass --resume to continue it" in res.output
    res = _probe(tiny_fbank, tiny_corpus, out, "--resume", "--lr", "0.5")
    assert res.exit_code == 1
    assert res.output.strip().endswith("--resume with lr=0.5 but the run was started with 0.001; rerun with the "
                                       "original options, or pass --overwrite to start again")
    # readers refuse it in one line: evaluate, fuse (as an input), report (skipped with the reason)
    ev = CliRunner().invoke(main, ["evaluate", str(out)])
    assert ev.exit_code == 1 and "the run is not complete (status 'running'" in ev.output
    assert len(ev.output.strip().splitlines()) == 1
    fu = CliRunner().invoke(main, ["fuse", "late", str(out), str(out), "--out", str(tmp_path / "f")])
    assert fu.exit_code == 1 and "the run is not complete" in fu.output
    with pytest.raises(RunError, match="not complete"):
        Run.open(out)
    # a free option may change on resume (device, epochs): it continues and completes
    res = _probe(tiny_fbank, tiny_corpus, out, "--resume", "--epochs", "3")
    assert res.exit_code == 0, res.output
    assert Run.open(out).record.status == "complete"


def test_a_directory_that_is_not_a_run_is_never_deleted(tiny_fbank, tiny_corpus, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for extra in ((), ("--overwrite",)):
        res = _probe(tiny_fbank, tiny_corpus, out, *extra)
        assert res.exit_code == 1 and "holds files but no run.json, so it is not a run" in res.output
    assert (out / "notes.txt").read_text() == "keep me"
    res = _probe(tiny_fbank, tiny_corpus, tmp_path / "none", "--resume")
    assert res.exit_code == 1 and "no run to resume here" in res.output


def test_fuse_late_follows_the_same_lifecycle(tiny_fbank, tiny_corpus, tmp_path):
    for name, lr in (("a", "0.001"), ("b", "0.003")):
        assert _probe(tiny_fbank, tiny_corpus, tmp_path / name, "--lr", lr).exit_code == 0
    args = ["fuse", "late", str(tmp_path / "a"), str(tmp_path / "b"), "--alphas", "0,0.5,1", "--jobs", "1",
            "--no-plot", "--out", str(tmp_path / "f")]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert CliRunner().invoke(main, ["evaluate", str(tmp_path / "f"), "--no-ci"]).exit_code == 0
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "holds a finished late-fusion run; pass --overwrite" in res.output
    assert (tmp_path / "f" / "metrics.json").exists()
    res = CliRunner().invoke(main, args + ["--overwrite", "--rule", "linear"])
    assert res.exit_code == 0, res.output
    assert not any((tmp_path / "f" / f).exists() for f in DERIVED_FILES)
    assert Run.open(tmp_path / "f").record.config["rule"] == "linear"


def test_finetune_overwrite_and_resume_flags_exclude_each_other(tiny_corpus, tmp_path):
    res = CliRunner().invoke(main, ["finetune", "--model", "x", "--data", str(tiny_corpus), "--mode", "full",
                                    "--out", str(tmp_path / "r"), "--overwrite", "--resume", "--device", "cpu"])
    assert res.exit_code == 1 and "--overwrite and --resume exclude each other" in res.output
