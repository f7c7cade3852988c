"""The results ledger: a figure is a record, the pages are rendered from the records, and the
documentation's links lead somewhere."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from fashion_cnn.core.errors import UserError
from fashion_cnn.results.ledger import LEDGER, check_record, load_records, publish
from fashion_cnn.results.pages import BEGIN, END, check_docs, rendered, write_docs


def _a_record() -> dict:
    return json.loads((LEDGER / "cnn_small_augmented.5seeds.json").read_text())


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda r: r.pop("machine"), "lacks a required key: 'machine'"),
        (lambda r: r.pop("command"), "lacks a required key: 'command'"),
        (lambda r: r["accuracy"].pop("seeds"), "lacks a required key: 'seeds'"),
        (lambda r: r["machine"].pop("cpu"), "lacks a required key: 'cpu'"),
        (lambda r: r.pop("transcribed_from"), "lacks a required key: 'transcribed_from'"),
        (lambda r: r["accuracy"]["values"].pop(), "5 seeds and 4 values"),
        (lambda r: r.update(date="28.11.2026"), "date"),
    ],
    ids=["no machine", "no command", "no seeds", "no CPU", "transcribed from nowhere",
         "a seed without its value", "a date not ISO"],
)  # fmt: skip
def test_a_record_without_what_it_needs_is_refused(change, named):
    record = _a_record()
    check_record(copy.deepcopy(record), "x.json")  # the committed record itself is whole
    change(record)
    with pytest.raises(UserError, match=re.escape(named)):
        check_record(record, "x.json")


def test_the_committed_pages_are_what_the_ledger_renders():
    """What make lint checks (python -m fashion_cnn docs --check): no page drifted."""
    check_docs()
    assert len(load_records()) >= 10


def _ledger_copy(tmp_path: Path) -> tuple[Path, Path, Path]:
    ledger, pages, readme = tmp_path / "ledger", tmp_path / "results", tmp_path / "README.md"
    shutil.copytree(LEDGER, ledger)
    readme.write_text(f"# a manual\n\n{BEGIN}\n{END}\n\nmore text\n")
    write_docs(ledger, readme, pages)
    return ledger, pages, readme


def test_a_changed_record_whose_page_was_not_rendered_is_drift(tmp_path):
    ledger, pages, readme = _ledger_copy(tmp_path)
    check_docs(ledger, readme, pages)
    path = ledger / "cnn_small_plain.5seeds.json"
    record = json.loads(path.read_text())
    record["accuracy"]["mean"] = 0.7710
    path.write_text(json.dumps(record))
    with pytest.raises(
        UserError, match="out of date: chapter.md, notebook.md, README.md. Run make docs"
    ):
        check_docs(ledger, readme, pages)
    write_docs(ledger, readme, pages)
    check_docs(ledger, readme, pages)
    assert "**77.10% ± 0.48 (n=5)**" in (pages / "chapter.md").read_text()
    assert readme.read_text().endswith("more text\n")  # the rest of the README is left alone


def test_a_page_edited_by_hand_is_drift(tmp_path):
    ledger, pages, readme = _ledger_copy(tmp_path)
    page = pages / "chapter.md"
    page.write_text(page.read_text().replace("78.94%", "79.94%"))
    with pytest.raises(UserError, match="chapter.md"):
        check_docs(ledger, readme, pages)


@pytest.mark.slow
def test_a_workflow_result_published_and_rendered(tmp_path, real_checkpoint, prepared_data):
    """A tiny real result through the whole route: two seeds' metrics from evaluate_model, their
    aggregate from aggregate_metrics, publish into a ledger, render: the page shows the n, the
    spread, every seed, the machine and the command."""
    from fashion_cnn.evaluation.evaluate import EvaluationOutputs, evaluate_model
    from fashion_cnn.evaluation.robustness import assess_robustness
    from fashion_cnn.results.replicates import aggregate_metrics

    per_seed, robustness = [], []
    for seed in (7, 8):
        folder = tmp_path / f"seed-{seed}"
        folder.mkdir()
        outputs = EvaluationOutputs(
            folder / "metrics.json",
            folder / "confusion.csv",
            folder / "per_class.csv",
            folder / "scores.npz",
        )
        metrics = evaluate_model(real_checkpoint, prepared_data, outputs, device_spec="cpu")
        metrics["seed"] = seed
        metrics["test_accuracy"] += 0.01 * (seed - 7)  # two replicates that differ
        per_seed.append(metrics)
        robustness.append(
            assess_robustness(real_checkpoint, prepared_data, folder / "robustness.csv", images=200)
        )
    aggregate_path = tmp_path / "metrics.json"
    aggregate_path.write_text(json.dumps(aggregate_metrics(per_seed, robustness)))
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    describe = {
        "name": "tiny.2seeds",
        "question": "chapter",
        "title": "a tiny CNN, two seeds",
        "command": "snakemake --cores 2 results/tiny/metrics.json",
        "shared": False,
        "headline": True,
    }
    path = publish(aggregate_path, describe, ledger)
    assert path == ledger / "tiny.2seeds.json"
    record = load_records(ledger)[0]
    assert record["source"] == "measured" and record["accuracy"]["seeds"] == [7, 8]
    assert record["machine"]["cores"] >= 1 and record["machine"]["cpu"] != "not recorded"
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n")
    files = rendered(ledger, readme, tmp_path / "results")
    page = files[tmp_path / "results" / "chapter.md"]
    mean, std = record["accuracy"]["mean"], record["accuracy"]["std"]
    assert f"{100 * mean:.2f}% ± {100 * std:.2f} (n=2)" in page
    assert "(seeds 7 / 8)" in page and record["machine"]["cpu"] in page
    assert "`snakemake --cores 2 results/tiny/metrics.json`" in page
    assert "a tiny CNN, two seeds" in files[readme]
    # beyond accuracy: the same seeds' figures, from the seeds' own metrics and robustness rows
    trust = record["trust"]
    f1 = [m["classification"]["macro"]["f1"] for m in per_seed]
    assert trust["macro_f1"]["values"] == pytest.approx(f1)
    corrupted = [
        np.mean([row["accuracy"] for row in rows if row["corruption"] != "none"])
        for rows in robustness
    ]
    assert trust["corrupted_accuracy"]["mean"] == pytest.approx(np.mean(corrupted))
    assert "Beyond accuracy" in page and "never read" in page
    shown = trust["ece"]
    assert f"{100 * shown['mean']:.2f}% ± {100 * shown['std']:.2f} (n=2);" in page
    _publish_a_comparison(tmp_path, per_seed, robustness, describe)


def _publish_a_comparison(tmp_path, per_seed, robustness, describe):
    """The same seeds as two experiments, b's corrupted accuracy lower by 1 and 3 points; their
    comparison written by compare_experiments' code, published as a difference record and
    rendered: the paired t-test's figures are scipy's."""
    from fashion_cnn.results.comparisons import write_comparisons
    from fashion_cnn.results.ledger import publish_comparison
    from fashion_cnn.results.replicates import aggregate_metrics
    from scipy import stats

    results = tmp_path / "results"
    shifted = [
        [dict(row, accuracy=row["accuracy"] - drop) for row in rows]
        for rows, drop in zip(robustness, (0.01, 0.03), strict=True)
    ]
    paths = {}
    for name, rows in (("a", robustness), ("b", shifted)):
        metrics = aggregate_metrics([dict(m, experiment=name) for m in per_seed], rows)
        paths[name] = results / name / "metrics.json"
        paths[name].parent.mkdir(parents=True)
        paths[name].write_text(json.dumps(metrics))
    table = results / "comparisons" / "comparisons.csv"
    outputs = {
        "csv": table,
        "markdown": table.with_suffix(".md"),
        "html": table.with_suffix(".html"),
    }
    write_comparisons([("a", "b")], paths, outputs)
    ledger = tmp_path / "ledger"
    record_path = publish_comparison(
        table,
        ("a", "b"),
        "corrupted_accuracy",
        dict(describe, name="a_b.robustness", title="a against b, under corruption"),
        ledger,
    )
    record = json.loads(record_path.read_text())
    difference = record["difference"]
    assert difference["measure"] == "corrupted_accuracy" and difference["n"] == 2
    assert difference["difference"] == pytest.approx(0.02)
    per_seed_a = [
        np.mean([r["accuracy"] for r in rows if r["corruption"] != "none"]) for rows in robustness
    ]
    per_seed_b = [
        np.mean([r["accuracy"] for r in rows if r["corruption"] != "none"]) for rows in shifted
    ]
    expected = stats.ttest_rel(per_seed_a, per_seed_b)
    assert difference["p_value"] == pytest.approx(expected.pvalue)
    published = {r["name"]: r for r in load_records(ledger)}
    assert record["machine"] == published["tiny.2seeds"]["machine"]  # a's, from its metrics
    readme = tmp_path / "README.md"
    page = rendered(ledger, readme, tmp_path / "pages")[tmp_path / "pages" / "chapter.md"]
    assert "(a − b, accuracy under corruption, n=2)" in page
    with pytest.raises(UserError, match="has no comparison a − b on nll"):
        publish_comparison(table, ("a", "b"), "nll", describe, ledger)


def test_publishing_a_seeds_own_metrics_is_refused(tmp_path):
    seed_metrics = tmp_path / "metrics.json"
    seed_metrics.write_text(json.dumps({"experiment": "x", "test_accuracy": 0.9}))
    with pytest.raises(UserError, match="not an experiment's aggregate metrics.json"):
        publish(seed_metrics, {}, tmp_path)


# ----------------------------------------------------------------------------- links

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def _documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_every_link_and_anchor_in_the_documentation_resolves():
    broken = []
    for document in _documents():
        text = re.sub(r"```.*?```", "", document.read_text(), flags=re.S)
        for target in LINK.findall(text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            file, _, anchor = target.partition("#")
            path = (document.parent / file).resolve() if file else document
            if not path.exists():
                broken.append(f"{document.relative_to(REPO)}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{document.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "links that lead nowhere:\n" + "\n".join(broken)


def test_the_readme_is_a_manual():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move the long material to docs/"
    assert (
        lines[2:6]
        == [
            "```bash",
            lines[3],
            lines[4],
            "```",
        ]
        and lines[3].startswith("make run")
        and lines[4].startswith("make test")
    )


def test_a_duration_is_rendered_with_every_run(tmp_path):
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    record = json.loads((LEDGER / "make_test_fast.duration.json").read_text())
    record["duration"]["seconds"] = [80.0, 70.2, 75.0]
    (ledger / "make_test_fast.duration.json").write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n")
    page = rendered(ledger, readme, tmp_path / "results")[tmp_path / "results" / "runtime.md"]
    assert "| **1 min 15 s** (n=3) | 1 min 20 s / 1 min 10 s / 1 min 15 s |" in page
    record["duration"]["seconds"] = []
    with pytest.raises(UserError, match="duration.seconds"):
        check_record(record, "x.json")


def test_a_notebook_section_shows_a_records_figure_and_follows_it(tmp_path):
    """The lab notebook is transcribed text; a figure a structured record holds appears in it as
    {{NAME}}, rendered from that record: change the record and the notebook page changes with it
    (and is drift until rendered). A notebook section must be transcribed, and may name only an
    accuracy record that exists."""
    ledger, pages, readme = _ledger_copy(tmp_path)
    notebook = (pages / "notebook.md").read_text()
    assert "{{" not in notebook
    assert "[94.46% ± 0.12 (n=3)](frontier.md#cnn_frontier3seeds)" in notebook
    path = ledger / "cnn_frontier.3seeds.json"
    record = json.loads(path.read_text())
    record["accuracy"]["mean"] = 0.9461
    path.write_text(json.dumps(record))
    with pytest.raises(UserError, match="out of date: .*notebook.md"):
        check_docs(ledger, readme, pages)
    write_docs(ledger, readme, pages)
    assert (
        "[94.61% ± 0.12 (n=3)](frontier.md#cnn_frontier3seeds)"
        in (pages / "notebook.md").read_text()
    )

    section = json.loads((ledger / "notebook.frontier_found.json").read_text())
    measured = dict(copy.deepcopy(section), source="measured")
    with pytest.raises(UserError, match="source"):
        check_record(measured, "x.json")
    section["notebook"]["body"] += "\nand {{cnn_frontier.4seeds}}\n"
    (ledger / "notebook.frontier_found.json").write_text(json.dumps(section))
    with pytest.raises(UserError, match="no accuracy record is named 'cnn_frontier.4seeds'"):
        rendered(ledger, readme, pages)


def test_an_ablation_is_one_record_rendered_as_its_table(tmp_path):
    """A recipe taken apart is one record (kind ablation): its rows render as one table on its
    page, accuracies as percentages and words as they are, the recipe's row first and bold,
    then its reading; a row with a figure too few for the columns is refused, naming the row."""
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    record = json.loads((LEDGER / "frontier.speedrun_ablation.json").read_text())
    record["ablation"]["rows"][1]["values"][0] = 0.91234
    record["ablation"]["rows"][1]["values"][3] = "never"
    (ledger / "frontier.speedrun_ablation.json").write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n")
    page = rendered(ledger, readme, tmp_path / "results")[tmp_path / "results" / "frontier.md"]
    first, second = record["ablation"]["rows"][:2]
    assert f"| **{first['run']}** | {first['changed']} |" in page
    assert f"| {second['run']} | {second['changed']} | 91.23% |" in page
    assert page.rstrip().endswith(record["note"])
    assert page.index("Scored on the last 5,000") < page.index(f"**{first['run']}**")
    assert page.count("| run | changed from the recipe |") == 1
    record["ablation"]["rows"][2]["values"].pop()
    with pytest.raises(UserError, match=re.escape(record["ablation"]["rows"][2]["run"])):
        check_record(record, "x.json")
    record["ablation"]["rows"][2]["values"].append(1.5)  # a fraction, not a percentage
    with pytest.raises(UserError, match="ablation"):
        check_record(record, "x.json")
