import importlib.util
import re
import shlex
import sys
import time
from functools import partial
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

# The package lives beside the rules (found from this file, so that workflow/Snakefile, the
# catalog's entry point, and a module import work as the top-level Snakefile does); Snakemake
# imports only its torch-free modules (config, data).
try:
    WORKFLOW_FOLDER = Path(workflow.current_basedir).parent
except TypeError:  # a module from a remote source (github(...)): no local files to run
    sys.exit(
        "fashion-cnn runs its Python package (workflow/fashion_cnn) from a local copy of the "
        "repository, and this module's source is remote. Clone it (git clone "
        "https://github.com/fashion-cnn/fashion-cnn) and point the module at the clone: "
        'module fashion_cnn: snakefile: "<clone>/workflow/Snakefile" (README, "Use it as a '
        'module").'
    )
sys.path.insert(0, str(WORKFLOW_FOLDER))

from fashion_cnn import AUGMENTATION_FIGURES  # noqa: E402
from fashion_cnn.config.choices import models_with  # noqa: E402
from fashion_cnn.config.site import (  # noqa: E402
    check_container_image,
    cluster_failures,
    check_gpu_for_local_jobs,
    check_signal_lead,
    visible_gpus,
)
from fashion_cnn.config.validation import (  # noqa: E402
    experiment_settings,
    validate_config,
)
from fashion_cnn.core.errors import UserError  # noqa: E402
from fashion_cnn.results.stats import percent_with_spread  # noqa: E402
from fashion_cnn.data.dataset import (  # noqa: E402
    FILES as RAW_FILES,
    load_prepared,
    read_idx_gz,
)
from fashion_cnn.config.sweeps import (  # noqa: E402
    all_runs,
    check_old_point_folders,
    sweep_definition,
)

try:
    validate_config(config)
    if workflow.is_main_process:
        check_old_point_folders(config, Path(config["results"]))
except UserError as error:
    sys.exit(error.paragraph())


STARTED = time.time()


# A cluster job that failed before its rule's command ran (sbatch could not start it, the
# Snakemake inside it stopped) wrote its reason only to its SLURM log: show that on the terminal.
onerror:
    if not workflow.local_exec:
        report = cluster_failures(Path(".snakemake") / "slurm_logs", STARTED)
        if report:
            print(report, file=sys.stderr)


# Runs after the DAG is built and before any job, so before Snakemake removes the outputs of a
# job it reruns: a GPU asked for and absent, or a changed input file the jobs would refuse, must
# not cost finished results.
# On a cluster: no job is submitted with a time limit its early SIGTERM would cut to nothing.
onstart:
    try:
        planned = list(workflow.dag.needrun_jobs())
        check_kept_inputs(planned)
        check_weights_files(planned)
        if workflow.local_exec:
            check_gpu_for_local_jobs(config["engine"]["device"])
        else:
            for job in planned:
                if not job.is_local:
                    resources = job.resources
                    check_signal_lead(
                        job.rule.name,
                        resources.get("runtime"),
                        resources.get("slurm_extra"),
                    )
    except UserError as error:
        sys.exit(error.paragraph())


RESULTS = config["results"]
RESOURCES = config["resources"]
DATA = f"{RESULTS}/data/fashion_mnist.npz"
# Logs and run times go beside the results they belong to, so runs with another `results:`
# folder (presets, comparisons) never mix their logs with the default run's.
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
RAW_FOLDER = f"{RESOURCES}/fashion-mnist"
WEIGHTS_FOLDER = f"{RESOURCES}/weights"
WEIGHTS_STATUS = f"{WEIGHTS_FOLDER}/{{model}}_imagenet.json"  # model: resnet18, vit_b16

# The files a run reads and may not make again, each with the check its reader makes. A changed
# file makes Snakemake rerun everything made from it, and remove those outputs first; a job that
# then refused the file would have cost them.
KEPT_INPUT_CHECKS = {
    DATA: load_prepared,
    **{
        f"{RAW_FOLDER}/{item.filename}": partial(read_idx_gz, item=item)
        for item in RAW_FILES
    },
}


def check_kept_inputs(jobs):
    """Checks (KEPT_INPUT_CHECKS) each file the jobs read that none of them makes again."""
    made = {str(path) for job in jobs for path in job.output}
    read = {str(path) for job in jobs for path in job.input} - made
    for path in sorted(read & set(KEPT_INPUT_CHECKS)):
        if Path(path).is_file():
            try:
                KEPT_INPUT_CHECKS[path](Path(path))
            except UserError as error:
                raise UserError(
                    f"{error} Snakemake stopped before any job, so nothing made from it was removed."
                ) from error


# Quoting: every value a rule puts on a command line arrives as exactly one argument, whatever
# it holds (spaces, `;`, `$(...)`, quotes). Rules write every placeholder as {name:q}, which
# shell-quotes it (each element of a list on its own; an empty list adds nothing), and params
# that add optional flags are lists of words; tests/test_quoting.py holds every rule to this.


def shell_word(text):
    """A path for the shell prefix: quoted for the shell, braces doubled for Snakemake's
    formatting (the prefix is formatted like a command)."""
    return shlex.quote(str(text)).replace("{", "{{").replace("}", "}}")


# The image every job runs in with --use-singularity or the cluster profile; `none` runs them
# with the Python that runs Snakemake instead. A missing image stops Snakemake here, before any
# job, with the way to build it (containers/README.md).
CONTAINER = None if config["container"] == "none" else config["container"]
# The executor is chosen after the Snakefile is read; as Snakemake's own scheduler does, a run
# with --jobs for remote nodes (the cluster profile's `jobs:`) is a cluster run.
ON_A_CLUSTER = workflow.resource_settings.nodes is not None
IN_CONTAINER = (
    CONTAINER is not None
    and DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method
)
if IN_CONTAINER and workflow.is_main_process:
    try:
        # the cluster route turned containers on in its profile, the workstation's by a flag
        check_container_image(CONTAINER, "cluster" if ON_A_CLUSTER else "workstation")
    except UserError as error:
        sys.exit(error.paragraph())

# Rules run `python -m fashion_cnn ...`. The code is always used from this checkout (so a code
# change needs no new image); `python` is the image's inside the container, and outside it the
# interpreter running Snakemake (its virtualenv: on a cluster, at the same path on every node).
# Inside the container the host's Python settings are dropped (a virtualenv's, a user's site),
# so only the image's packages and this checkout's code are imported. The prefix keeps
# Snakemake's strict mode.
PACKAGE_FOLDER = shell_word(WORKFLOW_FOLDER)
if IN_CONTAINER:
    USE_THIS_PYTHON = (
        "unset PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE VIRTUAL_ENV CONDA_PREFIX; "
        "export PYTHONNOUSERSITE=1; "
    )
    PYTHON_PATH = PACKAGE_FOLDER
else:
    USE_THIS_PYTHON = f"export PATH={shell_word(Path(sys.executable).parent)}:$PATH; "
    PYTHON_PATH = f"{PACKAGE_FOLDER}${{{{PYTHONPATH:+:$PYTHONPATH}}}}"
# The rules that need no image (container: False) run $SNAKEMAKE_PYTHON, the interpreter running
# Snakemake, instead of `python` (in the prefix, not in params: another virtualenv's path is no
# reason to redo the data).
SNAKEMAKE_PYTHON = shell_word(sys.executable)
shell.prefix(
    f"set -euo pipefail; {USE_THIS_PYTHON}export PYTHONPATH={PYTHON_PATH}; "
    f"SNAKEMAKE_PYTHON={SNAKEMAKE_PYTHON}; "
)


# GPUs. Training and export ask for one (resources: gpu) unless engine.device is cpu: on a
# cluster SLURM gets the request (--gpus=1; profiles/slurm for sites that want gres). On this
# machine, GPUs are a resource Snakemake counts: at most one such job per GPU (--resources gpu=N
# overrides the count), each on a GPU of its own (fashion_cnn.training.device.claim_gpu); without a GPU
# here they ask for none. A job given a GPU that finds none stops at once (--expect-gpu).
GPU_REQUEST = 0 if config["engine"]["device"] == "cpu" else 1
# Jobs run on this machine (not ON_A_CLUSTER):
if workflow.is_main_process and not ON_A_CLUSTER:
    GPUS_HERE = visible_gpus()
    if GPUS_HERE is None:  # WSL, ROCm: the GPUs cannot be counted from here; assume one
        GPUS_HERE = 1
    if not GPUS_HERE:
        GPU_REQUEST = 0
    if "gpu" not in workflow.resource_settings.resources:
        workflow.register_resource("gpu", GPUS_HERE)


def get_gpu_flag(wildcards, resources):
    """--expect-gpu for a job that was given a GPU (by --gpus, or by a gres naming one)."""
    given = resources.get("gpu", 0) or "gpu" in str(resources.get("gres", ""))
    return ["--expect-gpu"] if given else []


# What trains over seeds: every experiment, and every point of every sweep (a run named
# sweeps/<sweep>/<key>=<value>/<key>=<value>/..., which is also its folder). The `experiment`
# wildcard matches only these names (so results/data/... is no experiment).
RUNS = all_runs(config)
RUN_NAMES = "|".join(re.escape(name) for name in sorted(RUNS))
SWEEP_NAMES = "|".join(sorted(config["sweeps"])) or "(?!)"


def experiment_path(experiment, filename):
    return f"{RESULTS}/{experiment}/{filename}"


def seed_path(filename):
    """One replicate's file: results/<experiment>/seed-<n>/<filename> (wildcards experiment, seed)."""
    return f"{RESULTS}/{{experiment}}/seed-{{seed}}/{filename}"


def get_seeds(wildcards):
    return RUNS[wildcards.experiment].seeds


def get_base_experiment(wildcards):
    """The config entry a run starts from: itself, or a sweep point's base experiment."""
    return RUNS[wildcards.experiment].experiment


def get_seed_files(filename):
    """Input function: ``filename`` of every seed of the experiment, the representative first."""

    def files(wildcards):
        return [
            experiment_path(wildcards.experiment, f"seed-{seed}/{filename}")
            for seed in get_seeds(wildcards)
        ]

    return files


def get_representative_file(filename):
    """Input function: ``filename`` of the representative seed, the first listed (chosen before
    any result is known: see fashion_cnn/results/replicates.py)."""

    def file(wildcards):
        return experiment_path(
            wildcards.experiment, f"seed-{get_seeds(wildcards)[0]}/{filename}"
        )

    return file


def get_input_folder(wildcards, input):
    return str(Path(input[0]).parent)


def get_output_folder(wildcards, output):
    return str(Path(output[0]).parent)


def get_final_output():
    """What the default target builds: data figures, results of every run experiment, the summary."""
    outputs = [
        DATA,
        f"{RESULTS}/data/samples.png",
        f"{RESULTS}/data/sample_colorbar.png",
        *(f"{RESULTS}/data/augmentation/{name}.png" for name in AUGMENTATION_FIGURES),
        *get_summary_outputs(),
    ]
    if get_run_comparisons():
        outputs += [
            f"{RESULTS}/comparisons/comparisons.{suffix}"
            for suffix in ("csv", "md", "html")
        ]
    for sweep in config["run_sweeps"]:
        outputs += get_sweep_outputs(sweep)
    for experiment in config["run_experiments"]:
        outputs += [
            experiment_path(experiment, name)
            for name in (
                "metrics.json",
                "confusion_matrix.png",
                "filters.png",
                "filters_layers.png",
                "training_curves.png",
                "model.onnx",
                "onnx_check.json",
                *ASSESSMENT_FILES,
            )
        ]
    return outputs


# An experiment's files beyond accuracy (rule assess_experiment)
ASSESSMENT_FILES = (
    "classification_report.csv",
    "robustness.csv",
    "robustness.png",
    "reliability.png",
    "confused_pairs.csv",
    "failures.png",
)


SWEEP_SUFFIXES = ("csv", "md", "html", "png")


def sweep_path(sweep, filename):
    return f"{RESULTS}/sweeps/{sweep}/{filename}"


def get_sweep_outputs(sweep):
    return [sweep_path(sweep, f"sweep.{suffix}") for suffix in SWEEP_SUFFIXES]


def get_sweep_metrics(wildcards):
    """Every point's metrics over seeds, in the sweep's order."""
    definition = sweep_definition(config, wildcards.sweep)
    return [
        experiment_path(point["run"], "metrics.json") for point in definition["points"]
    ]


def get_sweep_definition(wildcards):
    import json

    return json.dumps(sweep_definition(config, wildcards.sweep), sort_keys=True)


def get_summary_outputs():
    return [
        *(f"{RESULTS}/summary/summary.{suffix}" for suffix in ("csv", "md", "html")),
        f"{RESULTS}/summary/robustness.png",
    ]


def get_all_metrics(wildcards):
    return [experiment_path(name, "metrics.json") for name in config["run_experiments"]]


def get_run_comparisons():
    """The comparisons whose two experiments both run."""
    running = set(config["run_experiments"])
    return [pair for pair in config["comparisons"] if {pair["a"], pair["b"]} <= running]


def get_compared_metrics(wildcards):
    names = {pair[side] for pair in get_run_comparisons() for side in ("a", "b")}
    return [experiment_path(name, "metrics.json") for name in sorted(names)]


def get_comparison_arguments(wildcards):
    return [
        word
        for pair in get_run_comparisons()
        for word in ("--pair", pair["a"], pair["b"])
    ]


def get_all_onnx_checks(wildcards):
    return [
        experiment_path(name, "onnx_check.json") for name in config["run_experiments"]
    ]


def get_experiment_settings(wildcards):
    """The JSON a job's command line gets: only this replicate's settings, so only they rerun it."""
    return experiment_settings(config, RUNS[wildcards.experiment], int(wildcards.seed))


def get_representative_settings(wildcards):
    return experiment_settings(
        config, RUNS[wildcards.experiment], get_seeds(wildcards)[0]
    )


def get_weights_input(wildcards):
    weights = RUNS[wildcards.experiment].settings["weights"]
    if weights == "imagenet":
        return WEIGHTS_STATUS.format(model=RUNS[wildcards.experiment].settings["model"])
    if weights != "none":
        return weights
    return []


def check_weights_files(jobs):
    """Each training job's own weights file (weights: a path) loads into its model, checked as
    the job would check it. It takes torch, so only where the Python running Snakemake has it
    (not on the container route, whose host may not: there the job finds it)."""
    runs = sorted(
        {
            job.wildcards.experiment
            for job in jobs
            if job.rule.name == "train_model"
            and RUNS[job.wildcards.experiment].settings["weights"]
            not in ("none", "imagenet")
        }
    )
    if not runs or importlib.util.find_spec("torch") is None:
        return
    # torch, in Snakemake's process only when a run starts from a weights file of its own
    from fashion_cnn.models.weights import check_weights_file

    for run in runs:
        try:
            check_weights_file(RUNS[run].settings)
        except UserError as error:
            raise UserError(
                f"{run}: {error} Snakemake stopped before any job, so nothing of {run} was removed."
            ) from error


def get_downloads():
    """What the default target needs from the internet: the dataset's files, and the ImageNet
    weights of every run it trains that starts from them (pre-staged on a login node).
    """
    running = set(config["run_experiments"]) | {
        run
        for run in RUNS
        if any(run.startswith(f"sweeps/{sweep}/") for sweep in config["run_sweeps"])
    }
    models = sorted(
        {
            RUNS[run].settings["model"]
            for run in running
            if RUNS[run].settings["weights"] == "imagenet"
        }
    )
    return [
        *rules.download_data.output,
        *(WEIGHTS_STATUS.format(model=model) for model in models),
    ]


def get_teacher_input(wildcards):
    """Self-training: the teacher's model of the same seed (trained first, by the same rule)."""
    teacher = RUNS[wildcards.experiment].settings["teacher"]
    if not teacher:
        return []
    return f"{RESULTS}/{teacher}/seed-{wildcards.seed}/model.pt"


def get_teacher_argument(wildcards, input):
    return ["--teacher", input.teacher] if input.teacher else []


def get_weights_argument(wildcards, input):
    if RUNS[wildcards.experiment].settings["weights"] == "imagenet":
        return ["--weights-status", input.weights]
    return []


def get_mirror_arguments(wildcards):
    """A function, not a list: Snakemake would read braces in a URL as wildcards."""
    return [word for url in config["data"]["mirrors"] for word in ("--mirror", url)]


def get_accuracy_labels(wildcards):
    """Report labels, read when the report is made (metrics exist by then)."""
    metrics = Path(experiment_path(wildcards.experiment, "metrics.json"))
    labels = {"experiment": wildcards.experiment}
    if metrics.is_file():
        import json

        data = json.loads(metrics.read_text())
        labels["test accuracy"] = percent_with_spread(data["test_accuracy_over_seeds"])
        if data.get("chapter_accuracy") is not None:
            labels["chapter"] = f"{100 * data['chapter_accuracy']:.2f}%"
        labels["weights"] = data["weights_source"]
    return labels
