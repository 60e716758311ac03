"""Typed stage configs (phonecli.config): the single source of every option. Command options equal config
fields, presets refuse unknown keys in one line and every preset key reaches the stage (probe, fine-tuning),
keyword overrides are validated, structural vs free is a property of the field."""

from __future__ import annotations

import json
from dataclasses import MISSING, fields

import pytest
import yaml
from click.testing import CliRunner

from phonecli.cli import main
from phonecli.config import (
    STAGES,
    EvaluateConfig,
    ExtractConfig,
    FinetuneConfig,
    LateFusionConfig,
    ProbeConfig,
    ReportConfig,
    flag_of,
)
from phonecli.errors import ConfigError, LayerSpecError

# each command: (click path, config class, the options that are inputs/outputs or execution, not config)
COMMANDS = [
    (("extract",), ExtractConfig, {"model", "data", "cache_root", "out"}),
    (("probe",), ProbeConfig, {"features", "data", "out", "jobs", "overwrite", "resume"}),
    (("fuse", "late"), LateFusionConfig, {"runs", "out", "n_jobs", "name", "no_plot", "overwrite", "resume"}),
    (("finetune",), FinetuneConfig, {"model", "data", "out", "overwrite", "resume"}),
    (("evaluate",), EvaluateConfig, {"runs"}),
    (("report",), ReportConfig, {"runs", "out_dir"}),
]


def _command(path):
    cmd = main
    for name in path:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("path, cls, extra", COMMANDS, ids=lambda x: x if isinstance(x, str) else None)
def test_command_options_are_the_config_fields(path, cls, extra):
    cmd = _command(path)
    params = {p.name: p for p in cmd.params}
    assert "threads" in params             # attached to every leaf command by cli._register (not a stage option)
    assert set(params) - extra - {"threads"} == set(cls.field_names())
    for f in fields(cls):
        p = params[f.name]
        assert flag_of(f) in p.opts                                   # the field's own flag
        if f.metadata.get("choices"):
            assert list(p.type.choices) == list(f.metadata["choices"])
        if f.default is MISSING:
            assert p.required
        elif f.default is not None and not p.multiple:
            assert p.default == f.default
    assert set(STAGES.values()) >= {cls}


def test_help_lists_generated_options():
    res = CliRunner().invoke(main, ["probe", "--help"])
    assert res.exit_code == 0
    for flag in ("--head", "--layers", "--weight-decay", "--dropout", "--patience", "--control"):
        assert flag in res.output


def test_overrides_are_validated_by_the_dataclass():
    assert ProbeConfig.build(head="mlp", lr=1).lr == 1.0
    cases = [(dict(head="cnn"), r"head \(--head\): 'cnn' is not one of linear, mlp"),
             (dict(lr=0), r"lr \(--lr\): 0.0 must be > 0"),
             (dict(epochs=2.5), r"epochs \(--epochs\): 2.5 is not an integer"),
             (dict(dropout=1.0), r"must be < 1"),
             (dict(device="gpu"), r"device \(--device\): 'gpu': use auto, cpu"),
             (dict(learning_rate=0.5), r"probe: unknown key 'learning_rate'; valid keys: head, layers, targets")]
    for kw, msg in cases:
        with pytest.raises(ConfigError, match=msg):
            ProbeConfig.build(**kw)
    with pytest.raises(LayerSpecError, match="named twice"):
        ProbeConfig.build(layers="6,6")
    with pytest.raises(LayerSpecError, match="not understood"):
        ProbeConfig.build(layers="6-")
    with pytest.raises(ConfigError, match=r"mode \(--mode\): 'partial': choose full"):
        FinetuneConfig.build(mode="partial")
    with pytest.raises(ConfigError, match=r"finetune: option mode \(--mode\) is required"):
        FinetuneConfig.build(lr=1e-4)
    with pytest.raises(ConfigError, match="not accepted here"):
        ExtractConfig.build(layers="weighted")
    assert LateFusionConfig.build(alphas=[0.3, 0.5], select_on="auc").to_dict() == {
        "alpha_grid": "0.3,0.5", "rule": "log-linear", "select_on": "dev_auc", "align": "repeat"}


def test_structural_is_a_property_of_the_field():
    assert {"lr", "mode", "targets", "seed", "epochs", "batch_seconds"} <= set(FinetuneConfig.structural_fields())
    assert not {"device", "save_steps", "trust_remote_code"} & set(FinetuneConfig.structural_fields())
    # a probe's epochs/patience are maxima of an early-stopped loop: a resume may extend them
    assert {"lr", "head", "layers", "seed", "batch_frames"} <= set(ProbeConfig.structural_fields())
    assert not {"epochs", "patience", "device", "memory"} & set(ProbeConfig.structural_fields())
    stored = ProbeConfig(lr=0.01).to_dict()
    assert ProbeConfig(lr=0.02, epochs=7).structural_changes(stored) == [("lr", 0.01, 0.02)]


def test_probe_api_refuses_bad_overrides_before_writing(tmp_path, tiny_corpus):
    from phonecli.probe import train_probe

    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        train_probe("unused.zarr", tiny_corpus, tmp_path / "r", epoch=3)
    assert not (tmp_path / "r").exists()


# -- presets -------------------------------------------------------------------------------------------

def _preset(tmp_path, data, runs, **extra):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"name": "p", "paths": {"data": str(data), "runs": "runs"},
                                 "encoders": {"fbank": {"model": "fbank"}}, "runs": runs, **extra}))
    return f


def test_preset_unknown_key_is_one_line_naming_it(tmp_path, tiny_corpus):
    f = _preset(tmp_path, tiny_corpus, [{"name": "a", "probe": {"features": ["fbank"], "head": "linear",
                                                                 "learning_rate": 0.5, "epoch": 3}}])
    res = CliRunner().invoke(main, ["run", str(f), "--plan"])
    assert res.exit_code == 1
    line = res.output.strip()
    assert len(line.splitlines()) == 1
    assert f"{f}: run 'a' probe: unknown keys 'epoch', 'learning_rate'; valid keys: head, layers," in line
    f = _preset(tmp_path, tiny_corpus, [{"name": "a", "probe": {"features": ["fbank"]}}],
                defaults={"probe": {"lr": "fast"}})
    res = CliRunner().invoke(main, ["run", str(f), "--plan"])
    assert res.exit_code == 1 and "p.yaml: run 'a' probe: probe option lr (--lr): 'fast' is not a number" in res.output
    f = _preset(tmp_path, tiny_corpus, [{"name": "a", "probe": {"features": ["fbank"]}, "seed_rwo": 3}])
    res = CliRunner().invoke(main, ["run", str(f), "--plan"])
    assert res.exit_code == 1 and "run 'a': unknown key 'seed_rwo'" in res.output
    f = _preset(tmp_path, tiny_corpus, [{"name": "a", "probe": {"features": ["fbank"]}}],
                encoders={"fbank": {"model": "fbank", "layers": "0,0"}})
    res = CliRunner().invoke(main, ["run", str(f), "--plan"])
    assert res.exit_code == 1 and "layer 0 is named twice" in res.output


def test_every_preset_key_reaches_the_probe_and_finetune_runs(tmp_path, tiny_corpus):
    """The issue's two silent drops: probe options beyond `head`, fine-tuning options beyond `mode`."""
    import torch
    from transformers import HubertConfig, HubertModel

    from phonecli.pipeline.experiment import run_experiment

    model = tmp_path / "tiny-hubert"
    torch.manual_seed(0)
    HubertModel(HubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             conv_dim=(8, 8, 16), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8),
                             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)).save_pretrained(model)
    probe = {"features": ["fbank"], "head": "mlp", "lr": 0.02, "epochs": 2, "patience": 1, "dropout": 0.3,
             "weight_decay": 0.01, "targets": "realized", "batch_frames": 3000, "device": "cpu"}
    ft = {"model": str(model), "mode": "full", "targets": "realized", "warmup_ratio": 0.3, "epochs": 1,
          "batch_seconds": 4.0, "lr": 1e-3, "device": "cpu", "weight_decay": 0.05}
    f = _preset(tmp_path, tiny_corpus, [{"name": "pr", "probe": probe}, {"name": "ft", "finetune": ft}],
                defaults={"evaluate": {"protocol": "seed", "ci": False}}, report=None)
    run_experiment(f, tmp_path, echo=lambda s: None, progress=False)
    got = json.loads((tmp_path / "runs" / "pr" / "run.json").read_text())["config"]
    for k, v in probe.items():
        if k != "features":
            assert got[k] == v, k
    got = json.loads((tmp_path / "runs" / "ft" / "run.json").read_text())["config"]
    for k, v in ft.items():
        if k != "model":
            assert got[k] == v, k
    assert got["model_source"] == str(model)
