"""Typed, frozen settings, built once from the validated config and passed whole (after nanoGPT's
``GPTConfig``): the engine, models, weights, optimizers and evaluation read attributes, not dict
keys, and nothing can change a setting half-way through a run.

An experiment's settings are composed of sections: the model and its options, the data it
trains on, the training (optimisation), the semi-supervised part, the evaluation views and the
report's labels. The YAML users write stays flat (a sweep's grid keys stay short); this module
is the one place that maps the flat keys to sections: a section's field names are the YAML's
keys (``ModelSettings.name`` is the key ``model``, ``options`` the model's own keys). Each key
of the config schema is a field of exactly one section (``tests/test_settings.py`` holds it).

The top-level ``engine``, ``export``, ``pretrained`` and ``data`` parts are typed here too; no raw
config dict goes past the command line. Torch-free: the config layer, which Snakemake imports,
may use it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

from fashion_cnn import TRAINING_IMAGES
from fashion_cnn.config import choices


class _Settings:
    """A section built from validated config keys (its field names), stored as plain values."""

    # a field whose YAML key differs from its name: {field name: key}
    KEYS: ClassVar[dict[str, str]] = {}

    @classmethod
    def yaml_keys(cls) -> list[str]:
        """The YAML keys this section reads."""
        return [cls.KEYS.get(field.name, field.name) for field in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        names = [field.name for field in dataclasses.fields(cls)]  # type: ignore[arg-type]
        return cls(**{name: values[cls.KEYS.get(name, name)] for name in names})

    def as_dict(self) -> dict[str, Any]:
        """Plain values under the YAML's keys (loadable with weights_only)."""
        values = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {self.KEYS.get(name, name): value for name, value in values.items()}

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class ModelSettings(_Settings):
    """Which network, its own options (its registry entry's fields), and how it starts."""

    KEYS: ClassVar[dict[str, str]] = {"name": "model"}

    name: str
    # the model's own options (width, patch_size, conv1_init, ...); flat beside the other keys
    # in the YAML, only the chosen model's here
    options: dict[str, Any]
    dropout: float
    output_softmax: bool
    weights: str  # none, imagenet, or a checkpoint's path

    @classmethod
    def yaml_keys(cls) -> list[str]:
        return [key for key in super().yaml_keys() if key != "options"]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        own = choices.model(values["model"])["options"]
        options = {key: values.get(key, spec["default"]) for key, spec in own.items()}
        return cls(
            name=values["model"],
            options=options,
            dropout=values["dropout"],
            output_softmax=values["output_softmax"],
            weights=values["weights"],
        )

    def as_dict(self) -> dict[str, Any]:
        values = super().as_dict()
        return {**values.pop("options"), **values}


@dataclass(frozen=True)
class DataSettings(_Settings):
    """Which training images: the first ``train_subset`` (0: all but the validation images),
    the last ``validation_images`` held out, and the augmentation preset."""

    train_subset: int
    validation_images: int
    augmentation: str


@dataclass(frozen=True)
class TrainingSettings(_Settings):
    """The optimisation: how long, in what steps, with which optimizer, schedule and average."""

    epochs: int
    steps_per_epoch: int  # 0: one pass over the training images
    batch_size: int
    optimizer: str
    learning_rate: float
    weight_decay: float
    lr_schedule: str
    label_smoothing: float
    ema_decay: float  # 0: no moving average of the weights
    ema_warmup: bool
    precision: str


@dataclass(frozen=True)
class SemiSupervisedSettings(_Settings):
    """Images without labels and what labels them: FixMatch's strong views and pseudo-labels, or
    a teacher's soft targets (self-training)."""

    unlabelled_images: int | str  # a count, or 'all'
    unlabelled_ratio: int
    strong_augmentation: str
    pseudo_label_threshold: float
    pseudo_label_thresholds: str  # fixed (FixMatch) or self_adaptive (FreeMatch), per class
    unlabelled_weight: float
    pseudo_labels_from: str  # model (FixMatch) or average (a mean teacher)
    distribution_alignment: bool  # pseudo-labels aligned with the class shares (ReMixMatch)
    teacher: str  # self-training: the experiment whose model labels the unlabelled images; "" none
    teacher_keep: float  # self-training: each class's surest share of the unlabelled images
    teacher_hard: bool  # self-training: the teacher's top class as target, not its softmax
    labelled_repeat: int  # self-training: times each labelled image is in the student's set

    @property
    def enabled(self) -> bool:
        return bool(self.unlabelled_images)


@dataclass(frozen=True)
class EvaluationSettings(_Settings):
    """The test-time views whose softmax evaluation averages."""

    test_time_flip: bool
    test_time_shift: int  # pixels; 0: no shifted views


@dataclass(frozen=True)
class ExperimentSettings:
    """What one experiment learns: ``experiments.<name>`` of the config, defaults filled in, in
    sections; ``seed`` is this replicate's, ``seeds`` all of them (filled in by the config)."""

    SECTIONS: ClassVar[dict[str, type[_Settings]]] = {
        "model": ModelSettings,
        "data": DataSettings,
        "training": TrainingSettings,
        "semi_supervised": SemiSupervisedSettings,
        "evaluation": EvaluationSettings,
    }
    # the report's labels and the replicates: the keys no section owns
    OWN_KEYS: ClassVar[tuple[str, ...]] = ("description", "chapter_accuracy", "seed", "seeds")

    model: ModelSettings
    data: DataSettings
    training: TrainingSettings
    semi_supervised: SemiSupervisedSettings
    evaluation: EvaluationSettings
    description: str
    chapter_accuracy: float | None
    seed: int
    seeds: list[int]

    @classmethod
    def yaml_keys(cls) -> list[str]:
        """Every flat YAML key the sections read (the chosen model's options aside)."""
        return [key for section in cls.SECTIONS.values() for key in section.yaml_keys()] + list(
            cls.OWN_KEYS
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """From the flat keys of the YAML (the other models' options, filled in as defaults by
        the config, are left out)."""
        sections = {name: section.from_dict(values) for name, section in cls.SECTIONS.items()}
        return cls(**sections, **{key: values[key] for key in cls.OWN_KEYS})  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, Any]:
        """The flat keys again, as checkpoints and metrics store them."""
        flat: dict[str, Any] = {}
        for name in self.SECTIONS:
            flat.update(getattr(self, name).as_dict())
        flat.update({key: getattr(self, key) for key in self.OWN_KEYS})
        return flat

    def replace(self, **changes: Any) -> Self:
        """A copy with some flat keys changed (a sweep point, a test's variant)."""
        return type(self).from_dict({**self.as_dict(), **changes})

    def unlabelled_count(self, training_images: int = TRAINING_IMAGES) -> int:
        """How many images it uses without labels (``unlabelled_images``: N or all); none
        without a ``train_subset``."""
        value = self.semi_supervised.unlabelled_images
        if not self.data.train_subset:
            return 0
        if value == "all":
            return training_images - self.data.train_subset - self.data.validation_images
        return int(value)


# An engine switch: on, off, or the measured default for the device (auto).
Switch = bool | Literal["auto"]


@dataclass(frozen=True)
class EngineSettings(_Settings):
    """How training runs, not what it learns: the config's ``engine`` section."""

    device: str  # auto, cpu, cuda or cuda:N
    data_pipeline: Literal["device", "dataloader"]
    channels_last: Switch
    precision: Literal["auto", "fp32", "bf16"]
    compile: Switch
    cuda_graph: Switch
    allocator: Literal["auto", "system"]
    shared_cores: Literal["keep", "adapt"]
    eval_batch_size: int
    checkpoint_every_epochs: int


@dataclass(frozen=True)
class ExportSettings(_Settings):
    """The config's ``export`` section: the ONNX opset and the parity and latency checks."""

    opset: int
    parity_images: int
    parity_tolerance: float
    latency_repeats: int


@dataclass(frozen=True)
class AssessmentSettings(_Settings):
    """The config's ``assessment`` section: calibration, the gallery of mistakes, corruptions."""

    calibration_bins: int
    temperature_images: int
    corruption_images: int
    gallery_pairs: int
    gallery_images: int


@dataclass(frozen=True)
class PretrainedSettings(_Settings):
    """The config's ``pretrained`` section."""

    strict: bool  # stop when ImageNet weights cannot be had, instead of training from scratch


@dataclass(frozen=True)
class DownloadSettings(_Settings):
    """The config's ``data`` section: where Fashion-MNIST comes from."""

    mirrors: list[str]
    timeout_s: float
