"""The one training loop every experiment goes through, and batched prediction.

Experiments differ only in configuration: model, training subset, augmentation preset, initial
weights, epochs, optimizer and schedule. The loop writes a resumable state at the end of every
epoch (and on SIGTERM, mid-epoch), atomically; rerunning continues from it with the optimizer and
random-number state, so an interrupted run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fashion_cnn import provenance
from fashion_cnn.augment import Policy, augment_batch, get_policy, torchvision_transform
from fashion_cnn.checkpoint import FORMAT, save_checkpoint, settings_fingerprint
from fashion_cnn.checkpoint import load_file as load_state_file
from fashion_cnn.errors import TrainingInterrupted, UserError
from fashion_cnn.files import write_csv, write_text
from fashion_cnn.models import build_model, model_arguments, parameter_count, summary_table
from fashion_cnn.weights import initialise

log = logging.getLogger(__name__)

HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "learning_rate",
    "images_per_s",
    "epoch_seconds",
    "elapsed_seconds",
]


# ----------------------------------------------------------------------------- device & switches


def resolve_device(spec: str) -> torch.device:
    """``auto`` = CUDA when present, else CPU (logged). An explicit CUDA request must be met."""
    if spec == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
            log.info("device auto: CUDA is available, using %s", torch.cuda.get_device_name(device))
            return device
        log.info("device auto: no CUDA device, falling back to cpu")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"engine.device is '{spec}' but PyTorch sees no CUDA device here "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Use device: auto or "
                "cpu, or run on a GPU node (in the container, with --nv)."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"engine.device is '{spec}' but only {torch.cuda.device_count()} CUDA device(s) exist."
            )
    return device


@dataclass(frozen=True)
class Switches:
    channels_last: bool
    bf16: bool
    compile: bool

    @classmethod
    def resolve(cls, engine: dict, device: torch.device) -> Switches:
        cuda = device.type == "cuda"

        def choose(value, automatic):
            return automatic if value == "auto" else bool(value)

        precision = engine["precision"]
        return cls(
            # measured: on CPU (oneDNN) the chapter's CNN trains 1.7x faster channels_last, ResNet-18
            # the same; on CUDA it is what tensor-core convolutions want
            channels_last=choose(engine["channels_last"], True),
            bf16=precision == "bf16" or (precision == "auto" and cuda),
            compile=choose(engine["compile"], False),
        )


# ----------------------------------------------------------------------------- batch sources


def to_float_batch(images_uint8: torch.Tensor) -> torch.Tensor:
    """(N, 28, 28) or (N, 1, 28, 28) uint8 -> (N, 1, 28, 28) float in [0, 1]."""
    if images_uint8.dim() == 3:
        images_uint8 = images_uint8.unsqueeze(1)
    return images_uint8.float().div_(255)


class DeviceBatches:
    """The dataset as one uint8 tensor on the device; batches gathered, scaled, augmented there."""

    resumable_mid_epoch = True

    def __init__(
        self, images, labels, device, policy: Policy, batch_size: int, generator, channels_last
    ):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device).unsqueeze(1)
        self.labels = torch.from_numpy(labels.astype(np.int64)).to(device)
        self.policy, self.batch_size, self.generator = policy, batch_size, generator
        self.channels_last = channels_last
        self.count = len(self.labels)

    def __len__(self) -> int:
        return math.ceil(self.count / self.batch_size)

    def new_order(self) -> torch.Tensor:
        return torch.randperm(self.count, generator=self.generator, device=self.images.device)

    def batches(self, order: torch.Tensor, start_step: int):
        for step in range(start_step, len(self)):
            index = order[step * self.batch_size : (step + 1) * self.batch_size]
            images = augment_batch(to_float_batch(self.images[index]), self.policy, self.generator)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, self.labels[index]

    def rng_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def set_rng_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class ChapterDataset(torch.utils.data.Dataset):
    """Like torchvision's FashionMNIST: one PIL image at a time through the transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index], mode="L")), int(
            self.labels[index]
        )


class LoaderBatches:
    """The chapter's pipeline: DataLoader(shuffle=True) over per-sample PIL transforms.

    Kept to compare speed and accuracy with the device pipeline. Resumes at epoch boundaries only.
    """

    resumable_mid_epoch = False

    def __init__(
        self, images, labels, device, policy: Policy, batch_size: int, seed: int, channels_last
    ):
        self.generator = torch.Generator().manual_seed(seed)
        dataset = ChapterDataset(images, labels, torchvision_transform(policy))
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=True, generator=self.generator
        )
        self.device, self.channels_last = device, channels_last

    def __len__(self) -> int:
        return len(self.loader)

    def new_order(self) -> None:
        return None

    def batches(self, order, start_step: int):
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, labels.to(self.device, non_blocking=True)

    def rng_state(self) -> dict:
        # per-sample transforms draw from the global generator
        return {"generator": self.generator.get_state(), "global": torch.get_rng_state()}

    def set_rng_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["global"])


# ----------------------------------------------------------------------------- optimisation


def make_optimizer(model: nn.Module, experiment: dict) -> torch.optim.Optimizer:
    lr, decay = experiment["learning_rate"], experiment["weight_decay"]
    if experiment["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=decay)
    if experiment["optimizer"] == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
    return torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=decay
    )


def make_scheduler(optimizer, experiment: dict, total_steps: int):
    schedule = experiment["lr_schedule"]
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=experiment["learning_rate"], total_steps=total_steps
        )
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


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


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"


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
    experiment: dict
    engine: dict
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


def train_model(job: TrainingJob) -> dict:
    """Train one experiment; write the checkpoint, history CSV and model summary. Returns the state."""
    experiment, engine = job.experiment, job.engine
    torch.set_num_threads(job.threads)
    device = resolve_device(engine["device"])
    switches = Switches.resolve(engine, device)
    torch.manual_seed(experiment["seed"])

    from fashion_cnn.data import load_prepared

    arrays = load_prepared(job.data_path)
    subset = experiment["train_subset"] or len(arrays["train_labels"])
    images, labels = arrays["train_images"][:subset], arrays["train_labels"][:subset]

    arguments = model_arguments(experiment)
    model = build_model(experiment["model"], arguments)
    weights_source = initialise(model, experiment, job.weights_input, job.strict_weights)
    write_text(job.summary_path, summary_table(model))
    model.to(
        device,
        memory_format=torch.channels_last if switches.channels_last else torch.preserve_format,
    )
    forward = torch.compile(model) if switches.compile else model

    policy = get_policy(experiment["augmentation"])
    if engine["data_pipeline"] == "device":
        generator = torch.Generator(device=device).manual_seed(experiment["seed"])
        source = DeviceBatches(
            images,
            labels,
            device,
            policy,
            experiment["batch_size"],
            generator,
            switches.channels_last,
        )
    else:
        source = LoaderBatches(
            images,
            labels,
            device,
            policy,
            experiment["batch_size"],
            experiment["seed"],
            switches.channels_last,
        )
    steps_per_epoch, epochs = len(source), experiment["epochs"]
    optimizer = make_optimizer(model, experiment)
    scheduler = make_scheduler(optimizer, experiment, steps_per_epoch * epochs)
    loss_function = nn.CrossEntropyLoss(label_smoothing=experiment["label_smoothing"])

    fingerprint = settings_fingerprint(
        experiment,
        engine["data_pipeline"],
        switches.bf16,
        switches.channels_last,
        weights_source,
        subset,
    )
    run = {
        "experiment": job.name,
        "device": device,
        "switches": switches,
        "weights_source": weights_source,
        "fingerprint": fingerprint,
        "arguments": arguments,
        "images": subset,
    }
    progress = Progress()
    _resume(job, run, model, optimizer, scheduler, source, progress)
    log.info(
        "training %s: model %s (%s parameters), %d images, %d epochs of %d steps, batch %d, "
        "augmentation %s, weights %s, device %s, %s",
        job.name,
        experiment["model"],
        f"{parameter_count(model):,}",
        subset,
        epochs,
        steps_per_epoch,
        experiment["batch_size"],
        experiment["augmentation"],
        weights_source,
        device,
        switches,
    )

    model.train()
    with SigtermFlag() as sigterm:
        while progress.epoch < epochs:
            _train_one_epoch(
                job,
                run,
                forward,
                model,
                optimizer,
                scheduler,
                loss_function,
                source,
                progress,
                sigterm,
            )
            if progress.epoch % engine["checkpoint_every_epochs"] == 0 or progress.epoch == epochs:
                save_checkpoint(
                    _state(job, run, model, optimizer, scheduler, source, progress), job.state_path
                )

    state = _state(job, run, model, optimizer, scheduler, source, progress)
    save_checkpoint(state, job.model_path)
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


def _train_one_epoch(
    job, run, forward, model, optimizer, scheduler, loss_function, source, progress, sigterm
):
    device, switches = run["device"], run["switches"]
    epochs = job.experiment["epochs"]
    if progress.step == 0:
        progress.order = source.new_order()
        progress.loss_sum, progress.correct, progress.seen, progress.epoch_seconds = 0.0, 0, 0, 0.0
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    started = time.perf_counter()

    def fold_running_sums():
        # one host-device sync per epoch (or on interruption), not one per step
        elapsed = time.perf_counter() - started
        progress.loss_sum += loss_sum.item()
        progress.correct += int(correct.item())
        progress.seen += seen
        progress.epoch_seconds += elapsed
        progress.training_seconds += elapsed

    for images, labels in source.batches(progress.order, progress.step):
        outputs, loss = train_step(
            forward, optimizer, scheduler, loss_function, images, labels, switches.bf16
        )
        loss_sum += loss * len(labels)
        correct += (outputs.argmax(dim=1) == labels).sum()
        seen += len(labels)
        progress.step += 1
        if sigterm.raised:
            fold_running_sums()
            if source.resumable_mid_epoch:
                save_checkpoint(
                    _state(job, run, model, optimizer, scheduler, source, progress), job.state_path
                )
                where = f"epoch {progress.epoch + 1}, step {progress.step}/{len(source)}"
            else:
                where = (
                    f"the end of epoch {progress.epoch} (this pipeline resumes at epoch boundaries)"
                )
            raise TrainingInterrupted(f"stopped by SIGTERM; rerun to resume from {where}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    fold_running_sums()
    progress.epoch += 1
    progress.step = 0
    progress.order = None
    rate = progress.seen / progress.epoch_seconds if progress.epoch_seconds else float("nan")
    row = {
        "epoch": progress.epoch,
        "train_loss": progress.loss_sum / progress.seen,
        "train_accuracy": progress.correct / progress.seen,
        "learning_rate": optimizer.param_groups[0]["lr"],
        "images_per_s": rate,
        "epoch_seconds": progress.epoch_seconds,
        "elapsed_seconds": progress.training_seconds,
    }
    progress.history.append(row)
    remaining = progress.training_seconds / progress.epoch * (epochs - progress.epoch)
    log.info(
        "epoch %*d/%d  loss %.4f  accuracy %6.2f%%  %8s images/s  %5.1f s  ETA %s",
        len(str(epochs)),
        progress.epoch,
        epochs,
        row["train_loss"],
        100 * row["train_accuracy"],
        f"{rate:,.0f}",
        progress.epoch_seconds,
        format_duration(remaining),
    )
    write_csv(
        job.history_path,
        HISTORY_COLUMNS,
        [[r[c] for c in HISTORY_COLUMNS] for r in progress.history],
    )


def _state(job, run, model, optimizer, scheduler, source, progress) -> dict:
    """The self-describing checkpoint: enough to rebuild the model or resume training."""
    return {
        "format": FORMAT,
        "experiment": job.name,
        "model": {"name": job.experiment["model"], "arguments": run["arguments"]},
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "config": job.experiment,
        "engine": job.engine,
        "complete": progress.epoch == job.experiment["epochs"],
        "progress": progress.as_dict(),
        "rng": source.rng_state(),
        "seed": job.experiment["seed"],
        "fingerprint": run["fingerprint"],
        "weights_source": run["weights_source"],
        "training_images": run["images"],
        "precision": "bf16 autocast" if run["switches"].bf16 else "fp32",
        "provenance": provenance.provenance(run["device"]),
    }


def _resume(job, run, model, optimizer, scheduler, source, progress) -> None:
    """Continue from ``train_state.pt`` when it was written with the same settings."""
    path = job.state_path
    if not path.is_file():
        return
    try:
        state = load_state_file(path, what="training state")
    except UserError as error:
        log.warning("ignoring the unreadable training state %s (%s); starting afresh", path, error)
        return
    if state.get("fingerprint") != run["fingerprint"]:
        log.info("ignoring %s: it was written with other settings; starting afresh", path)
        return
    model.load_state_dict(state["model_state"])
    optimizer.load_state_dict(state["optimizer_state"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler_state"])
    source.set_rng_state(state["rng"])
    for key, value in state["progress"].items():
        setattr(progress, key, value)
    if progress.order is not None:
        progress.order = progress.order.to(run["device"])
    log.info(
        "resuming %s from %s: epoch %d, step %d", job.name, path, progress.epoch + 1, progress.step
    )


# ----------------------------------------------------------------------------- prediction


@torch.inference_mode()
def predict(
    model: nn.Module,
    images: np.ndarray,
    device: torch.device,
    batch_size: int,
    test_time_flip: bool = False,
) -> torch.Tensor:
    """Scores (N, 10) on the CPU: raw outputs, or with ``test_time_flip`` the mean softmax of each
    image and its mirror image."""
    model.eval().to(device)
    scores = []
    for start in range(0, len(images), batch_size):
        batch = to_float_batch(
            torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
        )
        outputs = model(batch).float()
        if test_time_flip:
            outputs = (outputs.softmax(dim=1) + model(batch.flip(3)).float().softmax(dim=1)) / 2
        scores.append(outputs.cpu())
    return torch.cat(scores)
