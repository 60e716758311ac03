"""The README's "Python API" snippet runs as written (in a fresh directory) and produces what it says."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_api_snippet_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    section = text.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    assert 8 <= len([ln for ln in code.splitlines() if ln.strip() and not ln.startswith("from ")]) <= 12
    monkeypatch.chdir(tmp_path)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(code, "README.md (Python API)", "exec"), {})
    finally:
        torch.set_num_threads(n)
    out = capsys.readouterr().out
    assert out.lstrip().startswith("| Model")          # the summary table
    for run in ("linear", "mlp", "late"):
        assert (tmp_path / "runs" / run / "metrics.json").exists()
    assert (tmp_path / "results" / "results.md").exists() and (tmp_path / "results" / "results.csv").exists()
