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


def test_a_retry_of_a_mistake_says_in_its_first_line_that_no_retry_mends_it(tmp_path, capsys):
    """A bad setting (like the GPU guard) stops every attempt the same way within seconds: the
    profile's retries cannot mend it. The retried attempt's error says so first; the first
    attempt's, and a different mistake's, do not."""
    import logging  # here: the CLI replaces the root logger's handlers, restored below

    from fashion_cnn.cli import main

    log = tmp_path / "logs" / "check.log"
    broken = write_config(tmp_path / "broken.yaml", "experiments: {cnn_baseline: {epochs: -1}}\n")
    other = write_config(tmp_path / "other.yaml", "experiments: {cnn_baseline: {epochs: 0.5}}\n")
    handlers = logging.getLogger().handlers[:]

    def attempt(config) -> str:
        with pytest.raises(SystemExit) as stopped:
            main(
                [
                    "check-config",
                    "--configfile",
                    str(REPO / "config.yaml"),
                    str(config),
                    "--log",
                    str(log),
                ]
            )
        assert stopped.value.code == 2
        logging.shutdown()
        return capsys.readouterr().err

    try:
        first = attempt(broken)
        second = attempt(broken)
        third = attempt(other)
    finally:
        logging.getLogger().handlers[:] = handlers
    assert "epochs" in first and "Not mended by a retry" not in first
    assert second.split("ERROR: ", 1)[1].startswith(
        "Not mended by a retry: attempt 2 stopped as an earlier attempt of this job did"
    ), second
    assert "epochs" in second
    assert "Not mended by a retry" not in third  # another mistake: no claim about it
    assert [h.split(":")[0] for h in _headers(log.read_text())][-1] == f"{HEADER} 3"


def test_the_cluster_logs_of_failed_jobs_are_gathered_for_the_terminal(tmp_path):
    """What the workflow's onerror prints on a cluster: the end of each SLURM log written during
    this run that reports an error (a job that failed before its rule's command ran leaves its
    reason there alone); an older log, and one without an error, stay out."""
    import time  # here: only this test sets file times

    from fashion_cnn.config.site import cluster_failures

    folder = tmp_path / "slurm_logs" / "rule_prepare_data"
    folder.mkdir(parents=True)
    started = time.time()
    (folder / "7.log").write_text("host\n" * 30 + "Fatal Python error: init_fs_encoding\n")
    (folder / "8.log").write_text("Finished jobid: 0\n")
    old = folder / "6.log"
    old.write_text("an error of an earlier run\n")
    os.utime(old, (started - 3600, started - 3600))
    report = cluster_failures(tmp_path / "slurm_logs", started)
    assert report.startswith("The cluster's own log of 1 failed job(s)")
    assert "7.log" in report and "Fatal Python error" in report
    assert "8.log" not in report and "6.log" not in report
    assert len(report.splitlines()) == 2 + 15  # the header, the path, the last 15 lines
    assert cluster_failures(tmp_path / "nothing", started) == ""
