"""OpenMP's wait policy, chosen by the command line before torch loads (config.waiting): a
training job whose cores are its own keeps OpenMP's default, one on shared cores and every
short command sleep at once, the user's own setting is kept. The real process's choice is
checked in test_engine.py (its training log)."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, cli
from fashion_cnn.config.waiting import PASSIVE, choose

CONFIG = str(REPO / "config.yaml")


def _train(*extra: str) -> list[str]:
    return ["train-model", "--configfile", CONFIG, "--experiment", "cnn_baseline", *extra]


@pytest.mark.parametrize(
    ("argv", "expected", "because"),
    [
        (_train(), None, "engine.shared_cores: keep"),
        (
            _train("--config-json", json.dumps({"engine": {"shared_cores": "adapt"}})),
            PASSIVE,
            "engine.shared_cores: adapt",
        ),
        (_train("--config-json", "{not json"), PASSIVE, "engine.shared_cores: adapt"),
        (["benchmark", "--data", "x.npz"], None, "quiet cores"),
        (["benchmark", "--contention", "spin"], PASSIVE, "shared cores"),
        (["benchmark", "--switches", "auto", "channels_last+adapt"], PASSIVE, "shared cores"),
        (["evaluate-model", "--model", "m.pt"], PASSIVE, "evaluate-model"),
        (["train-model", "--configfile"], PASSIVE, "does not parse"),
        ([], PASSIVE, "the command line"),
    ],
    ids=[
        "training, cores its own",
        "training, cores shared",
        "training, a config it cannot read (the command reports it)",
        "benchmark, quiet",
        "benchmark beside a competitor",
        "benchmark of adapt",
        "another command",
        "a command line that does not parse (the command's own parser says so)",
        "no command",
    ],
)
def test_the_wait_policy_follows_whether_the_cores_are_shared(argv, expected, because):
    policy, reason = choose(argv, {})
    assert policy == expected and because in reason, (policy, reason)


def test_a_wait_policy_the_user_set_is_kept():
    policy, reason = choose(_train(), {"OMP_WAIT_POLICY": "ACTIVE"})
    assert policy == "ACTIVE" and "set before the command started" in reason


@pytest.mark.slow
def test_a_command_line_that_does_not_parse_gets_the_command_lines_own_message():
    """The choice reads the command line before the command line's parser does: it must stay
    silent, so that the user meets one paragraph and the subcommand's --help."""
    result = cli("train-model", "--configfile")
    assert result.returncode == 2
    assert "fashion-cnn: ERROR: fashion-cnn train-model: argument --configfile" in result.stderr
    assert "usage:" not in result.stderr and "__main__.py" not in result.stderr
