"""The one training loop every experiment goes through.

Experiments differ only in configuration: model, training subset, augmentation preset, initial
weights, epochs, optimizer and schedule, and the training method (``methods``: the chapter's
supervised one, or FixMatch's). The loop asks the run's method for its figures and never
branches on which it has; setting up and resuming a run is ``run``'s. The loop writes a resumable
state at the end of every epoch (and on SIGTERM, mid-epoch), atomically; rerunning continues
from it with the optimizer and random-number state, so an interrupted run ends with the same
weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType

import torch
from torch import nn

from fashion_cnn.core.errors import TrainingInterrupted, UserError
from fashion_cnn.core.files import write_csv
from fashion_cnn.core.text import format_duration
from fashion_cnn.models.catalog import parameter_count
from fashion_cnn.models.checkpoint import save_checkpoint
from fashion_cnn.models.inference import predict
from fashion_cnn.training.optim import Scheduler
from fashion_cnn.training.resume import resume, training_state
from fashion_cnn.training.run import Progress, Run, TrainingJob, start_run

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


class SigtermFlag:
    """Turns SIGTERM (what SLURM sends before the kill) into a flag the loop checks each step."""

    def __init__(self) -> None:
        self.raised = False
        self.previous: signal.Handlers | Callable[..., object] | int | None = None

    def __enter__(self) -> SigtermFlag:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.raised = True
            log.warning("SIGTERM received: saving the training state and stopping")

        self.previous = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self.previous)


class EpochSums:
    """The running loss, correct count and images of the steps since the epoch (re)started, on
    the device: folded into ``Progress`` once per epoch or on interruption, not once per step."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.seen = 0
        self.started = time.perf_counter()

    def add(self, outputs: torch.Tensor, loss: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss += loss * len(labels)
        # the labelled images' outputs come first (semi-supervised batches add unlabelled ones);
        # soft targets (a teacher's, N x classes) count as their most likely class
        classes = labels.argmax(dim=1) if labels.ndim == 2 else labels
        self.correct += (outputs[: len(labels)].argmax(dim=1) == classes).sum()
        self.seen += len(labels)

    def fold_into(self, progress: Progress) -> None:
        # one host-device sync per epoch (or on interruption), not one per step
        elapsed = time.perf_counter() - self.started
        progress.loss_sum += self.loss.item()
        progress.correct += int(self.correct.item())
        progress.seen += self.seen
        progress.epoch_seconds += elapsed
        progress.training_seconds += elapsed


def train_model(job: TrainingJob) -> dict:
    """Train one experiment; write the checkpoint, history CSV and model summary. Returns the state."""
    run = start_run(job)
    experiment, progress = job.experiment, run.progress
    resume(run)
    training = experiment.training
    log.info(
        "training %s: model %s (%s parameters), %d images%s, %d epochs of %d steps, batch %d, "
        "augmentation %s, weights %s, device %s, %s",
        job.name,
        experiment.model.name,
        f"{parameter_count(run.model):,}",
        run.images,
        run.method.describe(run.source),
        training.epochs,
        len(run.source),
        training.batch_size,
        experiment.data.augmentation,
        run.weights_source,
        run.device,
        run.switches,
    )

    run.model.train()
    with SigtermFlag() as sigterm:
        while progress.epoch < training.epochs:
            _train_one_epoch(run, sigterm)
            every = job.engine.checkpoint_every_epochs
            if progress.epoch % every == 0 or progress.epoch == training.epochs:
                save_checkpoint(training_state(run), job.state_path)

    # A rerun that finds a finished state (Snakemake deleted the outputs, the inputs were touched)
    # trains nothing: it writes the outputs again from that state, the history included.
    _write_history(run)
    final = training_state(run)
    save_checkpoint(final, job.model_path)
    if run.tuner is not None:
        log.info("%s", run.tuner.describe())
    log.info(
        "finished %s in %s (%.1f s of training)",
        job.name,
        format_duration(progress.training_seconds),
        progress.training_seconds,
    )
    return final


def train_step(
    forward: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_function: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    scheduler: Scheduler | None = None,
    bf16: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
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


def _step(
    run: Run, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the run: the CUDA graph's or the eager one, then the weights' average."""
    if run.graphed is not None:
        outputs, loss = run.graphed(images, labels)
        if run.scheduler is not None:
            run.scheduler.step()
    else:
        outputs, loss = train_step(
            run.forward,
            run.optimizer,
            run.loss_function,
            images,
            labels,
            scheduler=run.scheduler,
            bf16=run.switches.bf16,
        )
    if run.averaged is not None:
        run.averaged.update_parameters(run.model)
    if run.tuner is not None:
        run.tuner.step(len(labels))
    return outputs, loss


def _train_one_epoch(run: Run, sigterm: SigtermFlag) -> None:
    """The epoch's steps (from where a resumed one stopped), then its history row."""
    device, progress = run.device, run.progress
    if progress.step == 0:
        progress.order = run.source.new_order()
        progress.loss_sum, progress.correct, progress.seen, progress.epoch_seconds = 0.0, 0, 0, 0.0
    sums = EpochSums(device)
    last_report, first_step = sums.started, progress.step
    if run.tuner is not None:
        run.tuner.resume()  # the time since the last epoch's steps was not training
    check_every = 1 if device.type == "cpu" else FINITE_CHECK_STEPS_GPU
    for images, labels in run.source.batches(progress.order, progress.step):
        outputs, loss = _step(run, images, labels)
        sums.add(outputs, loss, labels)
        progress.step += 1
        if progress.step % check_every == 0 or sigterm.raised:
            _stop_if_diverged(run, sums.loss)
        now = time.perf_counter()
        if now - last_report >= PROGRESS_SECONDS:
            last_report = now
            _log_progress(run, progress.step - first_step, sums.seen, now - sums.started)
        if sigterm.raised:
            sums.fold_into(progress)
            _stop_for_sigterm(run)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if run.tuner is not None:
        run.tuner.pause()
    _stop_if_diverged(run, sums.loss)
    sums.fold_into(progress)
    _end_epoch(run)


def _stop_for_sigterm(run: Run) -> None:
    """Save where the epoch stands (where the pipeline can resume mid-epoch) and stop."""
    progress = run.progress
    if run.source.resumable_mid_epoch:
        save_checkpoint(training_state(run), run.job.state_path)
        where = f"epoch {progress.epoch + 1}, step {progress.step}/{len(run.source)}"
    else:
        where = f"the end of epoch {progress.epoch} (this pipeline resumes at epoch boundaries)"
    raise TrainingInterrupted(f"stopped by SIGTERM; rerun to resume from {where}")


def _end_epoch(run: Run) -> None:
    """The finished epoch's history row (with validation and the method's figures), its log
    line, and the history file."""
    progress, epochs = run.progress, run.job.experiment.training.epochs
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
    if run.validation is not None:
        row["valid_loss"], row["valid_accuracy"] = _validate(run)
    row.update(run.method.epoch_figures(run.loss_function))
    progress.history.append(row)
    remaining = progress.training_seconds / progress.epoch * (epochs - progress.epoch)
    log.info(
        "epoch %*d/%d  loss %.4f  accuracy %6.2f%%%s  %8s images/s  %5.1f s  ETA %s",
        len(str(epochs)),
        progress.epoch,
        epochs,
        row["train_loss"],
        100 * row["train_accuracy"],
        _extra_figures(row),
        f"{rate:,.0f}",
        progress.epoch_seconds,
        format_duration(remaining),
    )
    _write_history(run)


def _extra_figures(row: dict) -> str:
    """The epoch line's validation accuracy and pseudo-label share, where the row has them."""
    extra = ""
    if "valid_accuracy" in row:
        extra += f"  validation {100 * row['valid_accuracy']:6.2f}%"
    if "pseudo_label_rate" in row:
        extra += f"  pseudo-labels {100 * row['pseudo_label_rate']:5.1f}%"
    return extra


def _validate(run: Run) -> tuple[float, float]:
    """Loss and accuracy on the held-out validation images (eval mode; not counted as training
    time); the model is back in training mode after."""
    assert run.validation is not None
    images, labels = run.validation
    model = run.final_model
    scores = predict(model, images, run.device, run.job.engine.eval_batch_size)
    model.train()
    targets = torch.from_numpy(labels.astype("int64"))
    loss = nn.functional.cross_entropy(scores, targets).item()
    return loss, float((scores.argmax(dim=1) == targets).float().mean())


def _log_progress(run: Run, steps: int, images: int, seconds: float) -> None:
    """Within an epoch: where it is, its speed so far, and the time left at that speed."""
    progress, per_epoch = run.progress, len(run.source)
    epochs = run.job.experiment.training.epochs
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
    training = experiment.training
    causes = [
        f"a learning rate too large for this model and optimizer (learning_rate = "
        f"{training.learning_rate}, optimizer {training.optimizer}, schedule "
        f"{training.lr_schedule}): try one ten times smaller"
    ]
    if run.switches.bf16:
        causes.append("bf16 autocast: set the experiment's precision to fp32")
    if experiment.model.weights not in ("none", "imagenet"):
        causes.append(f"the initial weights in {experiment.model.weights}")
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


def _write_history(run: Run) -> None:
    columns = (
        HISTORY_COLUMNS
        + (VALIDATION_COLUMNS if run.validation is not None else [])
        + list(run.method.columns)
    )
    # a row from a state written before a column existed reads NaN there
    rows = [[r.get(c, float("nan")) for c in columns] for r in run.progress.history]
    write_csv(run.job.history_path, columns, rows)
