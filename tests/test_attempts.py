"""Every attempt of a job stays in its log: Snakemake removes a job's log before it runs the job
again (a retry, a SLURM requeue, a rerun after a kill), and the lines that say why the first
attempt stopped are the ones a user needs. (The SLURM test covers a real requeue.)"""

from __future__ import annotations

import os
import re

import pytest
from conftest import REPO, cli, write_config
from fashion_cnn.core.attempts import HEADER, attempts_path


def _headers(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(HEADER)]


@pytest.mark.slow
def test_a_retried_step_keeps_the_failed_attempts_lines(tmp_path):
    log = tmp_path / "logs" / "check.log"
    broken = write_config(tmp_path / "broken.yaml", "experiments: {cnn_baseline: {epochs: -1}}\n")
    env = {**os.environ, "SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": "1"}

    first = cli("check-config", "--configfile", REPO / "config.yaml", broken, "--log", log, env=env)
    assert first.returncode == 2
    assert attempts_path(log).is_file()  # kept: the step did not finish
    log.unlink()  # what Snakemake does before it runs the job again

    second = cli("check-config", "--configfile", REPO / "config.yaml", "--log", log)
    assert second.returncode == 0, second.stderr
    text = log.read_text()
    headers = _headers(text)
    assert [re.match(rf"{HEADER} (\d+):", h).group(1) for h in headers] == ["1", "2"]
    assert "SLURM_JOB_ID=4242 SLURM_RESTART_COUNT=1" in headers[0]
    assert "SLURM_JOB_ID" not in headers[1]
    # the first attempt's error is there, above the second attempt's header
    assert text.index("epochs") < text.index(headers[1])
    assert "ERROR" in text[: text.index(headers[1])]
    assert not attempts_path(log).exists()  # it succeeded: the next run starts clean

    log.unlink()
    third = cli("check-config", "--configfile", REPO / "config.yaml", "--log", log)
    assert third.returncode == 0
    assert [h.split(":")[0] for h in _headers(log.read_text())] == [f"{HEADER} 1"]


@pytest.mark.slow
def test_an_attempt_killed_mid_line_does_not_glue_onto_the_next_header(tmp_path):
    log = tmp_path / "step.log"
    attempts_path(log).write_text(f"{HEADER} 1: started ... =====\nhalf a li")
    result = cli("check-config", "--configfile", REPO / "config.yaml", "--log", log)
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    assert lines[1] == "half a li" and lines[2].startswith(f"{HEADER} 2:")
