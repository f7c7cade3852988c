"""The chapter's script against the engine, each timed as a whole process (docs/benchmarks.md,
"The chapter's script"): the second baseline of the speed claims, and the chapter's time to its
~90% test accuracy.

Each repeat runs, one after the other (alternating, so that a slow spell hits both):

- ``tools/chapter_listing.py`` (the chapter's code, torch's defaults, none of this project's
  settings) for ``--epochs`` epochs, timed from the start of the process to each epoch's line
  (which carries the test accuracy the chapter prints after every epoch) and to its exit;
- ``python -m fashion_cnn train-model`` on the same recipe (``cnn_baseline``: the chapter's CNN
  without the Softmax the chapter adds before its loss) for as many epochs, timed from the start
  of the process to its exit, with as many threads as the workflow gives it on this machine.

Both start in this process's environment minus ``OMP_WAIT_POLICY``: OpenMP's default for the
chapter's script, the command line's own choice for the engine (engine.shared_cores). After the
last repeat the engine's model is evaluated on the test set (not timed). The chapter's time
includes the test pass it makes after each epoch; the engine's has none.

The engine saves its state after every epoch; each saved state is copied as it appears and
tested after the run (the test set is never looked at while training is timed), so the engine's
time to 90% is the time to the first saved epoch at 90% or more.

``--publish NAME`` adds records to the results ledger (docs/ledger/): ``NAME.whole_process``,
the two processes' images/s; ``NAME.chapter_to_90`` and ``NAME.engine_to_90``, each one's time to
its first epoch at 90% test accuracy or more (``--targets`` gives the engine's other thresholds:
``--targets 94 95.5`` publishes ``NAME.engine_to_94`` and ``NAME.engine_to_95_5``); then
``make docs``. With ``--engine-only --seeds 42 43 44`` each repeat is one seed (the recipe's
``seed``), and ``NAME.accuracy`` adds the seeds' test accuracies after their last epoch.

Run: ``python tools/chapter_script_timing.py --raw-folder /usr/share/datasets/fashion-mnist
--data results/data/fashion_mnist.npz --epochs 10 --repeats 2 --output-json timing.json``
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow"))  # the package, from this checkout (for --publish)
EPOCH_LINE = re.compile(r"^Epoch (\d+)/\d+, loss [\d.]+, test accuracy ([\d.]+)%$")


def environment(package: bool = False) -> dict[str, str]:
    """This process's environment without a wait policy; with ``package``, the checkout's
    package first on the path (for ``python -m fashion_cnn``, from any folder)."""
    values = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if package:
        values["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO / "workflow"), values.get("PYTHONPATH")])
        )
    return values


def chapter_script(raw_folder: str, root: Path, epochs: int, train_images: int) -> dict:
    """Wall seconds to each epoch's line (with its test accuracy) and to the process's exit."""
    command = [
        sys.executable,
        str(REPO / "tools" / "chapter_listing.py"),
        "--raw-folder", raw_folder, "--root", str(root), "--epochs", str(epochs),
        "--train-images", str(train_images),
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment())
    assert process.stdout is not None
    rows = []
    for line in process.stdout:
        match = EPOCH_LINE.match(line.strip())
        if match:
            rows.append(
                {
                    "epoch": int(match.group(1)),
                    "test_accuracy": float(match.group(2)) / 100,
                    "seconds": time.perf_counter() - started,
                }
            )
    if process.wait() != 0:
        sys.exit(f"the chapter's script failed (exit status {process.returncode})")
    return {"seconds": time.perf_counter() - started, "epochs": rows}


def engine(data: Path, folder: Path, args: argparse.Namespace, repeat: int) -> dict:
    """Wall seconds of the engine's training process (``args.experiment`` for ``args.epochs``,
    with ``--seeds`` the repeat's seed), start to exit, and to each epoch's saved state
    (``engine.checkpoint_every_epochs: 1``): the state file is copied to
    ``folder/epochs-<repeat>/`` as soon as it changes, for its test accuracy after the run."""
    recipe = {
        **json.loads(args.recipe),
        "epochs": args.epochs,
        **({"train_subset": args.train_images} if args.train_images else {}),
        **({"seed": args.seeds[repeat]} if getattr(args, "seeds", None) else {}),
    }
    threads = args.threads
    command = [
        sys.executable, "-m", "fashion_cnn", "train-model",
        "--configfile", str(REPO / "config.yaml"),
        "--config-json", json.dumps({"experiments": {args.experiment: recipe}}),
        "--experiment", args.experiment, "--data", str(data),
        "--model", str(folder / "model.pt"), "--history", str(folder / "history.csv"),
        "--summary", str(folder / "model_summary.txt"), "--threads", str(threads),
        "--log", str(folder / "train.log"),
    ]  # fmt: skip
    for stale in ("model.pt", "train_state.pt"):
        (folder / stale).unlink(missing_ok=True)  # no resume: every repeat trains from the start
    snapshots = folder / f"epochs-{repeat}"
    shutil.rmtree(snapshots, ignore_errors=True)
    snapshots.mkdir()
    state, seen, rows = folder / "train_state.pt", None, []
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=environment(package=True), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    seconds = None
    while seconds is None:
        if process.poll() is not None:
            seconds = time.perf_counter() - started  # and one last look at the state below
        with contextlib.suppress(FileNotFoundError):  # replaced atomically: whole or absent
            stamp = state.stat().st_mtime_ns
            if stamp != seen:
                copy = snapshots / f"{len(rows):03d}.pt"
                shutil.copyfile(state, copy)
                seen = stamp
                now = time.perf_counter() - started if seconds is None else seconds
                rows.append({"state": str(copy), "seconds": now})
        time.sleep(0.05)
    if process.returncode:
        raise RuntimeError(f"train-model failed: {process.stderr.read().decode()[-2000:]}")
    return {"seconds": seconds, "epochs": rows}


def epoch_accuracies(data: Path, run: dict, threads: int) -> list[dict]:
    """Each saved epoch's (epoch, seconds, test accuracy), the first of each epoch kept."""
    rows, epochs = [], set()
    for row in run["epochs"]:
        folder = Path(row["state"]).parent / Path(row["state"]).stem
        folder.mkdir(exist_ok=True)
        shutil.copyfile(row["state"], folder / "model.pt")
        accuracy = engine_test_accuracy(data, folder, threads)
        epoch = json.loads((folder / "metrics.json").read_text())["training"]["epochs"]
        if epoch not in epochs:
            epochs.add(epoch)
            rows.append({"epoch": epoch, "seconds": row["seconds"], "test_accuracy": accuracy})
    return rows


def engine_test_accuracy(data: Path, folder: Path, threads: int) -> float:
    command = [
        sys.executable, "-m", "fashion_cnn", "evaluate-model",
        "--checkpoint", str(folder / "model.pt"), "--data", str(data),
        "--metrics", str(folder / "metrics.json"),
        "--confusion-csv", str(folder / "confusion.csv"),
        "--confusion-png", str(folder / "confusion.png"),
        "--per-class-csv", str(folder / "per_class.csv"), "--scores", str(folder / "scores.npz"),
        "--threads", str(threads),
    ]  # fmt: skip
    subprocess.run(command, check=True, env=environment(package=True), capture_output=True)
    return float(json.loads((folder / "metrics.json").read_text())["test_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw-folder", help="the folder of the four .gz files")
    parser.add_argument("--data", help="the workflow's fashion_mnist.npz")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=0, help="0 = all (for tests: fewer)")
    parser.add_argument("--threads", type=int, default=min(4, len(os.sched_getaffinity(0))))
    parser.add_argument("--output-json", help="where the timing goes (required unless --from-json)")
    parser.add_argument(
        "--publish", metavar="NAME", help="add the figures to docs/ledger/ as NAME.*"
    )
    parser.add_argument("--cpu", help="the CPU for the records, with the flags that matter")
    parser.add_argument("--from-json", help="publish this earlier --output-json, measuring nothing")
    parser.add_argument(
        "--experiment",
        default="cnn_baseline",
        help="the engine's recipe from config.yaml, trained for --epochs (another than "
        "cnn_baseline, the chapter's, needs --engine-only)",
    )
    parser.add_argument("--note", default="", help="a sentence added to each record's note")
    parser.add_argument(
        "--question",
        default="speed",
        help="the results page the records go on (docs/results/<question>.md; default speed)",
    )
    parser.add_argument(
        "--recipe",
        default="{}",
        help='the engine\'s recipe changed (JSON, e.g. \'{"precision": "fp32"}\'; needs '
        "--engine-only)",
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        type=float,
        default=[90.0],
        metavar="PERCENT",
        help="the test accuracies whose time the engine's records give (default 90: the "
        "chapter's); each a record NAME.engine_to_<PERCENT>",
    )
    parser.add_argument(
        "--engine-only",
        action="store_true",
        help="time the engine alone (its time to --targets), without the chapter's script",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        metavar="SEED",
        help="one repeat per seed (replaces --repeats; needs --engine-only); --publish then adds "
        "NAME.accuracy, the seeds' test accuracies after their last epoch",
    )
    args = parser.parse_args()
    if not args.from_json and not (
        args.data and args.output_json and (args.raw_folder or args.engine_only)
    ):
        parser.error(
            "measuring needs --data, --output-json and (unless --engine-only) --raw-folder"
        )
    if args.publish:
        from fashion_cnn.results.ledger import QUESTIONS  # here: a timing alone loads no package

        if args.question not in QUESTIONS:
            parser.error(
                f"--question {args.question} is no results page; choose one of "
                f"{', '.join(QUESTIONS)}"
            )
    if args.seeds and not args.engine_only:
        parser.error("--seeds changes the engine's recipe from the chapter's: add --engine-only")
    if args.seeds:
        args.repeats = len(args.seeds)
    if args.recipe != "{}" and not args.engine_only:
        parser.error("--recipe changes the engine's recipe from the chapter's: add --engine-only")
    if args.experiment != "cnn_baseline" and not args.engine_only:
        parser.error(
            f"--experiment {args.experiment} is not the chapter's recipe, so its whole process "
            "is no comparison with the chapter's script: add --engine-only (its time to 90% is "
            "then published beside the chapter's, which cnn_baseline's timing records)"
        )
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
    else:
        report = measure(args)
        Path(args.output_json).write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report["images_per_second"]))
    if args.publish:
        for record in records(report, args):
            publish(record)


def measure(args: argparse.Namespace) -> dict:
    """Both processes, ``--repeats`` times in turn; the engine's model tested after the last."""
    command = "python tools/chapter_script_timing.py " + shlex.join(sys.argv[1:])
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as scratch:
        root, folder = Path(scratch) / "data", Path(scratch) / "engine"
        folder.mkdir()
        runs: dict[str, list] = {"chapter_script": [], "engine_process": []}
        for repeat in range(args.repeats):
            if not args.engine_only:
                runs["chapter_script"].append(
                    chapter_script(args.raw_folder, root, args.epochs, args.train_images)
                )
            runs["engine_process"].append(engine(Path(args.data), folder, args, repeat))
        accuracy = engine_test_accuracy(Path(args.data), folder, args.threads)
        # every repeat's epochs, tested after the runs (never while they are timed)
        curves = [
            epoch_accuracies(Path(args.data), run, args.threads) for run in runs["engine_process"]
        ]
    images = (args.train_images or 60_000) * args.epochs
    return {
        "command": command,
        "commit": commit,
        "date": datetime.date.today().isoformat(),
        "epochs": args.epochs,
        "images": images,
        "engine_threads": args.threads,
        "engine_experiment": args.experiment,
        "engine_recipe": json.loads(args.recipe),
        "engine_seeds": args.seeds or [],
        "chapter_script": runs["chapter_script"],
        "engine_process": {
            "seconds": [run["seconds"] for run in runs["engine_process"]],
            "test_accuracy": accuracy,
            "epochs": curves[-1],
            "curves": curves,
        },
        "images_per_second": {
            "chapter_script": [images / run["seconds"] for run in runs["chapter_script"]],
            "engine_process": [images / run["seconds"] for run in runs["engine_process"]],
        },
    }


def records(report: dict, args: argparse.Namespace) -> list[dict]:
    """The ledger's records of one timing: the two whole processes' images/s (when the chapter's
    script ran), and each side's time to 90% test accuracy (when it got there)."""
    # here, not at the top: a timing without --publish loads neither torch nor the package
    import torch
    from fashion_cnn.core.provenance import cpu_name

    common = {
        "question": getattr(args, "question", "speed"),
        "command": report["command"],
        "commit": report["commit"],
        "machine": {
            "cpu": args.cpu or cpu_name(),
            "cores": len(os.sched_getaffinity(0)),
            "threads": report.get("engine_threads", args.threads),
            "shared": False,
        },
        "software": {"torch": torch.__version__.split("+")[0]},
        "date": report["date"],
        "source": "measured",
    }
    made = [whole_process(report, args, common), chapter_to_90(report, args, common)]
    made += [engine_to(target, report, args, common) for target in getattr(args, "targets", [90])]
    made.append(seeds_accuracy(report, args, common))
    note = getattr(args, "note", "")
    return [{**record, "note": f"{record['note']} {note}".strip()} for record in made if record]


def whole_process(report: dict, args: argparse.Namespace, common: dict) -> dict | None:
    if not report["chapter_script"]:
        return None
    epochs, accuracy = report["epochs"], report["engine_process"]["test_accuracy"]
    printed = [
        " / ".join(f"{100 * row['test_accuracy']:.2f}" for row in run["epochs"])
        for run in report["chapter_script"]
    ]
    threads = report.get("engine_threads", args.threads)
    return {
        **common,
        "name": f"{args.publish}.whole_process",
        "title": f"cnn, {epochs} epochs: the engine's training process against the chapter's "
        "script, each timed as a whole process",
        "kind": "speed",
        "speed": {
            "workload": f"cnn, {epochs} epochs, whole process",
            "switches": "the workflow's (auto)",
            "engine": report["images_per_second"]["engine_process"],
            "chapter": report["images_per_second"]["chapter_script"],
            "chapter_environment": "the chapter's script (tools/chapter_listing.py) as a whole "
            "process: OpenMP's default wait policy, torch's default threads, the C library's "
            "allocator, its test pass after every epoch included",
        },
        "note": f"The engine: python -m fashion_cnn train-model, cnn_baseline for {epochs} epochs, "
        f"{threads} threads, OpenMP's wait policy by engine.shared_cores: keep; its model's "
        f"test accuracy afterwards {100 * accuracy:.2f}%. The chapter's script's test accuracy "
        f"after each epoch, per repeat: {'; '.join(printed)} (%).",
    }


def chapter_to_90(report: dict, args: argparse.Namespace, common: dict) -> dict | None:
    reached = [
        next((row for row in run["epochs"] if row["test_accuracy"] >= 0.90), None)
        for run in report["chapter_script"]
    ]
    if not any(reached):
        return None
    return {
        **common,
        "name": f"{args.publish}.chapter_to_90",
        "title": "The chapter's script, a whole process, to its first epoch at 90% test accuracy "
        "or more (the chapter's ~90%)",
        "kind": "duration",
        "duration": {"seconds": [row["seconds"] for row in reached if row is not None]},
        "note": "Reached at epoch "
        + ", ".join(str(row["epoch"]) if row else f"none of {report['epochs']}" for row in reached)
        + f" (one per repeat); the engine's whole process for all {report['epochs']} epochs took "
        + ", ".join(f"{seconds:.0f}" for seconds in report["engine_process"]["seconds"])
        + " s.",
    }


def engine_to(target: float, report: dict, args: argparse.Namespace, common: dict) -> dict | None:
    """Each repeat's first saved epoch at ``target``% or more (a report from before every
    repeat was tested holds the last repeat's epochs alone)."""
    engine = report["engine_process"]
    curves = engine.get("curves") or [engine.get("epochs", [])]
    firsts = [
        next((row for row in curve if row["test_accuracy"] >= target / 100), None)
        for curve in curves
    ]
    if not any(firsts):
        return None
    suffix = f"{target:g}".replace(".", "_")  # 95.5: engine_to_95_5 (a dot parts a name)
    experiment = report.get("engine_experiment", "cnn_baseline")
    changed = report.get("engine_recipe") or {}
    if changed:
        experiment += " with " + ", ".join(f"{key} {value}" for key, value in changed.items())
    tested = "; ".join(
        " / ".join(f"{100 * row['test_accuracy']:.2f}" for row in curve) for curve in curves
    )
    seeds = report.get("engine_seeds") or []
    unit = "seed" if seeds else "repeat"
    each = f"{unit} ({', '.join(map(str, seeds))})" if seeds else unit
    return {
        **common,
        "name": f"{args.publish}.engine_to_{suffix}",
        "title": f"The engine ({experiment}, {report['epochs']} epoch"
        f"{'s' if report['epochs'] != 1 else ''}), a whole process, to its "
        f"first epoch at {target:g}% test accuracy or more",
        "kind": "duration",
        "duration": {"seconds": [row["seconds"] for row in firsts if row is not None]},
        "note": "Reached at epoch "
        + ", ".join(str(row["epoch"]) if row else "never" for row in firsts)
        + f" (one per {each}), timed to that epoch's saved state (so its save included); each "
        f"epoch's state tested after the run, per {unit}: {tested} (%, epochs 1 to "
        f"{report['epochs']}).",
    }


def seeds_accuracy(report: dict, args: argparse.Namespace, common: dict) -> dict | None:
    """With ``--seeds``: each seed's test accuracy after its last epoch (its saved state, tested
    after the run), with their mean, spread and 95% interval."""
    from fashion_cnn.results.stats import describe  # here: a timing alone loads no package

    seeds = report.get("engine_seeds") or []
    if not seeds:
        return None
    values = [curve[-1]["test_accuracy"] for curve in report["engine_process"]["curves"]]
    summary = describe(values)
    experiment = report.get("engine_experiment", "cnn_baseline")
    return {
        **common,
        "name": f"{args.publish}.accuracy",
        "title": f"{experiment}, {report['epochs']} epochs: the test accuracy after the last "
        f"epoch, {len(seeds)} seeds, each a whole timed process",
        "kind": "accuracy",
        "accuracy": {
            **{key: summary[key] for key in ("n", "mean", "std", "ci95")},
            "seeds": list(seeds),
            "values": summary["values"],
        },
        "training_time": ", ".join(
            f"{seconds / 60:.1f}" for seconds in report["engine_process"]["seconds"]
        )
        + " min (each seed's whole process)",
        "note": "Each seed's last saved epoch, tested after the run (with the recipe's test-time "
        "views, where it has any).",
    }


def publish(record: dict) -> None:
    # here, not at the top: a timing without --publish loads none of the package
    from fashion_cnn.core.files import write_json
    from fashion_cnn.results.ledger import LEDGER, check_record

    write_json(LEDGER / f"{record['name']}.json", check_record(record, record["name"]))
    print(f"published {LEDGER / record['name']}.json; run make docs")


if __name__ == "__main__":
    main()
