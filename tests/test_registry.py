"""The encoder registry (configs/models.yaml), name/directory resolution and `phonecli models`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from phonecli.cli import main
from phonecli.encoders.base import ExtractionError
from phonecli.encoders.registry import FAMILY_MODULES, get_adapter, load_registry, resolve

FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "checkpoints"

# Every row of the DESIGN encoder table (whisper-* as one row there; here the sizes).
DESIGN_ROWS = ["fbank", "hubert-large", "wavlm-base", "wavlm-base-plus", "wavlm-large", "wav2vec2-phoneme",
               "xls-r-300m", "xls-r-1b", "mms-1b", "data2vec-large", "distilhubert", "whisper-small",
               "w2v-bert-2", "qwen2-audio", "parakeet-ctc-1.1b", "speechtokenizer", "m-ctc-t"]

# Facts of the released Hub config.json / preprocessor_config.json files (from the model
# cards and configs as published; no network here): (class, states = num_hidden_layers + 1,
# hidden_size, do_normalize). Frame rate is 16000 / prod(conv_stride = 5,2,2,2,2,2,2) = 50.
SSL_FACTS = {
    "hubert-base": ("HubertModel", 13, 768, False),
    "hubert-large": ("HubertModel", 25, 1024, True),
    "distilhubert": ("HubertModel", 3, 768, False),
    "wavlm-base": ("WavLMModel", 13, 768, False),
    "wavlm-base-plus": ("WavLMModel", 13, 768, False),
    "wavlm-large": ("WavLMModel", 25, 1024, True),
    "wav2vec2-phoneme": ("Wav2Vec2Model", 25, 1024, True),
    "wav2vec2-phoneme-lv60": ("Wav2Vec2Model", 25, 1024, True),
    "xls-r-300m": ("Wav2Vec2Model", 25, 1024, True),
    "xls-r-1b": ("Wav2Vec2Model", 49, 1280, True),
    "mms-1b": ("Wav2Vec2Model", 49, 1280, True),
    "data2vec-large": ("Data2VecAudioModel", 25, 1024, True),
    "data2vec-large-pt": ("Data2VecAudioModel", 25, 1024, True),
}
# group-norm CNNs and data2vec's stacked position convolutions (see adapters/ssl.py)
NOT_PADDING_SAFE = {"hubert-base", "distilhubert", "wavlm-base", "wavlm-base-plus", "data2vec-large",
                    "data2vec-large-pt"}


def test_every_design_row_is_registered():
    reg = load_registry()
    missing = [n for n in DESIGN_ROWS if n not in reg]
    assert not missing
    for spec in reg.values():
        assert spec.family in FAMILY_MODULES, spec.name
        assert spec.status in ("ok", "optional", "removed"), spec.name
        assert spec.frame_rate > 0 and spec.layers >= 1 and spec.hidden_size >= 1, spec.name
    assert reg["m-ctc-t"].status == "removed" and "transformers 5" in reg["m-ctc-t"].notes
    assert reg["fbank"].source == "" and reg["qwen2-audio"].frame_rate == 50


@pytest.mark.parametrize("name", list(SSL_FACTS))
def test_ssl_rows_match_the_hub_configs(name):
    from phonecli.encoders.adapters.ssl import FAMILY_CLASSES

    spec = load_registry()[name]
    cls, states, hidden, normalize = SSL_FACTS[name]
    assert (spec.cls, spec.layers, spec.hidden_size, spec.frame_rate, spec.input) == (cls, states, hidden, 50, "raw")
    assert FAMILY_CLASSES[spec.family][0] == cls
    assert spec.extra["processor"] == {"do_normalize": normalize}
    assert ("not padding-safe" in spec.notes) is (name in NOT_PADDING_SAFE)
    # the row agrees with its conformance fixture (the checkpoint's config, tests/fixtures/checkpoints)
    fixture = FIXTURES / name
    cfg = json.loads((fixture / "config.json").read_text())
    assert spec.extra["pre_ln"] is bool(cfg.get("do_stable_layer_norm", False))
    pp = fixture / "preprocessor_config.json"
    if pp.exists():
        assert json.loads(pp.read_text())["do_normalize"] is normalize


def test_resolve_names_dirs_and_name_equals_dir(tmp_path):
    spec, source = resolve("hubert-large")
    assert source == "facebook/hubert-large-ls960-ft" and spec.family == "hubert"

    d = tmp_path / "my-wavlm"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "wavlm", "num_hidden_layers": 4, "hidden_size": 48,
                                               "architectures": ["WavLMForCTC"]}))
    spec, source = resolve(str(d))
    assert (spec.name, spec.family, spec.layers, spec.hidden_size) == ("my-wavlm", "wavlm", 5, 48)
    # checkpoint facts, not the family's: a bare directory has its own files
    assert source == str(d.resolve()) and "processor" not in spec.extra and "pre_ln" not in spec.extra
    assert "WavLMForCTC" in spec.notes

    spec, source = resolve(f"wavlm-large={d}")
    assert (spec.name, spec.layers, spec.extra["processor"]) == ("wavlm-large", 25, {"do_normalize": True})
    assert source == spec.source == str(d.resolve())


@pytest.mark.parametrize("model, message", [
    ("hubret-large", "unknown model 'hubret-large'; valid names: fbank, hubert-base, hubert-large"),
    ("hubert-large=/nonexistent/dir", "'/nonexistent/dir' is not a directory"),
])
def test_resolve_errors_are_one_line(model, message):
    with pytest.raises(ExtractionError) as e:
        resolve(model)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_directories(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExtractionError, match="no config.json"):
        resolve(str(empty))
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ExtractionError, match="model_type 'bert' is not a supported encoder family; supported: .*hubert"):
        resolve(str(bert))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ExtractionError, match="not a valid config.json"):
        resolve(str(broken))


def test_removed_model_says_so():
    with pytest.raises(ExtractionError, match="m-ctc-t: cannot be loaded: MCTCT was removed in transformers 5.0"):
        get_adapter("m-ctc-t")


def test_models_table_lists_every_row():
    res = CliRunner().invoke(main, ["models"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    footer = lines[-1]
    assert footer.startswith("layer indices (superb-v1): index 0 = input of the first layer") and "phonecli models --json" in footer
    lines = [ln for ln in lines[:-1] if ln.strip()]
    assert lines[0].split()[:8] == ["name", "source", "class", "input", "frames/s", "layers", "hidden", "status"]
    by_name = {ln.split()[0]: ln.split() for ln in lines[1:]}
    reg = load_registry()
    assert list(by_name) == list(reg)
    assert by_name["xls-r-1b"][1:7] == ["facebook/wav2vec2-xls-r-1b", "Wav2Vec2Model", "raw", "50", "49", "1280"]
    assert by_name["m-ctc-t"][7] == "removed" and by_name["parakeet-ctc-1.1b"][4] == "12.5"
    assert "MCTCT was removed in transformers 5.0" in res.output


def test_models_json():
    res = CliRunner().invoke(main, ["models", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    reg = load_registry()
    assert [r["name"] for r in rows] == list(reg)
    for r in rows:
        spec = reg[r["name"]]
        assert (r["source"], r["class"], r["input"], r["frame_rate"], r["layers"], r["hidden_size"], r["status"]) == (
            spec.source, spec.cls, spec.input, spec.frame_rate, spec.layers, spec.hidden_size, spec.status)
        # what each stored index is: the same descriptions extraction writes as layer_info
        assert r["layer_convention"] == "superb-v1"
        assert [li["index"] for li in r["layer_info"]] == list(range(spec.layers)), r["name"]
    hubert = next(r for r in rows if r["name"] == "hubert-large")
    assert hubert["family"] == "hubert" and hubert["processor"] == {"do_normalize": True}
    last = hubert["layer_info"][-1]
    assert last["name"] == "transformer.24 -> final LayerNorm" and "last_hidden_state" in last["note"]
    assert last["reference"].startswith("transformers 4.x hidden_states[24] (= last_hidden_state); s3prl")
    base = next(r for r in rows if r["name"] == "hubert-base")["layer_info"]
    assert base[0]["note"].startswith("CNN features -> projection + conv position embedding -> encoder LayerNorm")
    assert base[-1]["name"] == "transformer.12"
    qwen = next(r for r in rows if r["name"] == "qwen2-audio")["layer_info"][-1]
    assert "25 fps" in qwen["name"] and "repetition" in qwen["note"]
    assert next(r for r in rows if r["name"] == "m-ctc-t")["status"] == "removed"


def test_models_command_is_fast_and_never_imports_torch():
    code = ("import sys, time; t = time.perf_counter(); import phonecli.cli; "
            "from click.testing import CliRunner; "
            "r = CliRunner().invoke(phonecli.cli.main, ['models', '--json']); assert r.exit_code == 0, r.output; "
            "print(time.perf_counter() - t, 'torch' in sys.modules, 'transformers' in sys.modules)")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    wall = time.perf_counter() - t0
    assert out[1:] == ["False", "False"]
    # ~0.2 s on an idle 2-core machine; generous bound for a loaded CI box
    assert float(out[0]) < 3.0 and wall < 6.0
