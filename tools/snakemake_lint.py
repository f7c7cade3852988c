"""`snakemake --lint`, failing on every lint but one this workflow answers by design: "Specify a
conda environment or container for each rule" for the rules marked `container: False`. Those
(download_data, prepare_data) need no image (no torch) and run with Snakemake's own Python, so
that switching containers on or off does not redo the data (docs/cluster.md). Run:
    .venv/bin/python tools/snakemake_lint.py      (make lint does)
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BY_DESIGN = "Specify a conda environment or container for each rule"
RULE = re.compile(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", re.M)
HEADER = re.compile(r"^Lints for rule (\w+) \(")
BULLET = re.compile(r"^    \* (.+?):?$")


def rules_without_a_container() -> set[str]:
    """The rules whose definition says `container: False` (snakefmt puts False on its own line)."""
    found = set()
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for name, body in RULE.findall(path.read_text()):
            if re.search(r"^    container:\s*\n?\s*False\s*$", body, re.M):
                found.add(name)
    return found


def lints(text: str) -> list[tuple[str, str]]:
    """(rule, title) of every lint in snakemake --lint's text; rule "" for workflow-wide ones."""
    found, rule = [], ""
    for line in text.splitlines():
        header = HEADER.match(line)
        if header:
            rule = header.group(1)
        elif line.startswith("Lints for snakefile"):
            rule = ""
        bullet = BULLET.match(line)
        if bullet:
            found.append((rule, bullet.group(1).rstrip(":.")))
    return found


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--lint"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    text = result.stdout + result.stderr
    allowed = rules_without_a_container()
    left = [
        (rule, title) for rule, title in lints(text) if not (title == BY_DESIGN and rule in allowed)
    ]
    if result.returncode not in (0, 1) or (result.returncode and not lints(text)):
        sys.exit(text)  # Snakemake itself failed: not a lint
    if left:
        sys.exit(text + f"\n{len(left)} lint(s) to fix: {left}")
    print(f"snakemake --lint: clean (by design, no container: {', '.join(sorted(allowed))})")


if __name__ == "__main__":
    main()
