"""What the Snakemake workflow catalog and snakedeploy look for, and the two other ways in that it
implies: `snakemake -s workflow/Snakefile` and a module deployment in a folder of its own."""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import REPO, snakemake_command


def _run(args, cwd: Path, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*snakemake_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _planned(output: str) -> dict[str, int]:
    """The job counts of a dry run's table (rule, count)."""
    table = output[output.index("Job stats:") :].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def test_the_catalogs_files_are_there():
    assert (REPO / "config" / "config.yaml").resolve() == (REPO / "config.yaml").resolve()
    assert "snakemake" in (REPO / "README.md").read_text().lower()
    assert (REPO / "config" / "README.md").is_file() and (REPO / "LICENSE").is_file()
    assert "MIT License" in (REPO / "LICENSE").read_text()
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert catalog["usage"]["software-stack-deployment"]["singularity"] is True
    assert catalog["usage"]["report"] is True
    assert list((REPO / "workflow" / "rules").glob("*.smk"))


@pytest.mark.slow
def test_workflow_snakefile_is_the_same_workflow(tmp_path):
    where = ["--directory", str(tmp_path), "--configfile", str(REPO / "config.yaml")]
    top = _run(["-n", "--cores", "2", *where], REPO)
    inner = _run(["-n", "--cores", "2", "-s", "workflow/Snakefile", *where], REPO)
    assert top.returncode == 0 and inner.returncode == 0, top.stderr[-2000:] + inner.stderr[-2000:]
    planned_top, planned_inner = (
        _planned(top.stdout + top.stderr),
        _planned(inner.stdout + inner.stderr),
    )
    # the same jobs; the entry point's default target is named `default` instead of `all`
    assert planned_inner.pop("default") == planned_top.pop("all") == 1
    assert planned_inner == planned_top and planned_top["train_model"] >= 4


@pytest.mark.workflow
def test_a_module_deployment_runs_in_its_own_folder(tmp_path):
    """snakedeploy's layout: the study's own config/config.yaml and a Snakefile that uses every
    rule of the module, pointed at this checkout. Outputs land in the study's folder."""
    study = tmp_path / "my study"
    (study / "config").mkdir(parents=True)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["data"]["mirrors"] = ["file:///usr/share/datasets/fashion-mnist/"]
    (study / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (study / "Snakefile").write_text(
        textwrap.dedent(
            f"""\
            configfile: "config/config.yaml"

            module fashion_cnn:
                snakefile: "{REPO / "workflow" / "Snakefile"}"
                config: config

            use rule * from fashion_cnn
            """
        )
    )
    planned = _run(["-n", "--cores", "2"], study)
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert _planned(planned.stdout + planned.stderr)["train_model"] >= 4
    result = _run(["--cores", "2", "results/data/samples.png"], study)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (study / "results" / "data" / "samples.png").is_file()
    assert (study / "resources" / "fashion-mnist").is_dir()
