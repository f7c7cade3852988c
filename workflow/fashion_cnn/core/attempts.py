"""Every attempt of a job in its log: the lines that explain why an earlier attempt stopped.

Snakemake removes a job's log before it runs the job again (a retry, a SLURM requeue, a rerun
after a kill), so the first attempt's last lines would be gone. Each step therefore also appends
its log to ``<log>.attempts``, a file Snakemake does not manage; an attempt that starts while that
file exists (an earlier attempt did not finish) copies it into the fresh log first, under a header
per attempt. A step that succeeds removes the file, so the next, unrelated run starts clean.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

HEADER = "===== attempt"
# What the header names: where and as which scheduler job the attempt ran.
SCHEDULER_VARIABLES = ("SLURM_JOB_ID", "SLURM_RESTART_COUNT", "SLURM_JOB_PARTITION")


def attempts_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".attempts")


def header(number: int) -> str:
    scheduler = " ".join(
        f"{name}={os.environ[name]}" for name in SCHEDULER_VARIABLES if name in os.environ
    )
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    where = f"on {socket.gethostname()}, pid {os.getpid()}, python {sys.executable}"
    return (
        f"{HEADER} {number}: started {started} {where}{f', {scheduler}' if scheduler else ''} ====="
    )


def start_attempt(log_path: Path) -> int:
    """Open this attempt in the log (and the attempts file): the earlier, unfinished attempts
    first, then this one's header. Returns the attempt's number."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    earlier_path = attempts_path(log_path)
    earlier = earlier_path.read_text(errors="replace") if earlier_path.is_file() else ""
    broken = "\n" if earlier and not earlier.endswith("\n") else ""  # killed mid-line
    earlier += broken
    number = sum(line.startswith(HEADER) for line in earlier.splitlines()) + 1
    line = header(number) + "\n"
    if earlier:
        # the log Snakemake left (removed, or this attempt's predecessor's) is replaced whole
        log_path.write_text(earlier + line)
    else:
        with log_path.open("a") as handle:
            handle.write(line)
    with earlier_path.open("a") as handle:
        handle.write(broken + line)
    return number


def finish_attempt(log_path: Path) -> None:
    """The step succeeded: its log holds every attempt; the attempts file is no longer needed."""
    attempts_path(log_path).unlink(missing_ok=True)


def repeated_stop(log_path: Path, number: int, paragraph: str) -> str | None:
    """The first line for a mistake that stopped an earlier attempt of this job the same way
    (a retry or requeue cannot mend it: a bad setting, a GPU PyTorch cannot use), else None."""
    if number < 2:
        return None
    earlier_path = attempts_path(log_path)
    earlier = earlier_path.read_text(errors="replace") if earlier_path.is_file() else ""
    # the paragraph's opening words, as the earlier attempt logged them (wrapped the same way)
    if paragraph.splitlines()[0] not in earlier:
        return None
    return (
        f"Not mended by a retry: attempt {number} stopped as an earlier attempt of this job did, "
        "on a mistake to fix (below). Any retries left (the profile's `retries:`) stop the same "
        "way within seconds; fix it and run Snakemake again."
    )
