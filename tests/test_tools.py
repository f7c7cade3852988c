"""The measurement scripts in tools/ (the figures docs/benchmarks.md quotes come from them): each
starts from a clean environment, finds the package from its own folder, and says what it
measures with --help. Measuring itself takes minutes and a quiet machine; it is not run here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = sorted((Path(__file__).resolve().parent.parent / "tools").glob("*.py"))


def test_every_tool_is_listed():
    assert [path.name for path in TOOLS] == [
        "adam_on_cpu.py",
        "allocator_faults.py",
        "model_throughput.py",
        "omp_wait.py",
        "pseudo_label_audit.py",
        "test_time_views.py",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("tool", TOOLS, ids=[path.stem for path in TOOLS])
def test_the_tool_runs_from_anywhere_and_explains_itself(tool, tmp_path):
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(tool), "--help"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
    first_line = tool.read_text().split('"""')[1].splitlines()[0].rstrip(".")
    assert first_line[:40] in " ".join(result.stdout.split())
