"""The results ledger: every figure the documentation shows, once, as a record.

A record is one small JSON file under ``docs/ledger/`` (reviewed like code): the figures (for an
accuracy n, mean, standard deviation, 95% interval and every seed's value), what ran (the exact
command, the settings, the commit), where (the CPU and its cores, whether the machine was
shared, a GPU), with what (torch) and when. ``workflow/schemas/record.schema.yaml`` says what a
record must hold: one without its machine, its command or (for an accuracy) its seeds is refused.
``publish`` makes a record from what the workflow wrote; ``results.pages`` renders the pages from
the records. Torch-free.
"""

from __future__ import annotations

import csv
import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from fashion_cnn.config.schema import Validator, describe_error
from fashion_cnn.core.errors import UserError
from fashion_cnn.core.files import read_json, write_json

REPOSITORY = Path(__file__).resolve().parents[3]
LEDGER = REPOSITORY / "docs" / "ledger"
RECORD_SCHEMA = REPOSITORY / "workflow" / "schemas" / "record.schema.yaml"

# The results pages (docs/results/QUESTION.md), one per question a reader asks, in this order.
QUESTIONS = {
    "chapter": "The chapter reproduced",
    "exercises": "The chapter's exercises and beyond",
    "frontier": "The frontier: the best accuracy in a CPU budget",
    "labels500": "500 labels: semi-supervised training",
    "speed": "Training speed on each CPU",
    "gpu": "On a GPU",
    "runtime": "Run time: the workflow and the tests",
    "notebook": "The lab notebook: how the figures were found, as written then",
}


@functools.cache
def record_schema() -> dict[str, Any]:
    with open(RECORD_SCHEMA) as handle:
        schema: dict[str, Any] = yaml.safe_load(handle)
    return schema


def check_record(record: Any, where: str) -> dict[str, Any]:
    """The record, or one paragraph naming what it lacks (``where`` names its file)."""
    validator = Validator(record_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(record))
    if error is not None:
        message = describe_error(error).replace("Config error", f"Ledger record {where}", 1)
        raise UserError(
            f"{message} A record says what was measured, by which command, on which machine "
            "(workflow/schemas/record.schema.yaml); fix the record, or publish it again."
        )
    checked: dict[str, Any] = record
    accuracy = checked.get("accuracy")
    if accuracy and not len(accuracy["seeds"]) == len(accuracy["values"]) == accuracy["n"]:
        raise UserError(
            f"Ledger record {where}: accuracy has n = {accuracy['n']} but "
            f"{len(accuracy['seeds'])} seeds and {len(accuracy['values'])} values; give one "
            "value per seed."
        )
    ablation: dict[str, Any] = checked.get("ablation") or {"columns": [], "rows": []}
    for row in ablation["rows"]:
        if len(row["values"]) != len(ablation["columns"]):
            raise UserError(
                f"Ledger record {where}: ablation row '{row['run']}' has "
                f"{len(row['values'])} values for {len(ablation['columns'])} columns; give one "
                "value per column, in the columns' order."
            )
    return checked


def load_records(folder: Path = LEDGER) -> list[dict[str, Any]]:
    """Every record in the ledger, checked, in name order; a file's name is its record's."""
    records = []
    for path in sorted(folder.glob("*.json")):
        record = check_record(read_json(path), str(path))
        if record["name"] != path.stem:
            raise UserError(
                f"Ledger record {path} is named '{record['name']}' inside; a record's file is "
                "its name. Rename one of them."
            )
        records.append(record)
    return records


def record_from_metrics(metrics: dict[str, Any], describe: dict[str, Any]) -> dict[str, Any]:
    """A record of an experiment's aggregate metrics.json (``aggregate_seeds``'s) with what
    ``describe`` adds: name, question, title, command, shared, and optionally reference and
    headline. The machine, software, commit and date come from the metrics' own provenance."""
    over_seeds = metrics["test_accuracy_over_seeds"]
    training = metrics["training"]
    provenance = training["provenance"]
    record: dict[str, Any] = {
        "name": describe["name"],
        "question": describe["question"],
        "title": describe["title"],
        "kind": "accuracy",
        "accuracy": {
            "n": over_seeds["n"],
            "mean": over_seeds["mean"],
            "std": over_seeds["std"],
            "ci95": over_seeds["ci95"],
            "seeds": list(metrics["seeds"]),
            "values": list(over_seeds["values"]),
        },
        "command": describe["command"],
        "settings": metrics["config"],
        "commit": (provenance.get("git") or {}).get("commit"),
        "machine": _machine(training.get("device") or "", bool(describe["shared"])),
        "software": {"torch": provenance["versions"].get("torch", "unknown")},
        "date": provenance["created"][:10],
        "source": "measured",
        "training_time": f"{training['seconds'] / 60:.1f} min (the representative seed)",
    }
    for key in ("reference", "headline"):
        if describe.get(key) is not None:
            record[key] = describe[key]
    if "trust_over_seeds" in metrics:
        record["trust"] = _trust(metrics)
    if describe.get("cpu"):  # the CPU with the flags that matter, where its name says too little
        record["machine"]["cpu"] = describe["cpu"]
    return record


TRUST_FIGURES = (
    "macro_f1",
    "top2_accuracy",
    "ece",
    "ece_before_temperature",
    "ece_after_temperature",
    "nll",
    "brier",
    "corrupted_accuracy",
)


def _trust(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures beyond accuracy over the seeds (n, mean, std, every seed's value)."""

    def over_seeds(summary: dict[str, Any]) -> dict[str, Any]:
        return {key: summary[key] for key in ("n", "mean", "std", "values")}

    trust: dict[str, Any] = {
        name: over_seeds(metrics["trust_over_seeds"][name]) for name in TRUST_FIGURES
    }
    clean = metrics["robustness_over_seeds"]["none"]["0"]
    trust["clean_accuracy"] = over_seeds(clean)
    temperature = metrics["calibration"]["temperature"]
    trust["temperature_fitted_on"] = (
        f"{temperature['fitted_on']}; scored on {temperature['scored_on']}"
    )
    return trust


DEVICE = re.compile(r"cpu \((?P<cpu>.*), (?P<cores>\d+) cores, (?P<threads>\d+) threads")


def _machine(device: str, shared: bool) -> dict[str, Any]:
    """The machine from the provenance's device line: ``cpu (NAME, N cores, T threads, ...)`` or
    ``cuda (GPU NAME)``."""
    match = DEVICE.match(device)
    if match:
        return {
            "cpu": match["cpu"],
            "cores": int(match["cores"]),
            "threads": int(match["threads"]),
            "shared": shared,
            "gpu": None,
        }
    gpu = device.removeprefix("cuda (").removesuffix(")") if device.startswith("cuda") else None
    return {"cpu": "not recorded", "cores": 1, "shared": shared, "gpu": gpu}


def records_from_benchmark(
    result: dict[str, Any], describe: dict[str, Any]
) -> list[dict[str, Any]]:
    """One speed record per workload and switch set of a benchmark's JSON (the benchmark
    command's), named ``<describe name>.<workload>.<switches>``."""
    settings, machine = result["settings"], result["machine"]
    environment = (
        f"OpenMP wait policy {settings.get('chapter_omp_wait_policy', 'not recorded')}, "
        f"{settings.get('chapter_threads', 'not recorded')} threads, allocator "
        f"{settings.get('chapter_allocator', 'not recorded')}"
    )
    records = []
    for workload, row in result["training"].items():
        for entry in row["engine"]:
            switches = entry["switches"]
            records.append(
                {
                    "name": f"{describe['name']}.{workload}.{switches.replace('+', '-')}",
                    "question": "speed",
                    "title": f"{workload}, engine {switches}, against the chapter's loop",
                    "kind": "speed",
                    "speed": {
                        "workload": workload,
                        "switches": switches,
                        "engine": list(entry["runs"]),
                        "chapter": list(row["chapter_runs"]),
                        "chapter_environment": environment,
                    },
                    "command": result["command"],
                    "commit": result.get("commit"),
                    "machine": {
                        "cpu": machine.get("gpu") or describe.get("cpu") or machine["cpu"],
                        "cores": machine["cores"],
                        "threads": machine["torch_threads"],
                        "shared": bool(result.get("contention")) or bool(describe["shared"]),
                    },
                    "software": {"torch": machine["torch"]},
                    "date": result["date"],
                    "source": "measured",
                    "note": _benchmark_note(result, workload),
                }
            )
    return records


def _benchmark_note(result: dict[str, Any], workload: str) -> str:
    """A benchmark record's note: the engine's wait policy and why, the competing processes, and
    the profile of the workload's step where the benchmark made one."""
    machine = result["machine"]
    reason = machine.get("omp_wait_policy_reason")
    competitors = ", ".join(result.get("contention") or []) or "none"
    return (
        f"The engine under OpenMP wait policy {machine['omp_wait_policy']}"
        + (f" ({reason})" if reason else "")
        + f"; competing processes: {competitors}."
        + _profile_note(result.get("profile", {}).get(workload))
    )


def _profile_note(profile: dict[str, Any] | None) -> str:
    """What a benchmark's profile of the engine's step says about its bound, for a record's note."""
    if not profile:
        return ""
    kinds = ", ".join(f"{kind} {ms:.1f} ms" for kind, ms in list(profile["kinds_ms"].items())[:4])
    return (
        f" Profile of one engine step under torch.profiler: {profile['step_ms']:.1f} ms, of which "
        f"convolutions {100 * profile['conv_share']:.0f}% at {profile['conv_gflops']:.1f} GFLOP/s, "
        f"against {profile['matmul_peak_gflops']:.1f} GFLOP/s for a large fp32 matrix product on "
        f"the same threads; the largest kinds of operation: {kinds}"
        + (
            "; of kind other: "
            + ", ".join(f"{name} {ms:.1f} ms" for name, ms in profile["other_ms"].items())
            if profile.get("other_ms")
            else ""
        )
        + "."
    )


def publish_benchmark(path: Path, describe: dict[str, Any], folder: Path = LEDGER) -> list[Path]:
    """Add (or replace) the speed records of a benchmark's JSON in the ledger."""
    result = read_json(path)
    if "training" not in result or "machine" not in result:
        raise UserError(
            f"{path} is not the benchmark command's JSON (it has no training or machine): "
            "publish results/benchmark/benchmark.json, the one `python -m fashion_cnn benchmark` "
            "writes."
        )
    paths = []
    for record in records_from_benchmark(result, describe):
        checked = check_record(record, str(path))
        target = folder / f"{checked['name']}.json"
        write_json(target, checked)
        paths.append(target)
    return paths


def record_from_comparison(
    row: dict[str, str], metrics: dict[str, Any], describe: dict[str, Any]
) -> dict[str, Any]:
    """A difference record of one row of compare_experiments' comparisons.csv; the machine,
    software, commit and date are those of experiment a's aggregate metrics.json (``metrics``)."""
    record = record_from_metrics(metrics, describe)
    for key in ("accuracy", "trust", "settings", "training_time"):
        record.pop(key, None)
    if row["p_value"] in ("", None):
        raise UserError(
            f"The comparison {row['a']} − {row['b']} ({row['measure']}) has no test (one run on a "
            "side): a difference record needs the t-test; run more seeds."
        )
    record["kind"] = "difference"
    record["difference"] = {
        "a": row["a"],
        "b": row["b"],
        "measure": row["measure"],
        "n": min(int(row["n_a"]), int(row["n_b"])),
        "difference": float(row["difference"]),
        "ci95": [float(row["ci95_low"]), float(row["ci95_high"])],
        "p_value": float(row["p_value"]),
        "test": f"{row['test']}, t = {float(row['t']):.2f}, {float(row['df']):.0f} df",
    }
    return record


def publish_comparison(
    csv_path: Path, pair: tuple[str, str], measure: str, describe: dict[str, Any], folder: Path
) -> Path:
    """Add (or replace) the difference record of one pair and measure of a comparisons.csv
    (results/comparisons/), its machine from results/<a>/metrics.json beside it."""
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen = [r for r in rows if (r["a"], r["b"], r.get("measure")) == (*pair, measure)]
    if not chosen:
        raise UserError(
            f"{csv_path} has no comparison {pair[0]} − {pair[1]} on {measure}; publish a pair "
            "and measure it holds (columns a, b, measure)."
        )
    metrics_path = csv_path.parent.parent / pair[0] / "metrics.json"
    if not metrics_path.is_file():
        raise UserError(
            f"{metrics_path} is missing: a comparison's record takes its machine and commit from "
            f"experiment {pair[0]}'s metrics.json, in the results folder beside comparisons/."
        )
    record = record_from_comparison(chosen[0], read_json(metrics_path), describe)
    checked = check_record(record, str(csv_path))
    path = folder / f"{checked['name']}.json"
    write_json(path, checked)
    return path


def publish(metrics_path: Path, describe: dict[str, Any], folder: Path = LEDGER) -> Path:
    """Add (or replace) the record of one experiment's results in the ledger."""
    metrics = read_json(metrics_path)
    if "test_accuracy_over_seeds" not in metrics:
        raise UserError(
            f"{metrics_path} is not an experiment's aggregate metrics.json (it has no "
            "test_accuracy_over_seeds): publish results/<experiment>/metrics.json, the one "
            "aggregate_seeds writes, not a seed's."
        )
    record = check_record(record_from_metrics(metrics, describe), str(metrics_path))
    path = folder / f"{record['name']}.json"
    write_json(path, record)
    return path
