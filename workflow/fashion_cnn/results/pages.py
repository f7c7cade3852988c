"""The results pages, rendered from the ledger (``make docs``): one page per question under
``docs/results/``, and the README's table of headline results between its markers. Nothing on
these pages is written by hand: ``make lint`` (so CI) fails while a page differs from what the
ledger renders now (``python -m fashion_cnn docs --check``). Torch-free."""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

from fashion_cnn.core.errors import UserError
from fashion_cnn.core.files import write_text
from fashion_cnn.core.text import format_duration
from fashion_cnn.results.comparisons import MEASURES
from fashion_cnn.results.ledger import LEDGER, QUESTIONS, REPOSITORY, load_records
from fashion_cnn.results.stats import percent, percent_with_spread
from fashion_cnn.results.tables import markdown_table

PAGES = REPOSITORY / "docs" / "results"
README = REPOSITORY / "README.md"
BEGIN = "<!-- results: begin; make docs writes this block from docs/ledger/, do not edit -->"
END = "<!-- results: end -->"
GENERATED = (
    "<!-- make docs writes this page from docs/ledger/; edit the records, not this page -->\n"
)


def _anchor(name: str) -> str:
    """The anchor of a record's section: its heading is its name, and GitHub drops the dots."""
    return name.replace(".", "")


def _accuracy_cells(record: dict[str, Any]) -> list[str]:
    accuracy = record["accuracy"]
    low_high = accuracy["ci95"]
    interval = "—" if low_high is None else f"{percent(low_high[0])} to {percent(low_high[1])}"
    per_seed = " / ".join(f"{100 * value:.2f}" for value in accuracy["values"])
    seeds = " / ".join(str(seed) for seed in accuracy["seeds"])
    which = "seeds" if len(accuracy["seeds"]) > 1 else "seed"
    return [f"**{percent_with_spread(accuracy)}**", interval, f"{per_seed} ({which} {seeds})"]


def _difference_cells(record: dict[str, Any]) -> list[str]:
    difference = record["difference"]
    low, high = difference["ci95"]
    test = difference.get("test", "paired t-test")
    measure = MEASURES[difference.get("measure", "test_accuracy")]
    return [
        f"**{100 * difference['difference']:+.2f} points** ({difference['a']} − {difference['b']}, "
        f"{measure}, n={difference['n']})",
        f"{100 * low:+.2f} to {100 * high:+.2f} points",
        f"{test}: p = {difference['p_value']:.2g}",
    ]


def _row(record: dict[str, Any]) -> list[str]:
    cells = _accuracy_cells(record) if record["kind"] == "accuracy" else _difference_cells(record)
    return [
        f"[{record['title']}](#{_anchor(record['name'])})",
        *cells,
        record.get("reference", "—"),
        _machine_text(record),
    ]


def _machine_text(record: dict[str, Any]) -> str:
    machine = record["machine"]
    where = f"{machine['cpu']}, {machine['cores']} cores"
    if machine.get("gpu"):
        driver = f" (driver {machine['driver']})" if machine.get("driver") else ""
        where = f"{machine['gpu']}{driver}; {where}"
    if machine.get("threads"):
        where += f", {machine['threads']} thread{'s' if machine['threads'] > 1 else ''} per job"
    return where + (" (shared)" if machine["shared"] else "")


HEADER = [
    "result",
    "test accuracy, mean ± std (n)",
    "95% interval",
    "per seed, or the test",
    "the chapter",
]


SPEED_HEADER = [
    "result",
    "engine, images/s (median of n)",
    "the chapter's loop, images/s",
    "ratio",
    "the chapter's loop ran under",
    "machine",
]


def _speed_row(record: dict[str, Any]) -> list[str]:
    speed = record["speed"]
    engine, chapter = statistics.median(speed["engine"]), statistics.median(speed["chapter"])
    return [
        f"[{record['title']}](#{_anchor(record['name'])})",
        f"**{engine:,.0f}** (n={len(speed['engine'])})",
        f"{chapter:,.0f} (n={len(speed['chapter'])})",
        f"**{engine / chapter:.2f}x**",
        speed["chapter_environment"],
        _machine_text(record),
    ]


DURATION_HEADER = ["result", "time, median (n)", "every run", "machine"]


def _duration_row(record: dict[str, Any]) -> list[str]:
    seconds = record["duration"]["seconds"]
    runs = " / ".join(format_duration(value) for value in seconds)
    return [
        f"[{record['title']}](#{_anchor(record['name'])})",
        f"**{format_duration(statistics.median(seconds))}** (n={len(seconds)})",
        runs,
        _machine_text(record),
    ]


def _order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accuracies first, then the differences between them, then speed, durations and ablations,
    each by name; the notebook's sections in their order."""
    kinds = ["accuracy", "difference", "speed", "duration", "ablation", "notebook"]

    def key(record: dict[str, Any]) -> tuple[int, int, str]:
        place = record["notebook"]["order"] if record["kind"] == "notebook" else 0
        return kinds.index(record["kind"]), place, record["name"]

    return sorted(records, key=key)


# In a notebook section, {{NAME}} stands for the accuracy record NAME's figure: the figure lives
# in that record alone, and the section shows it, linked, as the record says it now.
PLACEHOLDER = re.compile(r"\{\{([a-z][a-z0-9_.-]*)\}\}")


def _figure_of(name: str, records: dict[str, dict[str, Any]], where: str) -> str:
    record = records.get(name)
    if record is None or record["kind"] != "accuracy":
        raise UserError(
            f"Ledger record {where} shows {{{{{name}}}}}, but no accuracy record is named "
            f"'{name}' in docs/ledger/. Name an accuracy record, or write the figure's record "
            "first."
        )
    return f"[{percent_with_spread(record['accuracy'])}]({record['question']}.md#{_anchor(name)})"


def _notebook_section(record: dict[str, Any], records: dict[str, dict[str, Any]]) -> list[str]:
    """A notebook record: its heading (the anchor other pages link to), where it came from, then
    the section as it was written, each {{NAME}} replaced by that record's figure."""
    lines = ["", f"## {record['title']}", ""]
    lines += [f"- {line}" for line in _provenance_lines(record)]
    body = PLACEHOLDER.sub(
        lambda match: _figure_of(match.group(1), records, record["name"]),
        record["notebook"]["body"].strip(),
    )
    return [*lines, "", body]


def _ablation_section(record: dict[str, Any]) -> list[str]:
    """An ablation record: its heading, where it came from, what it was scored on, then one
    row per run (accuracies as percentages, words as they are)."""
    ablation = record["ablation"]
    rows = [
        [
            f"**{row['run']}**" if index == 0 else row["run"],
            row["changed"],
            *(
                value if isinstance(value, str) else f"{100 * value:.2f}%"
                for value in row["values"]
            ),
        ]
        for index, row in enumerate(ablation["rows"])
    ]
    without_note = {key: value for key, value in record.items() if key != "note"}
    lines = [*_record_heading(without_note), "", f"Scored on {ablation['scored_on']}.", ""]
    table = markdown_table(["run", "changed from the recipe", *ablation["columns"]], rows)
    lines.append(table.rstrip())
    return lines + (["", record["note"]] if record.get("note") else [])


def render_page(
    question: str, records: list[dict[str, Any]], everything: dict[str, dict[str, Any]]
) -> str:
    """One results page: the table of its records, then how each was measured (``everything``:
    every record by name, for the figures a notebook section shows)."""
    lines = [GENERATED, f"# {QUESTIONS[question]}", ""]
    lines.append(
        "Every figure here is a record in [docs/ledger/](../ledger/): what ran, where, with what "
        "and when. A record marked *transcribed* was copied from the committed text named in it "
        "(its outputs are gone); the others were published from the workflow's own outputs."
    )
    measured = [r for r in records if r["kind"] in ("accuracy", "difference")]
    if measured:
        lines += ["", markdown_table([*HEADER, "machine"], [_row(r) for r in measured]).rstrip()]
    assessed = [r for r in records if r.get("trust")]
    if assessed:
        lines += ["", "### Beyond accuracy", "", TRUST_INTRO, ""]
        rows = [_trust_row(r) for r in assessed]
        lines += [markdown_table(TRUST_HEADER, rows).rstrip()]
    fast = [r for r in records if r["kind"] == "speed"]
    if fast:
        rows = [_speed_row(r) for r in fast]
        lines += ["", markdown_table(SPEED_HEADER, rows).rstrip()]
    timed = [r for r in records if r["kind"] == "duration"]
    if timed:
        rows = [_duration_row(r) for r in timed]
        lines += ["", markdown_table(DURATION_HEADER, rows).rstrip()]
    for record in records:
        if record["kind"] == "notebook":
            lines += _notebook_section(record, everything)
            continue
        if record["kind"] == "ablation":
            lines += _ablation_section(record)
            continue
        lines += _record_heading(record)
    return "\n".join(lines) + "\n"


def _record_heading(record: dict[str, Any]) -> list[str]:
    """A record's section: its name as the heading (the anchor other pages link to), its
    title, and where it came from."""
    lines = ["", f"## {record['name']}", "", f"**{record['title']}**", ""]
    return lines + [f"- {line}" for line in _provenance_lines(record)]


TRUST_INTRO = (
    "The same runs, beyond accuracy ([docs/assessment.md](../assessment.md)): how good class by "
    "class, how honest the probabilities are, how the model holds up on corrupted test images. "
    "Each figure is mean ± std over the record's seeds (n); the machine and command are the "
    "record's, below."
)
TRUST_HEADER = [
    "result",
    "test accuracy",
    "macro F1",
    "calibration error (ECE); with temperature scaling, before → after on the same images",
    "NLL",
    "accuracy under corruption (clean, same images)",
]


def _trust_row(record: dict[str, Any]) -> list[str]:
    trust = record["trust"]
    link = f"[{record['name']}](#{_anchor(record['name'])})"
    nll = trust["nll"]
    spread = "" if nll["std"] is None else f" ± {nll['std']:.2f}"
    return [
        link,
        percent_with_spread(record["accuracy"]),
        percent_with_spread(trust["macro_f1"]),
        f"{percent_with_spread(trust['ece'])}; "
        f"{percent_with_spread(trust['ece_before_temperature'])} → "
        f"{percent_with_spread(trust['ece_after_temperature'])}",
        f"{nll['mean']:.2f}{spread} (n={nll['n']})",
        f"{percent_with_spread(trust['corrupted_accuracy'])} "
        f"({percent_with_spread(trust['clean_accuracy'])})",
    ]


def _provenance_lines(record: dict[str, Any]) -> list[str]:
    software = ", ".join(f"{name} {version}" for name, version in record["software"].items())
    lines = [
        f"command: `{record['command']}`",
        f"machine: {_machine_text(record)}",
        f"software: {software}",
        f"date: {record['date']}; commit: {record.get('commit') or 'not recorded'}",
        f"source: {record['source']}"
        + (f" from {record['transcribed_from']}" if record.get("transcribed_from") else ""),
    ]
    if record.get("training_time"):
        lines.append(f"training time per seed: {record['training_time']}")
    if record.get("trust"):
        lines.append(f"temperature fitted on {record['trust']['temperature_fitted_on']}")
    if record.get("note"):
        lines.append(record["note"])
    return lines


def render_readme_block(records: list[dict[str, Any]]) -> str:
    """The README's headline table: each headline record, linking to its page's section, in
    the order of the pages."""
    rows = []
    questions = list(QUESTIONS)
    for record in sorted(records, key=lambda record: questions.index(record["question"])):
        if not record.get("headline") or record["kind"] in ("duration", "speed"):
            continue
        row = _row(record)
        row[0] = (
            f"[{record['title']}](docs/results/{record['question']}.md#{_anchor(record['name'])})"
        )
        rows.append(row)
    table = markdown_table([*HEADER, "machine"], rows)
    return f"{BEGIN}\n{table}{END}"


def rendered(folder: Path = LEDGER, readme: Path = README, pages: Path = PAGES) -> dict[Path, str]:
    """Every generated file's text as the ledger renders it now (the README with its block)."""
    records = _order(load_records(folder))
    by_question: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_question.setdefault(record["question"], []).append(record)
    everything = {record["name"]: record for record in records}
    files = {
        pages / f"{question}.md": render_page(question, by_question[question], everything)
        for question in QUESTIONS
        if question in by_question
    }
    text = readme.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise UserError(
            f"{readme} must hold the results block once, between '{BEGIN}' and '{END}'. "
            "Put the two markers back around the headline table, then run make docs."
        )
    before, rest = text.split(BEGIN)
    after = rest.split(END, 1)[1]
    files[readme] = before + render_readme_block(records) + after
    return files


def write_docs(folder: Path = LEDGER, readme: Path = README, pages: Path = PAGES) -> list[Path]:
    """Render the pages and the README block; returns the files that changed."""
    changed = []
    for path, text in rendered(folder, readme, pages).items():
        if not path.is_file() or path.read_text() != text:
            write_text(path, text)
            changed.append(path)
    return changed


def check_docs(folder: Path = LEDGER, readme: Path = README, pages: Path = PAGES) -> None:
    """Stop with a paragraph when a generated file differs from what the ledger renders."""
    stale = [
        path.name
        for path, text in rendered(folder, readme, pages).items()
        if not path.is_file() or path.read_text() != text
    ]
    if stale:
        raise UserError(
            f"Generated from docs/ledger/ but out of date: {', '.join(stale)}. Run make docs and "
            "commit the result (a figure is changed in its record, never on a page)."
        )
