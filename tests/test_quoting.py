"""No config value, path or folder name reaches the shell as anything but one argument.

Every rule writes each placeholder of its command as ``{name:q}`` (Snakemake shell-quotes it; a
list is quoted element by element), and the shell prefix quotes the checkout's paths. The whole
workflow runs with hostile `results:`, `resources:` and mirror values in test_workflow.py; here,
the rules are read for any placeholder left unquoted, and the workflow runs from a checkout whose
own folder name holds braces, quotes and a command.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, copy_checkout, snakemake_command, write_config

RULES = sorted((REPO / "workflow" / "rules").glob("*.smk"))
PLACEHOLDER = re.compile(r"(?<!\{)\{([^{}]*)\}(?!\})")


def shell_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every string line under a ``shell:`` directive."""
    commands, inside = [], False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if stripped == "shell:":
            inside = True
        elif inside and stripped.startswith('"'):
            commands.append((number, stripped))
        else:
            inside = False
    return commands


def test_every_placeholder_in_every_rule_command_is_quoted():
    commands = [(path, number, text) for path in RULES for number, text in shell_commands(path)]
    assert len({path for path, _, _ in commands}) >= 6, "rules with shell commands not found"
    unquoted = [
        f"{path.name}:{number}: {{{field}}}"
        for path, number, text in commands
        for field in PLACEHOLDER.findall(text)
        if not field.endswith(":q")
    ]
    assert not unquoted, "placeholders that reach the shell unquoted: " + "; ".join(unquoted)


def test_rules_run_commands_only_through_shell():
    for path in RULES:
        text = path.read_text()
        assert not re.search(r"^\s+(run|script|wrapper):", text, re.MULTILINE), path.name


@pytest.mark.slow
def test_the_workflow_runs_from_a_checkout_with_a_hostile_folder_name(tmp_path, debian_mirror):
    """The checkout's path goes into every job's shell prefix (PYTHONPATH): braces, quotes, a
    space and a command in its folder name change nothing."""
    checkout = tmp_path / "check out {x} 'q\"; $(touch INJECTED_7)"
    copy_checkout(checkout)
    workdir = tmp_path / "work"
    workdir.mkdir()
    extra = write_config(
        workdir / "extra.yaml", f"data: {{mirrors: ['{debian_mirror.as_uri()}/']}}\n"
    )
    result = subprocess.run(
        [
            *snakemake_command(),
            "--snakefile",
            str(checkout / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(checkout / "config.yaml"),
            str(extra),
            "--cores",
            "2",
            "results/data/samples.png",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (workdir / "results" / "data" / "samples.png").stat().st_size > 1000
    assert not list(tmp_path.rglob("INJECTED_7")) and not list(Path.cwd().glob("INJECTED_7"))
