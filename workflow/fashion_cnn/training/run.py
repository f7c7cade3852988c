"""Setting up and resuming one run of the training loop (``engine``).

``start_run`` seeds, loads the images, builds and initialises the model, and asks the run's
training method (``methods``) for its batches, loss and forward pass. Saving and resuming its
state is ``resume``'s; nothing here trains.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

import fashion_cnn
from fashion_cnn.config.settings import EngineSettings, ExperimentSettings, TrainingSettings
from fashion_cnn.core import provenance
from fashion_cnn.core.files import write_text
from fashion_cnn.data.dataset import load_prepared
from fashion_cnn.models.catalog import build_model, model_arguments, summary_table
from fashion_cnn.models.checkpoint import settings_fingerprint
from fashion_cnn.models.layers import one_pixel_convolutions_as_matmuls
from fashion_cnn.models.weights import initialise
from fashion_cnn.training.device import Switches, keep_freed_memory, resolve_device, set_threads
from fashion_cnn.training.graphs import GraphedStep
from fashion_cnn.training.methods import BatchSource, Pipeline, Supervised, training_method
from fashion_cnn.training.optim import Scheduler, make_optimizer, make_scheduler
from fashion_cnn.training.threads import ThreadTuner

log = logging.getLogger(__name__)


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
    teacher_path: Path | None = None  # self-training: the teacher's model.pt (teacher:)
    strict_weights: bool = False
    threads: int = 1

    @property
    def state_path(self) -> Path:
        # Not a declared Snakemake output on purpose: Snakemake deletes the outputs of a failed
        # job, and this file must survive a kill to be resumed from.
        return self.model_path.with_name("train_state.pt")


@dataclass(frozen=True)
class TrainingData:
    """The images one run sees: the first ``train_subset`` with labels, the next N without
    (FixMatch), the last ``validation_images`` held out (never trained on)."""

    images: np.ndarray
    labels: np.ndarray
    unlabelled: np.ndarray
    validation: tuple[np.ndarray, np.ndarray] | None

    @property
    def fingerprint(self) -> str:
        """The training images themselves: a state trained on other data is never resumed."""
        return hashlib.sha256(self.images.tobytes() + self.labels.tobytes()).hexdigest()


@dataclass
class Run:
    """One run's state, built once by ``start_run``: what it trains, on what, and where it is."""

    job: TrainingJob
    method: Supervised  # the training method: its batches, loss, forward pass and figures
    device: torch.device
    switches: Switches
    model: nn.Module
    forward: nn.Module  # the model, or its torch.compile wrapper, or the method's wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    loss_function: nn.Module
    graphed: GraphedStep | None  # the step as one CUDA graph, when switches.cuda_graph
    averaged: torch.optim.swa_utils.AveragedModel | None  # ema_decay: the weights' average
    source: BatchSource
    validation: tuple[np.ndarray, np.ndarray] | None  # held out of training, or None
    tuner: ThreadTuner | None  # engine.shared_cores: adapt, on a CPU
    weights_source: str
    fingerprint: str
    arguments: dict
    images: int
    provenance: dict
    progress: Progress = field(default_factory=Progress)

    @property
    def final_model(self) -> nn.Module:
        """The model a run delivers: the weights' moving average with ema_decay, else the
        weights."""
        return self.averaged.module if self.averaged is not None else self.model


def moving_average(decay: float, warmup: bool) -> Callable[..., None]:
    """AveragedModel's update for ema_decay: torch's exponential moving average, or with
    ``warmup`` the decay min(decay, (1 + n) / (10 + n)) at the n-th update after the first (which
    copies the weights). n is the average's own count (``n_averaged``, in the checkpoint, so a
    resumed run goes on where it stopped); the decay is computed on the device, no sync."""
    if not warmup:
        return cast(Callable[..., None], torch.optim.swa_utils.get_ema_multi_avg_fn(decay))

    @torch.no_grad()
    def update(
        averages: list[torch.Tensor], currents: list[torch.Tensor], count: torch.Tensor
    ) -> None:
        step_decay = ((1 + count) / (10 + count)).clamp(max=decay)  # a float tensor
        if averages[0].is_floating_point():
            weight = (1 - step_decay).to(averages[0].dtype)
            # a 0-d tensor weight, so no sync; torch's stub lists only numbers and lists
            torch._foreach_lerp_(averages, currents, weight)  # type: ignore[call-overload]
        else:  # BatchNorm's integer batch counts, as torch's own average treats them
            for average, current in zip(averages, currents, strict=True):
                average.copy_(average * step_decay + current * (1 - step_decay))

    return update


def training_data(job: TrainingJob) -> TrainingData:
    """The run's images from the prepared arrays (the test set is never looked at here)."""
    experiment = job.experiment
    arrays = load_prepared(job.data_path)
    # validation_images: the LAST N training images, never trained on (config checks that the
    # first train_subset images and these do not overlap)
    total, held_out = len(arrays["train_labels"]), experiment.data.validation_images
    subset = experiment.data.train_subset or total - held_out
    validation = (
        (arrays["train_images"][total - held_out :], arrays["train_labels"][total - held_out :])
        if held_out
        else None
    )
    # unlabelled_images: the next N images, without their labels (never read here)
    count = experiment.unlabelled_count(total)
    return TrainingData(
        images=arrays["train_images"][:subset],
        labels=arrays["train_labels"][:subset],
        unlabelled=arrays["train_images"][subset : subset + count],
        validation=validation,
    )


def _model(
    job: TrainingJob, device: torch.device, switches: Switches
) -> tuple[nn.Module, dict, str]:
    """The experiment's model with its initial weights, on the device; its constructor
    arguments and where its weights came from."""
    experiment = job.experiment
    arguments = model_arguments(experiment.model)
    model = build_model(experiment.model.name, arguments)
    weights_source = initialise(model, experiment, job.weights_input, job.strict_weights)
    write_text(job.summary_path, summary_table(model))
    if device.type == "cpu":
        # ResNet-18's last stage at 28x28: one-pixel convolutions as matrix products (the same
        # arithmetic in another order, measured faster: docs/results/notebook.md, "ResNet-18 on this CPU")
        one_pixel_convolutions_as_matmuls(model)
    layout = torch.channels_last if switches.channels_last else torch.preserve_format
    # both at once is what torch's Module.to does; its type stubs list them apart
    model = model.to(device, memory_format=layout)  # type: ignore[call-overload]
    return model, arguments, weights_source


def _average(
    model: nn.Module, training: TrainingSettings
) -> torch.optim.swa_utils.AveragedModel | None:
    """The weights' exponential moving average with ema_decay, else None."""
    if not training.ema_decay:
        return None
    return torch.optim.swa_utils.AveragedModel(
        model,
        multi_avg_fn=moving_average(training.ema_decay, training.ema_warmup),
        use_buffers=True,  # BatchNorm's running statistics are averaged too
    )


def _device(job: TrainingJob) -> tuple[torch.device, Switches, int]:
    """Threads, allocator, device and the engine's switches, resolved for this run."""
    experiment, engine = job.experiment, job.engine
    threads = set_threads(job.threads)
    log.info("allocator: %s", keep_freed_memory(engine.allocator))
    log.info(
        "OpenMP wait policy: %s (%s)",
        os.environ.get("OMP_WAIT_POLICY", "OpenMP's default"),
        fashion_cnn.WAIT_POLICY_REASON or "not chosen here: the package is used as a library",
    )
    device = resolve_device(engine.device)
    if device.type == "cuda":
        # every batch but an epoch's last has one shape: let cuDNN time its algorithms once
        torch.backends.cudnn.benchmark = True
    training = experiment.training
    switches = Switches.resolve(
        engine, device, training.precision, training.optimizer, training.lr_schedule
    )
    return device, switches, threads


def start_run(job: TrainingJob) -> Run:
    """Seed, load the data, build and initialise the model, its batches and optimizer."""
    experiment, engine, training = job.experiment, job.engine, job.experiment.training
    device, switches, threads = _device(job)
    torch.manual_seed(experiment.seed)
    data = training_data(job)
    model, arguments, weights_source = _model(job, device, switches)
    method = training_method(experiment, job.name, job.teacher_path)
    pipeline = Pipeline(device, engine.data_pipeline, switches.channels_last)
    source = method.batches(data.images, data.labels, data.unlabelled, pipeline)
    optimizer = make_optimizer(
        model, training, device if switches.cuda_graph else None, device=device
    )
    averaged = _average(model, training)
    # torch.compile of a Module is an OptimizedModule, itself a Module
    forward = cast(nn.Module, torch.compile(model)) if switches.compile else model
    forward = method.forward(forward, source, averaged.module if averaged is not None else None)
    loss_function = method.loss().to(device)
    graphed = None
    if switches.cuda_graph:
        graphed = GraphedStep(
            forward,
            model,
            optimizer,
            loss_function,
            bf16=switches.bf16,
            batch_size=training.batch_size,
        )
    return Run(
        job=job,
        method=method,
        device=device,
        switches=switches,
        model=model,
        forward=forward,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, training, len(source) * training.epochs),
        loss_function=loss_function,
        graphed=graphed,
        averaged=averaged,
        source=source,
        validation=data.validation,
        tuner=ThreadTuner(threads)
        if engine.shared_cores == "adapt" and device.type == "cpu"
        else None,
        weights_source=weights_source,
        fingerprint=_fingerprint(job, switches, weights_source, data, method),
        arguments=arguments,
        images=len(data.images),
        # once per run: it asks git, which would cost more than a small model's checkpoint
        provenance=provenance.provenance(device),
    )


def _fingerprint(
    job: TrainingJob,
    switches: Switches,
    weights_source: str,
    data: TrainingData,
    method: Supervised,
) -> str:
    """A short hash of everything a saved training state depends on: a state is resumed only
    when it matches (the settings, the pipeline, the switches that change the arithmetic, the
    initial weights, the training images themselves and what the method adds: a teacher's
    targets)."""
    parts = (
        job.experiment.as_dict(),
        job.engine.data_pipeline,
        switches.bf16,
        switches.channels_last,
        weights_source,
        len(data.images),
        data.fingerprint,
        method.fingerprint,
    )
    return settings_fingerprint(*parts)
