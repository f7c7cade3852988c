"""The documents make no claim that a test does not back: every test docs/robustness.md names
exists in this suite, and every case there names at least one."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO

ROBUSTNESS = REPO / "docs" / "robustness.md"
REFERENCE = re.compile(r"`(test_\w+\.py::test_\w+(?:\[[^\]`]*\])?)`")


def collected_tests() -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return {line.removeprefix("tests/") for line in result.stdout.splitlines() if "::" in line}


@pytest.mark.slow
def test_every_case_in_robustness_md_names_tests_that_exist():
    tests = collected_tests()
    rows = [
        line for line in ROBUSTNESS.read_text().splitlines() if re.match(r"^\| \d+[a-z]? \|", line)
    ]
    assert len(rows) >= 65, "the case tables were not found"
    missing = []
    for row in rows:
        references = REFERENCE.findall(row)
        assert references, f"a case without a test: {row[:80]}"
        for reference in references:
            if reference.endswith("[*]"):
                prefix = reference[:-2]
                found = any(test.startswith(prefix) for test in tests)
            else:
                found = reference in tests
            if not found:
                missing.append(reference)
    assert not missing, f"named in docs/robustness.md but not in the suite: {missing}"
    numbers = [row.split("|")[1].strip() for row in rows]
    assert len(numbers) == len(set(numbers)), "two cases share a number"
