"""Every command the README shows in a command block, and the pages it links for running (the
cluster, containers), runs as written: a command that stops working fails CI.

Each runs in a fresh copy of this checkout (this virtualenv linked in, first on PATH, as after
`source .venv/bin/activate`): in full where it is cheap, as a dry run where it trains (`-n` for
Snakemake, `make -n` for `make test`, which is this suite), the cluster's against the real
one-node test cluster after the guide's step 2 (partition, account, no accounting database).
No Apptainer exists here: `make image` and `--use-singularity` run with the recording stand-in
of tests/test_container_contract.py (tests/fakes/apptainer), which runs each command on the host.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, assert_no_traceback, copy_checkout
from test_slurm import FAKES, cluster  # noqa: F401  (the module's test cluster)

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

PAGES = ("README.md", "docs/containers.md", "docs/cluster.md")  # the order a reader takes
# How each command shown runs here, in the order a reader meets them: "full", "dry" (Snakemake's
# -n added), "make -n", or "covered by <test>" where it needs what only a finished run leaves.
HOW = {
    "make run": "make run SNAKEMAKE_ARGS=-n",
    "make test": "make -n test",
    "make image": "full",
    "snakemake --cores 4 --use-singularity": "dry",
    "snakemake --profile profiles/slurm downloads": "full",
    "snakemake --profile profiles/slurm": "dry",
    "snakemake --report results/report.html": (
        "covered by tests/test_workflow.py::test_report_renders_and_carries_the_accuracies"
    ),
    "snakemake --profile profiles/slurm --config container=none": "dry",
    "python -m fashion_cnn predict my_photos/ --model results/cnn_baseline/model.onnx --output "
    "predictions.csv": (
        "covered by tests/test_predict.py::"
        "test_the_command_line_predicts_a_folder_and_names_a_missing_model"
    ),
}


def shown_commands() -> list[str]:
    """The commands of every ```bash block of the pages, comments dropped, in page order."""
    commands = []
    for page in PAGES:
        text = (REPO / page).read_text()
        for block in re.findall(r"^ *```bash\n(.*?)^ *```", text, flags=re.S | re.M):
            for line in block.replace("\\\n", " ").splitlines():
                command = re.sub(r"\s+#.*$", "", line).strip()
                if command and not command.startswith("#"):
                    commands.append(" ".join(command.split()))
    return commands


def test_every_command_shown_has_a_way_to_run_here():
    """A command added to a page, or changed, must be added here too: then it runs below."""
    shown = shown_commands()
    assert sorted(set(shown)) == sorted(HOW), "the pages and HOW differ"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A fresh copy of the checkout, this virtualenv as its .venv (older than its pyproject.toml
    would make `make` reinstall it), and the cluster guide's step 2 done in its profile."""
    copy = copy_checkout(tmp_path_factory.mktemp("checkout"))
    (copy / ".venv").symlink_to(REPO / ".venv")
    stamp = (REPO / ".venv" / ".installed").stat().st_mtime
    os.utime(copy / "pyproject.toml", (stamp - 3600, stamp - 3600))
    profile_path = copy / "profiles" / "slurm" / "config.yaml"
    profile = yaml.safe_load(profile_path.read_text())
    profile["default-resources"]["slurm_partition"] = "main"  # the test cluster's
    del profile["default-resources"]["slurm_account"]  # it has no accounting database...
    profile["slurm-status-command"] = "squeue"  # ...so, as step 2 says, squeue
    profile_path.write_text(yaml.safe_dump(profile))
    return copy


def _run(argv: list[str], checkout: Path, env: dict, timeout: int = 600):
    result = subprocess.run(
        argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(argv)}\n{output[-4000:]}"
    assert_no_traceback(output)
    return output


def _environment(checkout: Path, log: Path, extra: dict | None = None) -> dict:
    env = {**os.environ, **(extra or {}), "FAKE_APPTAINER_LOG": str(log)}
    env["PATH"] = f"{FAKES}:{checkout / '.venv' / 'bin'}:{env['PATH']}"
    env.pop("PYTHONPATH", None)  # as a user's shell: the workflow finds its package itself
    return env


def test_the_commands_shown_run_as_written(cluster, checkout, tmp_path):  # noqa: F811
    """In the pages' order, so each sees what the ones before it left (the image, then the
    downloads), as a reader following them would."""
    env = _environment(checkout, tmp_path / "apptainer.jsonl", cluster.env)
    ran = []
    for command in dict.fromkeys(shown_commands()):
        how = HOW[command]
        if how.startswith("covered by"):
            assert Path(REPO / how.split()[-1].split("::")[0]).is_file(), how
            continue
        if how == "full":
            argv = command.split()
        elif how == "dry":
            argv = [*command.split(), "-n"]
        else:
            argv = how.split()
        output = _run(argv, checkout, env)
        ran.append(command)
        _check(command, output, checkout)
    assert len(ran) == sum(not how.startswith("covered") for how in HOW.values())


def _check(command: str, output: str, checkout: Path) -> None:
    """What each command, run as above, must have done (beyond exiting 0)."""
    if command == "make run":
        assert "train_model" in output and "This was a dry-run" in output
        assert "report" not in output.split("This was a dry-run")[1]  # no report of a plan
    elif command == "make test":
        assert "-m pytest" in output
    elif command == "make image":
        assert (checkout / "containers" / "fashion-cnn_0.1.0.sif").is_file()
    elif command.endswith("downloads"):
        raw = checkout / "resources" / "fashion-mnist"
        assert len(list(raw.glob("*.gz"))) == 4  # offline: the Debian mirror, last in the list
        assert (checkout / "resources" / "weights" / "resnet18_imagenet.json").is_file()
        assert "has been submitted with SLURM jobid" not in output  # login-node rules only
    else:  # the dry runs of the whole workflow
        assert "train_model" in output and "This was a dry-run" in output
        assert "download_data" not in output or command.endswith("--use-singularity")
