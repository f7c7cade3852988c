"""Typed, frozen settings, built once from the validated config and passed whole (after nanoGPT's
``GPTConfig``): the engine, models, weights, optimizers and evaluation read attributes, not dict
keys, and nothing can change a setting half-way through a run.

Each field is a key of the config schema (``tests/test_settings.py`` holds the two equal), so a
new key is added in the schema, here, and where it is used; a model's options are its registry
entry's (``model_options``), added with the model. Torch-free: the config layer, which
Snakemake imports, may use it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Self

from fashion_cnn.config import choices


class _Settings:
    """Built from a validated config section; stored as plain values."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        return cls(**{field.name: values[field.name] for field in dataclasses.fields(cls)})

    def as_dict(self) -> dict[str, Any]:
        """Plain values, as checkpoints and metrics store them (loadable with weights_only)."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> Self:
        return dataclasses.replace(self, **changes)


def unlabelled_count(experiment: dict, training_images: int = 60_000) -> int:
    """How many images an experiment uses without labels (``unlabelled_images``: N or all)."""
    value = experiment["unlabelled_images"]
    if value == "all":
        return training_images - experiment["train_subset"] - experiment["validation_images"]
    return int(value)


@dataclass(frozen=True)
class ExperimentSettings(_Settings):
    """What one experiment learns: ``experiments.<name>`` of the config, defaults filled in."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """From the flat keys of the YAML: the model's options go into ``model_options`` (the
        other models' options, filled in as defaults, are left out)."""
        own = choices.model(values["model"])["options"]
        options = {key: values.get(key, spec["default"]) for key, spec in own.items()}
        names = [field.name for field in dataclasses.fields(cls) if field.name != "model_options"]
        return cls(model_options=options, **{name: values[name] for name in names})

    def as_dict(self) -> dict[str, Any]:
        """The flat keys again, as checkpoints and metrics store them."""
        values = dataclasses.asdict(self)
        return {**values.pop("model_options"), **values}

    def replace(self, **changes) -> Self:
        return type(self).from_dict({**self.as_dict(), **changes})

    description: str
    model: str
    # the model's own options (its registry entry's fields: width, patch_size, conv1_init, ...);
    # the YAML keeps them flat beside the other keys, and as_dict() puts them back there
    model_options: dict[str, Any]
    dropout: float
    validation_images: int
    precision: str
    output_softmax: bool
    weights: str
    train_subset: int
    unlabelled_images: int | str  # a count, or 'all'
    unlabelled_ratio: int
    strong_augmentation: str
    pseudo_label_threshold: float
    unlabelled_weight: float
    pseudo_labels_from: str  # model (FixMatch) or average (a mean teacher)
    distribution_alignment: bool  # pseudo-labels aligned with the class shares (ReMixMatch)
    augmentation: str
    epochs: int
    steps_per_epoch: int  # 0: one pass over the training images
    batch_size: int
    optimizer: str
    learning_rate: float
    weight_decay: float
    lr_schedule: str
    label_smoothing: float
    ema_decay: float
    ema_warmup: bool
    test_time_flip: bool
    test_time_shift: int  # pixels; 0: no shifted views
    seed: int
    seeds: list[int]  # the replicates; [seed] when the config leaves it out
    chapter_accuracy: float | None


@dataclass(frozen=True)
class EngineSettings(_Settings):
    """How training runs, not what it learns: the config's ``engine`` section."""

    device: str
    data_pipeline: str
    channels_last: bool | str
    precision: str
    compile: bool | str
    cuda_graph: bool | str
    allocator: str
    shared_cores: str
    eval_batch_size: int
    checkpoint_every_epochs: int
