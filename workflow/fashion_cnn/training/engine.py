"""The one training loop every experiment goes through.

Experiments differ only in configuration: model, training subset, augmentation preset, initial
weights, epochs, optimizer and schedule. The loop writes a resumable state at the end of every
epoch (and on SIGTERM, mid-epoch), atomically; rerunning continues from it with the optimizer and
random-number state, so an interrupted run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fashion_cnn.config.settings import EngineSettings, ExperimentSettings, unlabelled_count
from fashion_cnn.core import provenance
from fashion_cnn.core.errors import TrainingInterrupted, UserError
from fashion_cnn.core.files import write_csv, write_text
from fashion_cnn.core.text import format_duration
from fashion_cnn.data.augment import get_policy
from fashion_cnn.models.catalog import build_model, model_arguments, parameter_count, summary_table
from fashion_cnn.models.checkpoint import FORMAT, save_checkpoint, settings_fingerprint
from fashion_cnn.models.checkpoint import load_file as load_state_file
from fashion_cnn.models.layers import one_pixel_convolutions_as_matmuls
from fashion_cnn.models.weights import initialise
from fashion_cnn.training.batches import DeviceBatches, LoaderBatches, SemiSupervisedBatches
from fashion_cnn.training.device import Switches, keep_freed_memory, resolve_device, set_threads
from fashion_cnn.training.graphs import GraphedStep
from fashion_cnn.training.losses import WeakViewsWithoutGradients, make_loss
from fashion_cnn.training.optim import make_optimizer, make_scheduler, set_learning_rate_kind
from fashion_cnn.training.threads import ThreadTuner

log = logging.getLogger(__name__)

# How often the loss is checked for NaN/infinity: every step on the CPU (free), every this many
# steps on a GPU (each check waits for the device), and always before a state is saved.
FINITE_CHECK_STEPS_GPU = 50
# A line of progress at least this often within an epoch: a long epoch (a slow CPU, bf16 without
# native support, ResNet-18) must not look like a hung job.
PROGRESS_SECONDS = 60.0

HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "learning_rate",
    "images_per_s",
    "epoch_seconds",
    "elapsed_seconds",
]
# With validation_images: the held-out images' loss and accuracy after every epoch.
VALIDATION_COLUMNS = ["valid_loss", "valid_accuracy"]
# With unlabelled images: the share whose weak view's pseudo-label passed the threshold (counted
# from the resume on, for an epoch resumed mid-way).
SEMI_SUPERVISED_COLUMNS = ["pseudo_label_rate"]


# ----------------------------------------------------------------------------- progress & state


@dataclass
class Progress:
    """Where training stands; everything needed to resume, and nothing derivable."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed steps within the current epoch
    order: torch.Tensor | None = None  # the current epoch's shuffle (device pipeline)
    loss_sum: float = 0.0  # running sums of the current epoch
    correct: int = 0
    seen: int = 0
    epoch_seconds: float = 0.0
    training_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class SigtermFlag:
    """Turns SIGTERM (what SLURM sends before the kill) into a flag the loop checks each step."""

    def __init__(self):
        self.raised = False
        self.previous = None

    def __enter__(self):
        def handler(signum, frame):
            self.raised = True
            log.warning("SIGTERM received: saving the training state and stopping")

        self.previous = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self.previous)


@dataclass
class TrainingJob:
    """Everything one run of ``train_model`` needs; the rule's shell command fills it in."""

    name: str
    experiment: ExperimentSettings
    engine: EngineSettings
    data_path: Path
    model_path: Path
    history_path: Path
    summary_path: Path
    weights_input: str | None = None
    strict_weights: bool = False
    threads: int = 1

    @property
    def state_path(self) -> Path:
        # Not a declared Snakemake output on purpose: Snakemake deletes the outputs of a failed
        # job, and this file must survive a kill to be resumed from.
        return self.model_path.with_name("train_state.pt")


@dataclass
class Run:
    """One run's state, built once by ``start_run``: what it trains, on what, and where it is."""

    job: TrainingJob
    device: torch.device
    switches: Switches
    model: nn.Module
    forward: nn.Module  # the model, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    loss_function: nn.Module
    graphed: GraphedStep | None  # the step as one CUDA graph, when switches.cuda_graph
    averaged: nn.Module | None  # ema_decay: the exponential moving average of the weights
    source: DeviceBatches | LoaderBatches
    validation: tuple | None  # (images, labels) held out of training, or None
    tuner: ThreadTuner | None  # engine.shared_cores: adapt, on a CPU
    weights_source: str
    fingerprint: str
    arguments: dict
    images: int
    provenance: dict
    progress: Progress = field(default_factory=Progress)


def moving_average(decay: float, warmup: bool):
    """AveragedModel's update for ema_decay: torch's exponential moving average, or with
    ``warmup`` the decay min(decay, (1 + n) / (10 + n)) at the n-th update after the first (which
    copies the weights). n is the average's own count (``n_averaged``, in the checkpoint, so a
    resumed run goes on where it stopped); the decay is computed on the device, no sync."""
    if not warmup:
        return torch.optim.swa_utils.get_ema_multi_avg_fn(decay)

    @torch.no_grad()
    def update(averages: list[torch.Tensor], currents: list[torch.Tensor], count) -> None:
        step_decay = ((1 + count) / (10 + count)).clamp(max=decay)  # a float tensor
        if averages[0].is_floating_point():
            torch._foreach_lerp_(averages, currents, (1 - step_decay).to(averages[0].dtype))
        else:  # BatchNorm's integer batch counts, as torch's own average treats them
            for average, current in zip(averages, currents, strict=True):
                average.copy_(average * step_decay + current * (1 - step_decay))

    return update


def start_run(job: TrainingJob) -> Run:
    """Seed, load the data, build and initialise the model, its batches and optimizer."""
    experiment, engine = job.experiment, job.engine
    threads = set_threads(job.threads)
    log.info("allocator: %s", keep_freed_memory(engine.allocator))
    device = resolve_device(engine.device)
    if device.type == "cuda":
        # every batch but an epoch's last has one shape: let cuDNN time its algorithms once
        torch.backends.cudnn.benchmark = True
    switches = Switches.resolve(
        engine, device, experiment.precision, experiment.optimizer, experiment.lr_schedule
    )
    torch.manual_seed(experiment.seed)

    from fashion_cnn.data.dataset import load_prepared

    arrays = load_prepared(job.data_path)
    # validation_images: the LAST N training images, never trained on (config checks that the
    # first train_subset images and these do not overlap); the test set is never looked at here
    total, held_out = len(arrays["train_labels"]), experiment.validation_images
    subset = experiment.train_subset or total - held_out
    images, labels = arrays["train_images"][:subset], arrays["train_labels"][:subset]
    validation = (
        (arrays["train_images"][total - held_out :], arrays["train_labels"][total - held_out :])
        if held_out
        else None
    )
    # unlabelled_images: the next N images, without their labels (never read here)
    count = unlabelled_count(experiment.as_dict(), total) if experiment.train_subset else 0
    unlabelled = arrays["train_images"][subset : subset + count]

    arguments = model_arguments(experiment)
    model = build_model(experiment.model, arguments)
    weights_source = initialise(model, experiment, job.weights_input, job.strict_weights)
    write_text(job.summary_path, summary_table(model))
    if device.type == "cpu":
        # ResNet-18's last stage at 28x28: one-pixel convolutions as matrix products (2.4x the
        # whole step on a 2-core EPYC; same arithmetic in another order; docs/benchmarks.md)
        one_pixel_convolutions_as_matmuls(model)
    model.to(
        device,
        memory_format=torch.channels_last if switches.channels_last else torch.preserve_format,
    )

    source = _batch_source(job, images, labels, unlabelled, device, switches)
    optimizer = make_optimizer(
        model, experiment, device if switches.cuda_graph else None, device=device
    )
    averaged = (
        torch.optim.swa_utils.AveragedModel(
            model,
            multi_avg_fn=moving_average(experiment.ema_decay, experiment.ema_warmup),
            use_buffers=True,  # BatchNorm's running statistics are averaged too
        )
        if experiment.ema_decay
        else None
    )
    forward = torch.compile(model) if switches.compile else model
    if isinstance(source, SemiSupervisedBatches):
        teacher = averaged.module if experiment.pseudo_labels_from == "average" else None
        forward = WeakViewsWithoutGradients(forward, source.unlabelled_batch, teacher)
    loss_function = make_loss(experiment).to(device)
    return Run(
        job=job,
        device=device,
        switches=switches,
        model=model,
        forward=forward,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, experiment, len(source) * experiment.epochs),
        loss_function=loss_function,
        graphed=GraphedStep(
            forward, model, optimizer, loss_function, switches.bf16, experiment.batch_size
        )
        if switches.cuda_graph
        else None,
        averaged=averaged,
        source=source,
        validation=validation,
        tuner=ThreadTuner(threads)
        if engine.shared_cores == "adapt" and device.type == "cpu"
        else None,
        weights_source=weights_source,
        fingerprint=settings_fingerprint(
            experiment.as_dict(),
            engine.data_pipeline,
            switches.bf16,
            switches.channels_last,
            weights_source,
            subset,
            # the training images themselves: a state trained on other data is never resumed
            hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest(),
        ),
        arguments=arguments,
        images=subset,
        # once per run: it asks git, which would cost more than a small model's checkpoint
        provenance=provenance.provenance(device),
    )


def _batch_source(job: TrainingJob, images, labels, unlabelled, device, switches: Switches):
    """The device pipeline (labelled batches, or with unlabelled images), or the chapter's."""
    experiment, policy = job.experiment, get_policy(job.experiment.augmentation)
    if job.engine.data_pipeline == "dataloader":
        if len(unlabelled) or experiment.steps_per_epoch:
            what = "unlabelled images" if len(unlabelled) else "a fixed steps_per_epoch"
            raise UserError(
                f"{job.name} trains with {what}, which only the device data pipeline "
                "draws: set engine.data_pipeline to device."
            )
        return LoaderBatches(
            images,
            labels,
            device,
            policy,
            experiment.batch_size,
            experiment.seed,
            switches.channels_last,
        )
    generator = torch.Generator(device=device).manual_seed(experiment.seed)
    if len(unlabelled):
        return SemiSupervisedBatches(
            images,
            labels,
            unlabelled,
            device,
            policy,
            get_policy(experiment.strong_augmentation),
            experiment.batch_size,
            experiment.unlabelled_ratio,
            generator,
            switches.channels_last,
            experiment.steps_per_epoch,
        )
    return DeviceBatches(
        images,
        labels,
        device,
        policy,
        experiment.batch_size,
        generator,
        switches.channels_last,
        experiment.steps_per_epoch,
    )


def train_model(job: TrainingJob) -> dict:
    """Train one experiment; write the checkpoint, history CSV and model summary. Returns the state."""
    run = start_run(job)
    experiment, progress = job.experiment, run.progress
    _resume(run)
    log.info(
        "training %s: model %s (%s parameters), %d images%s, %d epochs of %d steps, batch %d, "
        "augmentation %s, weights %s, device %s, %s",
        job.name,
        experiment.model,
        f"{parameter_count(run.model):,}",
        run.images,
        f" and {len(run.source.unlabelled):,} without labels ({experiment.unlabelled_ratio} per "
        f"labelled image in each step, seen twice; images/s below counts the labelled ones)"
        if isinstance(run.source, SemiSupervisedBatches)
        else "",
        experiment.epochs,
        len(run.source),
        experiment.batch_size,
        experiment.augmentation,
        run.weights_source,
        run.device,
        run.switches,
    )

    run.model.train()
    with SigtermFlag() as sigterm:
        while progress.epoch < experiment.epochs:
            _train_one_epoch(run, sigterm)
            if (
                progress.epoch % job.engine.checkpoint_every_epochs == 0
                or progress.epoch == experiment.epochs
            ):
                save_checkpoint(_state(run), job.state_path)

    # A rerun that finds a finished state (Snakemake deleted the outputs, the inputs were touched)
    # trains nothing: it writes the outputs again from that state, the history included.
    _write_history(job, progress)
    state = _state(run)
    save_checkpoint(state, job.model_path)
    if run.tuner is not None:
        log.info("%s", run.tuner.describe())
    log.info(
        "finished %s in %s (%.1f s of training)",
        job.name,
        format_duration(progress.training_seconds),
        progress.training_seconds,
    )
    return state


def train_step(forward, optimizer, scheduler, loss_function, images, labels, bf16: bool):
    """One optimizer step; returns the (detached) outputs and loss."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
        outputs = forward(images)
    loss = loss_function(outputs.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return outputs.detach(), loss.detach()


def _train_one_epoch(run: Run, sigterm: SigtermFlag) -> None:
    job, device, source, progress = run.job, run.device, run.source, run.progress
    epochs = job.experiment.epochs
    if progress.step == 0:
        progress.order = source.new_order()
        progress.loss_sum, progress.correct, progress.seen, progress.epoch_seconds = 0.0, 0, 0, 0.0
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    started = last_report = time.perf_counter()
    first_step = progress.step
    if run.tuner is not None:
        run.tuner.resume()  # the time since the last epoch's steps was not training
    check_every = 1 if device.type == "cpu" else FINITE_CHECK_STEPS_GPU

    def fold_running_sums():
        # one host-device sync per epoch (or on interruption), not one per step
        elapsed = time.perf_counter() - started
        progress.loss_sum += loss_sum.item()
        progress.correct += int(correct.item())
        progress.seen += seen
        progress.epoch_seconds += elapsed
        progress.training_seconds += elapsed

    for images, labels in source.batches(progress.order, progress.step):
        if run.graphed is not None:
            outputs, loss = run.graphed(images, labels)
            if run.scheduler is not None:
                run.scheduler.step()
        else:
            outputs, loss = train_step(
                run.forward,
                run.optimizer,
                run.scheduler,
                run.loss_function,
                images,
                labels,
                run.switches.bf16,
            )
        if run.averaged is not None:
            run.averaged.update_parameters(run.model)
        if run.tuner is not None:
            run.tuner.step(len(labels))
        loss_sum += loss * len(labels)
        # the labelled images' outputs come first (semi-supervised batches add unlabelled ones)
        correct += (outputs[: len(labels)].argmax(dim=1) == labels).sum()
        seen += len(labels)
        progress.step += 1
        if progress.step % check_every == 0 or sigterm.raised:
            _stop_if_diverged(run, loss_sum)
        now = time.perf_counter()
        if now - last_report >= PROGRESS_SECONDS:
            last_report = now
            _log_progress(run, progress.step - first_step, seen, now - started)
        if sigterm.raised:
            fold_running_sums()
            if source.resumable_mid_epoch:
                save_checkpoint(_state(run), job.state_path)
                where = f"epoch {progress.epoch + 1}, step {progress.step}/{len(source)}"
            else:
                where = (
                    f"the end of epoch {progress.epoch} (this pipeline resumes at epoch boundaries)"
                )
            raise TrainingInterrupted(f"stopped by SIGTERM; rerun to resume from {where}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if run.tuner is not None:
        run.tuner.pause()
    _stop_if_diverged(run, loss_sum)
    fold_running_sums()
    progress.epoch += 1
    progress.step = 0
    progress.order = None
    rate = progress.seen / progress.epoch_seconds if progress.epoch_seconds else float("nan")
    row = {
        "epoch": progress.epoch,
        "train_loss": progress.loss_sum / progress.seen,
        "train_accuracy": progress.correct / progress.seen,
        "learning_rate": float(run.optimizer.param_groups[0]["lr"]),
        "images_per_s": rate,
        "epoch_seconds": progress.epoch_seconds,
        "elapsed_seconds": progress.training_seconds,
    }
    extra = ""
    if run.validation is not None:
        row["valid_loss"], row["valid_accuracy"] = _validate(run)
        extra = f"  validation {100 * row['valid_accuracy']:6.2f}%"
    if run.job.experiment.unlabelled_images:  # make_loss gave it ConsistencyLoss
        row["pseudo_label_rate"] = run.loss_function.take_pseudo_label_rate()
        extra += f"  pseudo-labels {100 * row['pseudo_label_rate']:5.1f}%"
    progress.history.append(row)
    remaining = progress.training_seconds / progress.epoch * (epochs - progress.epoch)
    log.info(
        "epoch %*d/%d  loss %.4f  accuracy %6.2f%%%s  %8s images/s  %5.1f s  ETA %s",
        len(str(epochs)),
        progress.epoch,
        epochs,
        row["train_loss"],
        100 * row["train_accuracy"],
        extra,
        f"{rate:,.0f}",
        progress.epoch_seconds,
        format_duration(remaining),
    )
    _write_history(job, progress)


def _validate(run: Run) -> tuple[float, float]:
    """Loss and accuracy on the held-out validation images (eval mode; not counted as training
    time); the model is back in training mode after."""
    from fashion_cnn.models.inference import predict

    images, labels = run.validation
    model = _final_model(run)
    scores = predict(model, images, run.device, run.job.engine.eval_batch_size)
    model.train()
    targets = torch.from_numpy(labels.astype("int64"))
    loss = nn.functional.cross_entropy(scores, targets).item()
    return loss, float((scores.argmax(dim=1) == targets).float().mean())


def _log_progress(run: Run, steps: int, images: int, seconds: float) -> None:
    """Within an epoch: where it is, its speed so far, and the time left at that speed."""
    progress, per_epoch = run.progress, len(run.source)
    epochs = run.job.experiment.epochs
    left = (per_epoch - progress.step) + (epochs - progress.epoch - 1) * per_epoch
    log.info(
        "epoch %d/%d: step %d/%d  %s images/s  ETA %s",
        progress.epoch + 1,
        epochs,
        progress.step,
        per_epoch,
        f"{images / seconds:,.0f}",
        format_duration(left * seconds / steps),
    )


def _stop_if_diverged(run: Run, loss_sum: torch.Tensor) -> None:
    """Stop at a NaN or infinite loss, before the broken weights reach any saved file."""
    if bool(torch.isfinite(loss_sum)):
        return
    job, progress, experiment = run.job, run.progress, run.job.experiment
    causes = [
        f"a learning rate too large for this model and optimizer (learning_rate = "
        f"{experiment.learning_rate}, optimizer {experiment.optimizer}, schedule "
        f"{experiment.lr_schedule}): try one ten times smaller"
    ]
    if run.switches.bf16:
        causes.append("bf16 autocast: set the experiment's precision to fp32")
    if experiment.weights not in ("none", "imagenet"):
        causes.append(f"the initial weights in {experiment.weights}")
    saved = (
        f"{job.state_path} still holds the last good state (the end of epoch {progress.epoch})"
        if job.state_path.is_file()
        else "no training state was saved"
    )
    raise UserError(
        f"Training of {job.name} diverged: the loss became NaN or infinite in epoch "
        f"{progress.epoch + 1}, by step {progress.step} of {len(run.source)}. Likely causes: "
        f"{'; '.join(causes)}. Nothing of this run's broken weights was written; {saved}."
    )


def _write_history(job, progress) -> None:
    columns = (
        HISTORY_COLUMNS
        + (VALIDATION_COLUMNS if job.experiment.validation_images else [])
        + (SEMI_SUPERVISED_COLUMNS if job.experiment.unlabelled_images else [])
    )
    # a row from a state written before a column existed reads NaN there
    rows = [[r.get(c, float("nan")) for c in columns] for r in progress.history]
    write_csv(job.history_path, columns, rows)


def _final_model(run: Run) -> nn.Module:
    """The model a run delivers: the weights' moving average with ema_decay, else the weights."""
    return run.averaged.module if run.averaged is not None else run.model


def _state(run: Run) -> dict:
    """The self-describing checkpoint: enough to rebuild the model or resume training. Its
    model_state is what evaluation and export use (the averaged weights with ema_decay; the
    trained ones, and the average's own state, are kept to resume from)."""
    job, experiment = run.job, run.job.experiment
    averaged = (
        {"training_model_state": run.model.state_dict(), "ema_state": run.averaged.state_dict()}
        if run.averaged is not None
        else {}
    )
    return {
        "format": FORMAT,
        "experiment": job.name,
        "model": {"name": experiment.model, "arguments": run.arguments},
        "model_state": _final_model(run).state_dict(),
        **averaged,
        "optimizer_state": run.optimizer.state_dict(),
        "scheduler_state": run.scheduler.state_dict() if run.scheduler is not None else None,
        "loss_state": run.loss_function.state_dict(),  # distribution alignment's class shares
        "config": experiment.as_dict(),
        "engine": job.engine.as_dict(),
        "complete": run.progress.epoch == experiment.epochs,
        "progress": run.progress.as_dict(),
        "rng": run.source.rng_state(),
        "seed": experiment.seed,
        "fingerprint": run.fingerprint,
        "weights_source": run.weights_source,
        "training_images": run.images,
        "precision": "bf16 autocast" if run.switches.bf16 else "fp32",
        "provenance": run.provenance,
    }


def _resume(run: Run) -> None:
    """Continue from ``train_state.pt`` when it was written with the same settings."""
    job, progress = run.job, run.progress
    path = job.state_path
    if not path.is_file():
        return
    try:
        state = load_state_file(path, what="training state")
    except UserError as error:
        log.warning("ignoring the unreadable training state %s (%s); starting afresh", path, error)
        return
    if not isinstance(state, dict) or state.get("fingerprint") != run.fingerprint:
        log.info("ignoring %s: it was written with other settings; starting afresh", path)
        return
    # The fingerprint matches, so the file claims to be this run's state: a part that is missing
    # or does not load means it was damaged or edited, and resuming from half of it would be wrong.
    try:
        if set(state["progress"]) != set(Progress().as_dict()):
            raise ValueError("its progress record has other fields")
        if run.averaged is not None:
            run.model.load_state_dict(state["training_model_state"])
            run.averaged.load_state_dict(state["ema_state"])
        else:
            run.model.load_state_dict(state["model_state"])
        run.optimizer.load_state_dict(state["optimizer_state"])
        set_learning_rate_kind(run.optimizer, run.device if run.switches.cuda_graph else None)
        if run.scheduler is not None:
            run.scheduler.load_state_dict(state["scheduler_state"])
        # a state written before losses had a state reads as empty: right for every loss but
        # distribution alignment's, which is newer than that and so always has its own
        run.loss_function.load_state_dict(state.get("loss_state", {}))
        run.source.set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise UserError(
            f"The training state {path} has this run's settings but cannot be resumed from "
            f"({type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}): "
            "it was damaged or edited. Delete it to train from the start, and rerun."
        ) from error
    for key, value in state["progress"].items():
        setattr(progress, key, value)
    if progress.order is not None:
        progress.order = progress.order.to(run.device)
    if state.get("complete"):
        log.info("%s in %s is already trained; writing its outputs again", job.name, path)
        return
    log.info(
        "resuming %s from %s: epoch %d, step %d", job.name, path, progress.epoch + 1, progress.step
    )
