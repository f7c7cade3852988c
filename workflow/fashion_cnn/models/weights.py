"""Initial weights: ImageNet ResNet-18 or ViT-B/16 from torchvision's URLs (with their hash check),
or a .pth path.

``fetch_imagenet_weights`` runs on the login node (a local rule): it writes the weights file and a
small status JSON. When the download fails, the status says why, and training goes on from random
initialisation, loudly (or stops, with ``pretrained.strict``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
import torchvision.models
from torch import nn

from fashion_cnn.config.settings import ExperimentSettings
from fashion_cnn.core.errors import UserError
from fashion_cnn.core.files import atomic_path, write_json
from fashion_cnn.core.text import FALLBACK_SOURCE, fallback_mark
from fashion_cnn.models.catalog import MODELS, build_model, model_arguments
from fashion_cnn.models.checkpoint import FORMAT, load_file
from fashion_cnn.models.safetensors import (
    google_vit_to_torchvision,
    is_google_vit,
    read_safetensors,
)

log = logging.getLogger(__name__)


def imagenet_weights_url(model: str = "resnet18") -> str:
    """torchvision's IMAGENET1K_V1 file of ``model`` (its entry names torchvision's weights enum)."""
    pretrained = MODELS.get(model).pretrained
    if pretrained is None:
        raise UserError(
            f"Model {model} has no published ImageNet weights here; models with them: "
            f"{', '.join(name for name in MODELS if MODELS.get(name).pretrained)}."
        )
    return getattr(torchvision.models, pretrained.torchvision_weights).IMAGENET1K_V1.url


def fetch_imagenet_weights(
    folder: Path, status_path: Path, strict: bool, model: str = "resnet18"
) -> dict:
    """Download torchvision's IMAGENET1K_V1 file of ``model``, checking the hash in its name."""
    url = imagenet_weights_url(model)
    filename = url.rsplit("/", 1)[-1]
    target = folder / filename
    status: dict[str, object] = {"url": url, "path": str(target), "model": model}
    match = torch.hub.HASH_REGEX.search(filename)
    hash_prefix = match.group(1) if match else None
    if target.is_file() and _sha256(target).startswith(hash_prefix or ""):
        status.update(available=True, reason="already present, hash checked")
    else:
        if target.is_file():
            log.warning("%s does not match the hash in its name; downloading it again", target)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(target) as temporary:
                torch.hub.download_url_to_file(
                    url,
                    str(temporary),
                    hash_prefix=match.group(1) if match else None,
                    progress=False,
                )
            status.update(available=True, reason="downloaded, hash checked")
        except (OSError, RuntimeError, ValueError) as error:  # URLError is an OSError
            reason = f"{type(error).__name__}: {error}"
            status.update(available=False, reason=reason)
            message = (
                f"Could not download the ImageNet weights for {model} from {url} ({reason}). "
                f"On a machine with internet, download that file into {folder}/ (or run this rule "
                "on the login node), or set the experiment's weights to a local .pth path"
            )
            if strict:
                raise UserError(
                    message + ". pretrained.strict is true, so the workflow stops here."
                ) from error
            log.warning(
                "%s. Going on from RANDOM INITIALISATION (pretrained.strict is false); delete %s to "
                "try the download again.",
                message,
                status_path,
            )
    write_json(status_path, status)
    return status


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_status(status_path: Path) -> dict:
    try:
        return json.loads(Path(status_path).read_text())
    except (OSError, ValueError) as error:
        raise UserError(
            f"{status_path} is missing or unreadable ({error}). Delete it and rerun the "
            "fetch_pretrained_weights rule."
        ) from error


def _state_dict_from_file(path: Path) -> dict:
    if path.suffix == ".safetensors":
        return _google_vit_from_file(path)
    state = load_file(path, what="weights file")
    if isinstance(state, dict) and state.get("format") == FORMAT:
        state = state["model_state"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(
            f"{path} is not a state_dict (a mapping of parameter names to tensors). Give a .pth "
            "saved with torch.save(model.state_dict(), path), or a fashion-cnn model.pt."
        )
    return state


def _google_vit_from_file(path: Path) -> dict:
    """Google's ViT-B/16 checkpoint (google/vit-base-patch16-224's model.safetensors) in
    torchvision's vit_b_16 layout. A .safetensors file is read as that checkpoint only: the model
    normalises its input as Google's ViT was trained (models.STATISTICS)."""
    state = read_safetensors(path)
    if not is_google_vit(state):
        raise UserError(
            f"{path} is a .safetensors file, which is read as Google's ViT-B/16 checkpoint "
            "(google/vit-base-patch16-224's model.safetensors), but it has no "
            "embeddings.cls_token. For torchvision's weights give their .pth file instead."
        )
    return google_vit_to_torchvision(state)


def apply_weights(model: nn.Module, model_name: str, source: Path, conv1_init: str) -> dict:
    """Copy pretrained weights into ``model``; returns what was done, for the log and metrics.

    Every tensor must match by name and shape, except the ones the chapter replaces (ResNet-18's
    conv1 and fc), which stay freshly initialised, or, for conv1 with ``mean_rgb``, become the mean
    of the pretrained RGB filters.
    """
    pretrained = _state_dict_from_file(source)
    own = model.state_dict()
    entry = MODELS.get(model_name).pretrained
    replaced = entry.head_keys if entry else frozenset()
    if entry and entry.layout:
        pretrained = entry.layout(pretrained, model)
    loaded, kept_fresh, problems = [], [], []
    for key, tensor in own.items():
        incoming = pretrained.get(key)
        if incoming is not None and incoming.shape == tensor.shape:
            own[key] = incoming.to(tensor.dtype)
            loaded.append(key)
        elif key in replaced:
            kept_fresh.append(key)
        else:
            problems.append(
                key if incoming is None else f"{key} {tuple(incoming.shape)}≠{tuple(tensor.shape)}"
            )
    if problems:
        raise UserError(
            f"The weights in {source} do not fit model '{model_name}': {len(problems)} tensors are "
            f"missing or of the wrong shape ({', '.join(problems[:4])}…). Use weights made for this "
            "model (torchvision's resnet18 or vit_b_16 state_dict, or a fashion-cnn model.pt of it), "
            "or change the model."
        )
    conv1 = pretrained.get("conv1.weight")
    if conv1_init == "mean_rgb":
        if conv1 is None or conv1.dim() != 4:
            raise UserError(f"conv1_init mean_rgb needs a conv1.weight in {source}; it has none.")
        own["conv1.weight"] = conv1.mean(dim=1, keepdim=True).to(own["conv1.weight"].dtype)
        if "conv1.weight" in kept_fresh:
            kept_fresh.remove("conv1.weight")
    model.load_state_dict(own)
    log.info(
        "loaded %d pretrained tensors from %s; fresh: %s",
        len(loaded),
        source,
        ", ".join(kept_fresh) or "none",
    )
    return {"loaded": len(loaded), "fresh": kept_fresh}


def initialise(
    model: nn.Module, experiment: ExperimentSettings, weights_input: str | None, strict: bool
) -> str:
    """Apply the experiment's ``weights`` setting; returns the weights source for the metrics."""
    choice = experiment.model.weights
    if choice == "none":
        return "random init"
    if choice == "imagenet":
        if weights_input is None:
            raise UserError(
                "weights: imagenet needs the status file that fetch-weights writes: pass it with "
                "--weights-status (the workflow's train rule does), or set weights: none."
            )
        status = read_status(Path(weights_input))
        if not status.get("available"):
            message = (
                f"ImageNet weights unavailable ({status.get('reason')}); training "
                f"{experiment.model.name} from "
                f"RANDOM INITIALISATION — {fallback_mark(experiment.chapter_accuracy)}"
            )
            if strict:
                raise UserError(message + ". pretrained.strict is true: fetch the weights first.")
            log.warning(message)
            return FALLBACK_SOURCE
        apply_weights(model, experiment.model.name, Path(status["path"]), _conv1_init(experiment))
        return f"imagenet ({Path(status['path']).name}{_conv1_note(experiment)})"
    apply_weights(model, experiment.model.name, Path(choice), _conv1_init(experiment))
    return f"file {choice}{_conv1_note(experiment)}"


def _conv1_note(experiment: ExperimentSettings) -> str:
    init = experiment.model.options.get("conv1_init")
    return f", conv1 {init}" if init else ""


def _conv1_init(experiment: ExperimentSettings) -> str:
    """ResNet-18's conv1_init option; random for a model without it."""
    return experiment.model.options.get("conv1_init", "random")


def check_weights_file(settings: dict) -> None:
    """A run's own weights file (``weights:`` a path) loads into its model, as its training job
    would load it; a UserError where it does not. For Snakemake to ask before any job."""
    experiment = ExperimentSettings.from_dict(settings)
    model = build_model(experiment.model.name, model_arguments(experiment.model))
    initialise(model, experiment, None, strict=True)
