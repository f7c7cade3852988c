"""OpenMP's wait policy for this process: chosen from the command line before torch loads its
OpenMP runtime (which reads ``OMP_WAIT_POLICY`` once, at load), and logged with its reason.

Measured on quiet cores (docs/results/speed.md): the engine trains about 1.4x faster under
OpenMP's default policy, where a thread with no work spins a while before it sleeps, than under
PASSIVE, where it sleeps at once. Beside other processes on the same cores, spinning threads
take the time slices their neighbours need, and a two-thread job had run at a tenth of its speed
(docs/results/notebook.md, "Speed in short"). So:

- ``train-model`` follows ``engine.shared_cores``: ``keep`` (the job's cores are its own, as a
  cluster's cgroups give them) keeps OpenMP's default; ``adapt`` (cores shared) sleeps at once;
- ``benchmark`` measures the engine as a training job would run: PASSIVE when it measures a
  shared-cores case (``--contention``, or an ``+adapt`` switch set), else OpenMP's default;
- every other command (short, run wherever it lands) sleeps at once;
- a policy the user set is never changed.

Torch-free: ``__main__`` runs it before anything imports torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from fashion_cnn.config.validation import load_config
from fashion_cnn.core.errors import UserError

PASSIVE = "PASSIVE"


def choose(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[str | None, str]:
    """(the OMP_WAIT_POLICY to set, or None to leave OpenMP's default; the reason, for the log)."""
    if "OMP_WAIT_POLICY" in environ:
        return environ["OMP_WAIT_POLICY"], "OMP_WAIT_POLICY set before the command started"
    command = argv[0] if argv else ""
    try:
        known, _ = _peek().parse_known_args(list(argv[1:]))
    except argparse.ArgumentError:  # the command line's own parser names the mistake
        return PASSIVE, "a command line that does not parse: idle threads sleep at once"
    if command == "train-model":
        if _shared_cores(known) == "keep":
            return None, (
                "engine.shared_cores: keep (the job's cores are its own): OpenMP's default, "
                "idle threads spin a while (measured faster on quiet cores); set shared_cores: "
                "adapt where other processes share them"
            )
        return PASSIVE, "engine.shared_cores: adapt (cores shared): idle threads sleep at once"
    if command == "benchmark":
        if known.contention or any("adapt" in switches.split("+") for switches in known.switches):
            return (
                PASSIVE,
                "benchmark of shared cores (--contention or adapt): as shared_cores: adapt",
            )
        return None, "benchmark on quiet cores: OpenMP's default, as shared_cores: keep"
    return PASSIVE, f"{command or 'the command line'}: idle threads sleep at once"


def _peek() -> argparse.ArgumentParser:
    """The few arguments the choice reads, ignoring the rest (argparse checks them all later)."""
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("--configfile", action="extend", nargs="+", default=[])
    parser.add_argument("--config-json", action="append", default=[])
    parser.add_argument("--switches", nargs="+", default=[])
    parser.add_argument("--contention", nargs="+", default=[])
    return parser


def _shared_cores(known: argparse.Namespace) -> str:
    """engine.shared_cores of the command's config; ``adapt`` (the safe side) when it cannot be
    read, which the command itself then reports."""
    try:
        return str(load_config(known.configfile, known.config_json)["engine"]["shared_cores"])
    except (UserError, OSError, KeyError, TypeError):
        return "adapt"
