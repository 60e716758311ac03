"""An `s3://` feature cache against a real S3-compatible server on 127.0.0.1 (moto's server mode, one
process for the session: see ``s3_server`` in conftest.py).

extract -> cache verify -> probe -> evaluate on an `s3://` cache give the same cache, posteriors and
metrics as on a local directory; a killed-then-resumed extraction, two concurrent extractions and
two torchrun nodes leave an `s3://` store equal to one clean local run; credentials come only from
the environment or the standard AWS config files and never end up in the cache or the run files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from phonecli.cli import main
from test_extract_processes import (  # noqa: F401  (shared fixture and helpers)
    _env, _extract_args, _store_in, assert_same_cache, kill_mid_run_then_resume, reference,
    torchrun_two_nodes, two_concurrent_extractions,
)

PROBE = ["--head", "mlp", "--epochs", "2", "--patience", "2", "--device", "cpu", "--batch-frames", "2000"]


def cli(*args: str) -> str:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def s3_pipeline(s3_server, tiny_corpus, reference, tmp_path_factory):
    """The whole pipeline twice, on an `s3://` cache and on the local reference cache:
    ``{"url", "local": reference path, "runs": {"s3": dir, "local": dir}}``."""
    import fsspec

    bucket = "phonecli-pipeline"
    fsspec.filesystem("s3", use_listings_cache=False, skip_instance_cache=True).mkdir(bucket)
    root = tmp_path_factory.mktemp("s3_pipeline")
    out = cli(*_extract_args(tiny_corpus, f"s3://{bucket}/cache"))
    url = out.strip().splitlines()[-1]
    runs = {}
    for name, cache in (("s3", url), ("local", str(reference))):
        runs[name] = root / f"probe-{name}"
        cli("probe", "--features", cache, "--data", str(tiny_corpus), "--out", str(runs[name]), *PROBE)
        cli("evaluate", str(runs[name]), "--protocol", "seed", "--no-ci")
    return {"url": url, "bucket": bucket, "local": reference, "runs": runs}


def test_extract_verify_probe_evaluate_on_s3_equal_local(s3_pipeline, tiny_corpus, reference):
    from phonecli.cache import FeatureCache

    url = s3_pipeline["url"]
    assert url == _store_in(f"s3://{s3_pipeline['bucket']}/cache", reference)
    assert_same_cache(reference, url)
    assert cli("cache", "verify", url).strip() == f"ok: {url}"
    runs = s3_pipeline["runs"]
    s3_run, local_run = (json.loads((runs[k] / "run.json").read_text()) for k in ("s3", "local"))
    assert s3_run["sources"][0]["cache"] == url and s3_run["sources"][0]["dtype"] == "float16"
    from phonecli.runs import Run

    for split in ("dev", "test"):
        a, b = Run.open(runs["s3"]).read_posteriors(split), Run.open(runs["local"]).read_posteriors(split)
        assert list(a) == list(b) == FeatureCache.open(url).utterance_ids(split)
        for u in a:
            np.testing.assert_array_equal(a[u], b[u])   # same bytes in, same CPU arithmetic
    m_s3, m_local = (json.loads((runs[k] / "metrics.json").read_text()) for k in ("s3", "local"))
    assert m_s3["seed"] == m_local["seed"]


def test_cache_and_runs_hold_no_secret(s3_pipeline, s3_server):
    """Every object of the bucket (metadata, markers, index, chunks) and every run file is free of the
    access key id, the secret and the endpoint's credentials: phonecli only ever saw them in the environment."""
    import fsspec

    fs = fsspec.filesystem("s3", use_listings_cache=False, skip_instance_cache=True)
    keys = fs.find(s3_pipeline["bucket"])
    assert any(k.endswith("/zarr.json") for k in keys) and any("/done/" in k for k in keys)
    blobs = {k: fs.cat_file(k) for k in keys}
    blobs.update({str(p): p.read_bytes() for d in s3_pipeline["runs"].values() for p in Path(d).rglob("*")
                  if p.is_file()})
    for secret in (s3_server["key"], s3_server["secret"]):
        leaked = [k for k, v in blobs.items() if secret.encode() in v]
        assert not leaked, leaked
    root = json.loads(blobs[next(k for k in keys if k.endswith(".zarr/zarr.json"))])["attributes"]
    assert not {k.lower() for k in json.dumps(root).split('"')} & {"aws_access_key_id", "aws_secret_access_key",
                                                                 "key", "secret", "token"}


def test_credentials_only_from_environment_or_aws_config(s3_pipeline, s3_server, tmp_path):
    url = s3_pipeline["url"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    info = [sys.executable, "-m", "phonecli", "cache", "info", url, "--json"]
    # 1. the standard config files: ~/.aws/config (endpoint_url, region) + ~/.aws/credentials
    (tmp_path / "config").write_text(f"[default]\nregion = us-east-1\nendpoint_url = {s3_server['endpoint']}\n")
    (tmp_path / "credentials").write_text(f"[default]\naws_access_key_id = {s3_server['key']}\n"
                                          f"aws_secret_access_key = {s3_server['secret']}\n")
    files = {**base, "AWS_CONFIG_FILE": str(tmp_path / "config"), "AWS_EC2_METADATA_DISABLED": "true",
             "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials")}
    res = subprocess.run(info, env=files, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["complete"] is True
    # 2. no credentials anywhere: one line saying where to put them, no traceback
    (tmp_path / "credentials").write_text("")
    res = subprocess.run(info, env=files, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    lines = [x for x in res.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "no usable credentials" in lines[0] and "AWS_ACCESS_KEY_ID" in lines[0], res.stderr
    # 3. credentials in the URL are refused before anything is contacted (they would land in run.json)
    leaky = url.replace("s3://", f"s3://{s3_server['key']}:{s3_server['secret']}@")
    res = CliRunner().invoke(main, ["cache", "info", leaky])
    assert res.exit_code != 0 and "carries credentials" in res.output and s3_server["secret"] not in res.output


def test_s3_kill9_then_resume_equals_one_clean_run(s3_bucket, tiny_corpus, reference):
    kill_mid_run_then_resume(tiny_corpus, f"{s3_bucket}/cache", reference)


def test_s3_two_concurrent_extractions_equal_one_clean_run(s3_bucket, tiny_corpus, reference):
    two_concurrent_extractions(tiny_corpus, f"{s3_bucket}/cache", reference)


def test_s3_torchrun_two_nodes_equal_one_clean_run(s3_bucket, tiny_corpus, reference):
    torchrun_two_nodes(tiny_corpus, f"{s3_bucket}/cache", reference)
