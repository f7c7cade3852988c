"""A run's training state: the self-describing checkpoint the loop saves (``training_state``)
and continuing from ``train_state.pt`` when it was written with the same settings (``resume``).
A state whose fingerprint matches but does not load stops with a paragraph; one of other
settings, or unreadable, is set aside with a log line and the run starts afresh."""

from __future__ import annotations

import logging

from fashion_cnn.core.errors import UserError
from fashion_cnn.models.checkpoint import FORMAT
from fashion_cnn.models.checkpoint import load_file as load_state_file
from fashion_cnn.training.optim import set_learning_rate_kind
from fashion_cnn.training.run import Progress, Run

log = logging.getLogger(__name__)


def training_state(run: Run) -> dict:
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
        "model": {"name": experiment.model.name, "arguments": run.arguments},
        "model_state": run.final_model.state_dict(),
        **averaged,
        "optimizer_state": run.optimizer.state_dict(),
        "scheduler_state": run.scheduler.state_dict() if run.scheduler is not None else None,
        "loss_state": run.loss_function.state_dict(),  # distribution alignment's class shares
        "config": experiment.as_dict(),
        "engine": job.engine.as_dict(),
        "complete": run.progress.epoch == experiment.training.epochs,
        "progress": run.progress.as_dict(),
        "rng": run.source.rng_state(),
        "seed": experiment.seed,
        "fingerprint": run.fingerprint,
        "weights_source": run.weights_source,
        "training_images": run.images,
        "precision": "bf16 autocast" if run.switches.bf16 else "fp32",
        "provenance": run.provenance,
    }


def resume(run: Run) -> None:
    """Continue from ``train_state.pt`` when it was written with the same settings."""
    job, progress = run.job, run.progress
    saved = _matching_state(run)
    if saved is None:
        return
    # The fingerprint matches, so the file claims to be this run's state: a part that is missing
    # or does not load means it was damaged or edited, and resuming from half of it would be wrong.
    try:
        _load_state(run, saved)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        first_line = str(error).splitlines()[0][:160] if str(error) else ""
        raise UserError(
            f"The training state {job.state_path} has this run's settings but cannot be resumed "
            f"from ({type(error).__name__}: {first_line}): it was damaged or edited. Delete it "
            "to train from the start, and rerun."
        ) from error
    for key, value in saved["progress"].items():
        setattr(progress, key, value)
    if progress.order is not None:
        progress.order = progress.order.to(run.device)
    if saved.get("complete"):
        log.info("%s in %s is already trained; writing its outputs again", job.name, job.state_path)
        return
    log.info(
        "resuming %s from %s: epoch %d, step %d",
        job.name,
        job.state_path,
        progress.epoch + 1,
        progress.step,
    )


def _matching_state(run: Run) -> dict | None:
    """The saved training state when it is readable and of this run's settings, else None."""
    path = run.job.state_path
    if not path.is_file():
        return None
    try:
        saved = load_state_file(path, what="training state")
    except UserError as error:
        log.warning("ignoring the unreadable training state %s (%s); starting afresh", path, error)
        return None
    if not isinstance(saved, dict) or saved.get("fingerprint") != run.fingerprint:
        log.info("ignoring %s: it was written with other settings; starting afresh", path)
        return None
    return saved


def _load_state(run: Run, saved: dict) -> None:
    if set(saved["progress"]) != set(Progress().as_dict()):
        raise ValueError("its progress record has other fields")
    if run.averaged is not None:
        run.model.load_state_dict(saved["training_model_state"])
        run.averaged.load_state_dict(saved["ema_state"])
    else:
        run.model.load_state_dict(saved["model_state"])
    run.optimizer.load_state_dict(saved["optimizer_state"])
    set_learning_rate_kind(run.optimizer, run.device if run.switches.cuda_graph else None)
    if run.scheduler is not None:
        run.scheduler.load_state_dict(saved["scheduler_state"])
    # a state written before losses had a state reads as empty: right for every loss but
    # distribution alignment's, which is newer than that and so always has its own
    run.loss_function.load_state_dict(saved.get("loss_state", {}))
    run.source.set_rng_state(saved["rng"])
