"""Command line: one subcommand per workflow step (``python -m fashion_cnn STEP --help``).

A user mistake ends with one paragraph on stderr (and in the log) and exit status 2, never a
traceback. Each command imports its stage inside its function: the parser, ``check-config`` and
``choices`` start in a fraction of a second, without torch (which takes seconds to import, and on
a login node may exist only inside the container). SIGTERM during training saves the state and exits with 143, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fashion_cnn.config.choices import models_with
from fashion_cnn.config.schema import argument_type, schema_at
from fashion_cnn.config.settings import (
    EngineSettings,
    ExperimentSettings,
    ExportSettings,
    PretrainedSettings,
)
from fashion_cnn.core.attempts import (
    attempts_path,
    finish_attempt,
    repeated_stop,
    start_attempt,
)
from fashion_cnn.core.errors import TrainingInterrupted, UserError
from fashion_cnn.results.comparisons import MEASURES as COMPARED_MEASURES
from fashion_cnn.tools.benchmark.arguments import add_arguments as add_benchmark_arguments

log = logging.getLogger("fashion_cnn")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 143

# Command-line values are checked like the config keys they stand for (workflow/schemas/).
THREADS = argument_type({"type": "integer", "minimum": 1, "maximum": 4096}, int)
DEVICE = argument_type("engine.device")


class Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported like every other user mistake: one paragraph."""

    def error(self, message: str):
        command = " ".join(["python -m fashion_cnn", *self.prog.split()[1:], "--help"])
        paragraph = UserError(
            f"{self.prog}: {message}. Run `{command}` for the options."
        ).paragraph()
        print(f"fashion-cnn: ERROR: {paragraph}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def setup_logging(log_path: str | None) -> int:
    """Everything into the rule's log file, under this attempt's header (earlier unfinished
    attempts above it: fashion_cnn/core/attempts.py); warnings and errors also on stderr.
    Returns the attempt's number (1 without a log)."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("fashion-cnn: %(levelname)s: %(message)s"))
    attempt = 1
    if log_path:
        attempt = start_attempt(Path(log_path))
        for path in (Path(log_path), attempts_path(Path(log_path))):
            handler = logging.FileHandler(path, mode="a")
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            root.addHandler(handler)
        stderr.setLevel(logging.WARNING)
    root.addHandler(stderr)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    logging.getLogger("PIL").setLevel(logging.WARNING)
    return attempt


def _config(args) -> dict:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.config.validation import load_config

    return load_config(args.configfile or [], args.config_json or [])


def _experiment(args) -> tuple[dict, dict]:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.config.validation import get_experiment

    config = _config(args)
    return config, get_experiment(config, args.experiment)


# ----------------------------------------------------------------------------- commands


def cmd_check_config(args) -> None:
    config = _config(args)
    print(
        f"config OK: experiments {', '.join(config['experiments'])}; runs {', '.join(config['run_experiments'])}"
    )


def cmd_download_data(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.data.dataset import download_dataset

    download_dataset(args.mirror, Path(args.folder), args.timeout)


def cmd_prepare_data(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.data.dataset import prepare_dataset

    prepare_dataset(Path(args.raw_folder), Path(args.output))


def cmd_plot_samples(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.data.dataset import load_prepared
    from fashion_cnn.evaluation.plots import plot_samples

    arrays = load_prepared(args.data)
    plot_samples(
        arrays["train_images"], arrays["train_labels"], Path(args.grid), Path(args.colorbar)
    )


def cmd_plot_augmentations(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.data.dataset import load_prepared
    from fashion_cnn.evaluation.plots import plot_augmentations

    arrays = load_prepared(args.data)
    plot_augmentations(arrays["train_images"], Path(args.output_folder), args.seed)


def cmd_fetch_weights(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.models.weights import fetch_imagenet_weights

    fetch_imagenet_weights(Path(args.folder), Path(args.status), args.strict, args.model)


def _take_gpu(args, device: str) -> None:
    """A job its scheduler gave a GPU: its own device among several, and none is an error."""
    if not args.expect_gpu:
        return
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.config.site import visible_gpus
    from fashion_cnn.training.device import claim_gpu, require_gpu

    if device in ("auto", "cuda"):
        claim_gpu(visible_gpus() or 0)
    require_gpu(device)


def cmd_train_model(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.training.engine import train_model
    from fashion_cnn.training.run import TrainingJob

    config, experiment = _experiment(args)
    _take_gpu(args, config["engine"]["device"])
    job = TrainingJob(
        name=args.name or args.experiment,
        experiment=ExperimentSettings.from_dict(experiment),
        engine=EngineSettings.from_dict(config["engine"]),
        data_path=Path(args.data),
        model_path=Path(args.model),
        history_path=Path(args.history),
        summary_path=Path(args.summary),
        weights_input=args.weights_status,
        teacher_path=Path(args.teacher) if args.teacher else None,
        strict_weights=PretrainedSettings.from_dict(config["pretrained"]).strict,
        threads=args.threads,
    )
    train_model(job)


def cmd_evaluate_model(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    import numpy as np

    from fashion_cnn.evaluation.evaluate import (
        AssessmentOptions,
        EvaluationOutputs,
        evaluate_model,
    )
    from fashion_cnn.evaluation.plots import plot_confusion_matrix

    outputs = EvaluationOutputs(
        Path(args.metrics), Path(args.confusion_csv), Path(args.per_class_csv), Path(args.scores)
    )
    metrics = evaluate_model(
        Path(args.checkpoint),
        Path(args.data),
        outputs,
        device_spec=args.device,
        batch_size=args.batch_size,
        threads=args.threads,
        assessment=AssessmentOptions(args.calibration_bins, args.temperature_images),
    )
    matrix = np.loadtxt(
        args.confusion_csv, delimiter=",", skiprows=1, usecols=range(1, 11), dtype=int
    )
    title = f"{metrics['experiment']}: test accuracy {100 * metrics['test_accuracy']:.2f}%"
    plot_confusion_matrix(matrix, Path(args.confusion_png), title)


def cmd_plot_filters(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.evaluation.plots import plot_filters
    from fashion_cnn.models.catalog import MODELS
    from fashion_cnn.models.checkpoint import load_checkpoint, model_from_checkpoint

    checkpoint = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(checkpoint, args.checkpoint)
    filters = MODELS.get(checkpoint["model"]["name"]).filters
    plot_filters(model, Path(args.chapter_figure), Path(args.layers_figure), filters)


def cmd_plot_history(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.evaluation.plots import plot_history

    plot_history([Path(path) for path in args.history], Path(args.output), args.title)


def cmd_aggregate_seeds(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.results.replicates import aggregate_seeds

    if len(args.metrics) != len(args.histories):
        raise UserError(
            "aggregate-seeds needs one --histories file per --metrics file, in the same order."
        )
    if len(args.metrics) != len(args.robustness):
        raise UserError(
            "aggregate-seeds needs one --robustness file per --metrics file, in the same order."
        )
    aggregate_seeds(
        [Path(path) for path in args.metrics],
        [Path(path) for path in args.histories],
        [Path(path) for path in args.robustness],
        Path(args.representative_confusion_csv),
        Path(args.representative_model_summary),
        outputs={
            "metrics": Path(args.output_metrics),
            "per_seed": Path(args.output_per_seed),
            "curves": Path(args.output_curves),
            "confusion_png": Path(args.output_confusion_png),
            "model_summary": Path(args.output_model_summary),
        },
    )


def cmd_predict(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.evaluation.predicting import predict_files

    predict_files(
        Path(args.model),
        [Path(path) for path in args.images],
        Path(args.output),
        invert=args.invert,
        batch_size=args.batch_size,
        threads=args.threads,
    )


def cmd_export_onnx(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.evaluation.export import export_onnx

    config = _config(args)
    _take_gpu(args, config["engine"]["device"])
    export_onnx(
        Path(args.checkpoint),
        Path(args.data),
        onnx_path=Path(args.onnx),
        report_path=Path(args.report),
        settings=ExportSettings.from_dict(config["export"]),
        threads=args.threads,
    )


def cmd_compare_experiments(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.core.files import read_json
    from fashion_cnn.results.comparisons import write_comparisons

    paths = {read_json(path)["experiment"]: Path(path) for path in args.metrics}
    for pair in args.pair:
        missing = [name for name in pair if name not in paths]
        if missing:
            raise UserError(
                f"compare-experiments: no --metrics file of {', '.join(missing)}; pass the "
                "metrics.json (over seeds) of every experiment a --pair names."
            )
    write_comparisons(
        [tuple(pair) for pair in args.pair],
        paths,
        {"csv": Path(args.csv), "markdown": Path(args.markdown), "html": Path(args.html)},
    )


def cmd_summarize_sweep(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.results.sweeps import summarize_sweep

    try:
        definition = json.loads(args.definition)
    except json.JSONDecodeError as error:
        raise UserError(
            f"summarize-sweep: --definition is not valid JSON ({error}). Quote it in the shell."
        ) from error
    summarize_sweep(
        definition,
        [Path(path) for path in args.metrics],
        {
            "csv": Path(args.csv),
            "markdown": Path(args.markdown),
            "html": Path(args.html),
            "plot": Path(args.plot),
        },
    )


def cmd_summarize(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.evaluation.trust_plots import plot_robustness_across
    from fashion_cnn.results.summary import write_summary

    if len(args.metrics) != len(args.onnx_reports):
        raise UserError(
            "summarize needs one --onnx-reports file per --metrics file, in the same order."
        )
    rows = write_summary(
        args.metrics, args.onnx_reports, Path(args.csv), Path(args.markdown), Path(args.html)
    )
    if args.robustness_png:
        plot_robustness_across(rows, Path(args.robustness_png))


def cmd_assess_robustness(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.evaluation.robustness import assess_robustness

    assess_robustness(
        Path(args.checkpoint),
        Path(args.data),
        Path(args.output),
        images=args.corruption_images,
        device_spec=args.device,
        batch_size=args.batch_size,
        threads=args.threads,
    )


def cmd_assess_experiment(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.results.assessment import AssessmentOutputs, Gallery, assess_experiment

    assess_experiment(
        Path(args.metrics),
        Path(args.scores),
        Path(args.data),
        AssessmentOutputs(
            classification_csv=Path(args.classification_csv),
            robustness_csv=Path(args.robustness_csv),
            robustness_png=Path(args.robustness_png),
            reliability_png=Path(args.reliability_png),
            pairs_csv=Path(args.pairs_csv),
            failures_png=Path(args.failures_png),
        ),
        Gallery(args.gallery_pairs, args.gallery_images),
    )


def cmd_choices(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.tools.choices import write_or_check

    write_or_check(args.check)


def cmd_publish(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.core.files import read_json
    from fashion_cnn.results.ledger import LEDGER, publish, publish_benchmark

    folder = Path(args.ledger or LEDGER)
    if args.metrics.endswith(".csv"):  # compare_experiments' table: one pair and measure of it
        _publish_comparison(args, folder)
        return
    if "machine" in read_json(args.metrics):  # the benchmark command's JSON: its own command
        describe = {"name": args.as_name, "shared": args.shared, "cpu": args.cpu}
        for path in publish_benchmark(Path(args.metrics), describe, folder):
            log.info("published %s", path)
        log.info("run make docs to render the pages")
        return
    describe = _record_description(args, "an experiment's results", {})
    path = publish(Path(args.metrics), describe, folder)
    log.info("published %s; run make docs to render the pages", path)


def _record_description(args, what: str, options: dict) -> dict:
    """What a record says of itself from publish's options; one paragraph naming any missing
    (``options``: the ones this kind of record needs besides page, title and command)."""
    given = {
        **options,
        "--question": args.question,
        "--title": args.title,
        "--command": args.command_line,
    }
    missing = [option for option, value in given.items() if not value]
    if missing:
        raise UserError(
            f"publish {args.metrics}: {what} need {', '.join(missing)} (which page, what was "
            "measured, and the exact command that ran it)."
        )
    return {
        "name": args.as_name,
        "question": args.question,
        "title": args.title,
        "command": args.command_line,
        "shared": args.shared,
        "reference": args.reference,
        "headline": args.headline or None,
        "cpu": args.cpu,
    }


def _publish_comparison(args, folder: Path) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.results.ledger import publish_comparison

    options = {"--pair": args.pair, "--measure": args.measure}
    describe = _record_description(args, "a comparison's record and its pair and measure", options)
    pair = (args.pair[0], args.pair[1])
    path = publish_comparison(Path(args.metrics), pair, args.measure, describe, folder)
    log.info("published %s; run make docs to render the pages", path)


def cmd_docs(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.results.pages import check_docs, write_docs

    if args.check:
        check_docs()
        return
    for path in write_docs():
        log.info("wrote %s", path)


def cmd_benchmark(args) -> None:
    # lazy: each command loads only its own stage (see the module docstring)
    from fashion_cnn.tools.benchmark.report import run_benchmark

    run_benchmark(args)


# ----------------------------------------------------------------------------- parser


@dataclass(frozen=True)
class Command:
    """One subcommand: its function, help, the shared options it takes and its own."""

    name: str
    function: Callable[[argparse.Namespace], None]
    help: str
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    config: bool = False  # --configfile and --config-json
    experiment: bool = False  # --experiment
    threads: bool = False  # --threads
    gpu: bool = False  # --expect-gpu


def _shared_arguments(sub: argparse.ArgumentParser, command: Command) -> None:
    sub.add_argument("--log", help="append the log to this file (warnings also go to stderr)")
    if command.config:
        sub.add_argument(
            "--configfile",
            action="extend",
            nargs="+",
            help="YAML config files, merged in order (as snakemake's --configfile)",
        )
        sub.add_argument("--config-json", action="append", help="JSON config override (repeatable)")
    if command.experiment:
        sub.add_argument("--experiment", required=True, help="experiment name from the config")
    if command.threads:
        sub.add_argument("--threads", type=THREADS, default=1, help="CPU threads for PyTorch")
    if command.gpu:
        sub.add_argument(
            "--expect-gpu",
            action="store_true",
            help="the job was given a GPU (its rule requests one): stop at once if there is "
            "none, rather than run on the CPU; on a machine with several, take a free one",
        )


def _required(sub: argparse.ArgumentParser, *names: str) -> None:
    for name in names:
        sub.add_argument(f"--{name}", required=True)


def _choices_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--check", action="store_true", help="only check that the file is up to date")


def _download_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--folder", required=True)
    sub.add_argument(
        "--mirror",
        action="append",
        required=True,
        type=argument_type(schema_at("data.mirrors")["items"]),
        help="base URL ending in / (repeatable, tried in order)",
    )
    sub.add_argument("--timeout", type=argument_type("data.timeout_s", float), default=30.0)


def _augmentation_figure_arguments(sub: argparse.ArgumentParser) -> None:
    _required(sub, "data", "output-folder")
    sub.add_argument("--seed", type=argument_type("experiments.*.seed", int), default=0)


def _fetch_weights_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--model",
        default="resnet18",
        choices=models_with("pretrained"),
        help="whose weights (default: resnet18)",
    )
    sub.add_argument("--folder", required=True)
    sub.add_argument(
        "--status", required=True, help="JSON file recording whether the weights are available"
    )
    sub.add_argument(
        "--strict", action="store_true", help="fail instead of recording 'unavailable'"
    )


def _train_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--data", required=True)
    sub.add_argument("--model", required=True, help="checkpoint to write (model.pt)")
    sub.add_argument("--history", required=True, help="per-epoch history CSV to write")
    sub.add_argument("--summary", required=True, help="model summary table to write")
    sub.add_argument("--weights-status", help="status JSON of fetch-weights (weights: imagenet)")
    sub.add_argument(
        "--teacher",
        help="the teacher's model.pt (the experiment's teacher, the same seed): its predictions "
        "are the unlabelled images' soft targets",
    )
    sub.add_argument(
        "--name",
        help="the run's name in its checkpoint and metrics (default: --experiment); a sweep's "
        "point is named sweeps/<sweep>/<key>=<value>/<key>=<value>/...",
    )


def _evaluate_arguments(sub: argparse.ArgumentParser) -> None:
    _required(
        sub,
        "checkpoint",
        "data",
        "metrics",
        "confusion-csv",
        "confusion-png",
        "per-class-csv",
        "scores",
    )
    sub.add_argument("--device", type=DEVICE, default="auto")
    sub.add_argument(
        "--batch-size", type=argument_type("engine.eval_batch_size", int), default=1000
    )
    _assessment_argument(sub, "calibration_bins")
    _assessment_argument(sub, "temperature_images")


def _assessment_argument(sub: argparse.ArgumentParser, key: str) -> None:
    """``--KEY`` for one key of the config's ``assessment`` section, its default the schema's."""
    schema = schema_at(f"assessment.{key}")
    sub.add_argument(
        f"--{key.replace('_', '-')}",
        type=argument_type(schema, int),
        default=schema["default"],
        help=schema["description"],
    )


def _predict_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...) or folders of them")
    sub.add_argument(
        "--model", required=True, help="an exported model: results/<experiment>/model.onnx"
    )
    sub.add_argument("--output", required=True, help="the CSV to write: each file's top 3 classes")
    sub.add_argument(
        "--invert",
        action="store_true",
        help="make light backgrounds dark (photos on white), as Fashion-MNIST's images were made",
    )
    sub.add_argument("--batch-size", type=argument_type("engine.eval_batch_size", int), default=256)


def _history_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--history", nargs="+", required=True, help="one history.csv per seed")
    sub.add_argument("--output", required=True)
    sub.add_argument("--title", default="training")


def _aggregate_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--metrics", nargs="+", required=True, help="each seed's metrics.json, representative first"
    )
    sub.add_argument("--histories", nargs="+", required=True, help="each seed's history.csv")
    sub.add_argument(
        "--robustness", nargs="+", required=True, help="each seed's robustness.csv, same order"
    )
    _required(sub, "representative-confusion-csv", "representative-model-summary")
    for name in ("metrics", "per-seed", "curves", "confusion-png", "model-summary"):
        sub.add_argument(f"--output-{name}", required=True)


def _compare_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--metrics", nargs="+", required=True, help="each experiment's metrics.json")
    sub.add_argument(
        "--pair", nargs=2, action="append", required=True, metavar=("A", "B"), help="compare A - B"
    )
    _required(sub, "csv", "markdown", "html")


def _sweep_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--definition", required=True, help="the sweep as JSON: name, experiment, keys, points"
    )
    sub.add_argument(
        "--metrics",
        nargs="+",
        required=True,
        help="each point's metrics.json, in the sweep's order",
    )
    _required(sub, "csv", "markdown", "html", "plot")


def _publish_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "metrics",
        help="an experiment's aggregate results/<experiment>/metrics.json, the benchmark "
        "command's JSON (one speed record per workload and switch set), or "
        "results/comparisons/comparisons.csv (one difference record: --pair, --measure)",
    )
    sub.add_argument("--as", dest="as_name", required=True, help="the record's name")
    sub.add_argument(
        "--question",
        choices=["chapter", "exercises", "frontier", "labels500", "speed", "gpu", "runtime"],
        help="the results page it goes on",
    )
    sub.add_argument("--title", help="one line: what was measured")
    sub.add_argument("--command", dest="command_line", help="the exact command that ran it")
    sub.add_argument("--cpu", help="the CPU, with the flags that matter (default: its model name)")
    sub.add_argument(
        "--shared", action="store_true", help="other work ran on the machine meanwhile"
    )
    sub.add_argument("--reference", help="the chapter's figure for the same recipe")
    sub.add_argument("--headline", action="store_true", help="in the README's table too")
    sub.add_argument("--ledger", help="the ledger's folder (default: docs/ledger)")
    sub.add_argument(
        "--pair", nargs=2, metavar=("A", "B"), help="of a comparisons.csv: the pair A − B"
    )
    sub.add_argument(
        "--measure",
        choices=list(COMPARED_MEASURES),
        help="of a comparisons.csv: what the pair is compared on",
    )


def _summary_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--metrics", nargs="+", required=True)
    sub.add_argument("--onnx-reports", nargs="+", required=True)
    _required(sub, "csv", "markdown", "html")
    sub.add_argument(
        "--robustness-png", help="also plot every experiment's accuracy under corruption"
    )


def _robustness_arguments(sub: argparse.ArgumentParser) -> None:
    _required(sub, "checkpoint", "data", "output")
    sub.add_argument("--device", type=DEVICE, default="auto")
    sub.add_argument(
        "--batch-size", type=argument_type("engine.eval_batch_size", int), default=1000
    )
    _assessment_argument(sub, "corruption_images")


def _assess_experiment_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--metrics", required=True, help="the experiment's metrics.json over seeds")
    sub.add_argument("--scores", required=True, help="the representative seed's test_scores.npz")
    sub.add_argument("--data", required=True)
    _required(
        sub,
        "classification-csv",
        "robustness-csv",
        "robustness-png",
        "reliability-png",
        "pairs-csv",
        "failures-png",
    )
    _assessment_argument(sub, "gallery_pairs")
    _assessment_argument(sub, "gallery_images")


COMMANDS = [
    Command(
        "check-config", cmd_check_config, "validate a config and print what it runs", config=True
    ),
    Command(
        "choices",
        cmd_choices,
        "write the catalog of registered choices the config validates with (choices.json)",
        _choices_arguments,
    ),
    Command(
        "download-data",
        cmd_download_data,
        "download and verify the four Fashion-MNIST files",
        _download_arguments,
    ),
    Command(
        "prepare-data",
        cmd_prepare_data,
        "parse the IDX files into one cached .npz",
        lambda sub: _required(sub, "raw-folder", "output"),
    ),
    Command(
        "plot-samples",
        cmd_plot_samples,
        "4x4 grid of training images, one image with a colorbar",
        lambda sub: _required(sub, "data", "grid", "colorbar"),
    ),
    Command(
        "plot-augmentations",
        cmd_plot_augmentations,
        "the chapter's augmentation figures",
        _augmentation_figure_arguments,
    ),
    Command(
        "fetch-weights",
        cmd_fetch_weights,
        "download torchvision's ImageNet weights of a model",
        _fetch_weights_arguments,
    ),
    Command(
        "train-model",
        cmd_train_model,
        "train one experiment",
        _train_arguments,
        config=True,
        experiment=True,
        threads=True,
        gpu=True,
    ),
    Command(
        "evaluate-model",
        cmd_evaluate_model,
        "test-set accuracy, per class, confusion matrix",
        _evaluate_arguments,
        threads=True,
    ),
    Command(
        "assess-robustness",
        cmd_assess_robustness,
        "accuracy on corrupted test images: each corruption at three severities",
        _robustness_arguments,
        threads=True,
    ),
    Command(
        "assess-experiment",
        cmd_assess_experiment,
        "beyond accuracy, over seeds: classification report, robustness, reliability diagram, "
        "the most confident mistakes",
        _assess_experiment_arguments,
    ),
    Command(
        "plot-filters",
        cmd_plot_filters,
        "convolution filters of a trained model",
        lambda sub: _required(sub, "checkpoint", "chapter-figure", "layers-figure"),
    ),
    Command(
        "plot-history",
        cmd_plot_history,
        "training loss and accuracy per epoch (mean over seeds)",
        _history_arguments,
    ),
    Command(
        "export-onnx",
        cmd_export_onnx,
        "export to ONNX and check it with ONNX Runtime",
        lambda sub: _required(sub, "checkpoint", "data", "onnx", "report"),
        config=True,
        threads=True,
        gpu=True,
    ),
    Command(
        "predict",
        cmd_predict,
        "the exported model on your own images: each file's three most likely classes, as CSV",
        _predict_arguments,
        threads=True,
    ),
    Command(
        "aggregate-seeds",
        cmd_aggregate_seeds,
        "one experiment over its seeds: mean, spread and 95%% interval; the representative "
        "seed's figures",
        _aggregate_arguments,
    ),
    Command(
        "compare-experiments",
        cmd_compare_experiments,
        "differences in test accuracy over seeds, with their interval and a t-test",
        _compare_arguments,
    ),
    Command(
        "summarize-sweep",
        cmd_summarize_sweep,
        "a sweep's table (mean, 95%% interval, the best point) and its plot",
        _sweep_arguments,
    ),
    Command("summarize", cmd_summarize, "one table of every experiment", _summary_arguments),
    Command(
        "publish",
        cmd_publish,
        "add an experiment's results over seeds to the results ledger (docs/ledger/)",
        _publish_arguments,
    ),
    Command(
        "docs",
        cmd_docs,
        "render the results pages and the README's headline table from the ledger",
        _choices_arguments,
    ),
    Command(
        "benchmark",
        cmd_benchmark,
        "training and inference speed: the chapter's loop vs the engine",
        add_benchmark_arguments,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fashion-cnn", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        sub.set_defaults(function=command.function)
        _shared_arguments(sub, command)
        if command.arguments is not None:
            command.arguments(sub)
    return parser


def _os_error_paragraph(error: OSError) -> str | None:
    where = f" ({error.filename})" if error.filename else ""
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        return (
            f"A folder the outputs need{where} cannot be made: something that is not a folder is "
            "in the way (a file, or a link to a folder that is gone, such as a purged scratch "
            "space). Remove it or make the link point to an existing folder, or set `results:` to "
            "another folder, and rerun."
        )
    if error.errno == errno.ELOOP:
        return (
            f"A path{where} is a symbolic link that leads back to itself (a link loop), so "
            "nothing can be read or written through it. Point the link at a real folder or file "
            "(or give another path) and rerun."
        )
    if error.errno == errno.ENAMETOOLONG:
        return (
            f"A path{where} is longer than the file system allows (255 bytes per name). Give a "
            "shorter name (an experiment's, a sweep's, or the results folder's) and rerun."
        )
    if error.errno == errno.EISDIR:
        return (
            f"{error.filename or 'A path'} is a folder where a file belongs. Give the path of a "
            "file (or remove the folder that is in the way) and rerun."
        )
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"No space left on the device{where}: the output was not written, and nothing "
            "half-written was left. Free some space (or point results/ to a larger disk) and rerun."
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"Cannot write{where}: permission denied or read-only file system. Make the results "
            "folder writable, or set `results:` in the config to a folder you can write, and rerun."
        )
    return None


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    attempt = 1
    try:
        # inside the handler: a log folder that cannot be written is a user mistake too
        attempt = setup_logging(args.log)
        args.function(args)
        if args.log:
            logging.shutdown()
            finish_attempt(Path(args.log))
    except UserError as error:
        text = error.paragraph()
        note = repeated_stop(Path(args.log), attempt, text) if args.log else None
        log.error("%s", f"{note}\n{text}" if note else text)
        sys.exit(EXIT_USER_ERROR)
    except TrainingInterrupted as error:
        log.warning("%s", error)
        sys.exit(EXIT_INTERRUPTED)
    except OSError as error:
        paragraph = _os_error_paragraph(error)
        if paragraph is None:
            raise
        log.error("%s", paragraph)
        sys.exit(EXIT_USER_ERROR)
