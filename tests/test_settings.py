"""Typed settings: one field per config key, built once, frozen."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import base_config
from fashion_cnn.config.choices import option_owners
from fashion_cnn.config.schema import schema_at
from fashion_cnn.config.settings import (
    AssessmentSettings,
    DownloadSettings,
    EngineSettings,
    ExperimentSettings,
    ExportSettings,
    PretrainedSettings,
)


@pytest.mark.parametrize(
    ("settings", "section"),
    [
        (ExperimentSettings, "experiments.*"),
        (EngineSettings, "engine"),
        (ExportSettings, "export"),
        (AssessmentSettings, "assessment"),
        (PretrainedSettings, "pretrained"),
        (DownloadSettings, "data"),
    ],
    ids=["experiment", "engine", "export", "assessment", "pretrained", "data"],
)
def test_one_field_per_schema_key(settings, section):
    """Every key of the section is read by exactly one field: the experiment's keys by one of its
    sections' fields (or its own), and the model options (every registered model's, flat in the
    YAML) by ``ModelSettings.options``."""
    keys = settings.yaml_keys()
    if settings is ExperimentSettings:
        keys += list(option_owners())
    assert len(keys) == len(set(keys)), f"a key read by two fields: {keys}"
    assert sorted(keys) == sorted(schema_at(section)["properties"]), (
        f"{settings.__name__} and {section} in the config schema must have the same keys"
    )


def test_built_from_the_validated_config_and_frozen():
    config = base_config()
    experiment = ExperimentSettings.from_dict(config["experiments"]["cnn_small_augmented"])
    assert (
        experiment.data.train_subset,
        experiment.data.augmentation,
        experiment.training.epochs,
    ) == (
        500,
        "chapter",
        1000,
    )
    flat = config["experiments"]["cnn_small_augmented"]
    others = set(option_owners()) - set(experiment.model.options)  # other models' options
    assert experiment.as_dict() == {key: value for key, value in flat.items() if key not in others}
    assert experiment.model.options == {"dropout_place": "classifier"}  # the chapter's CNN's
    with pytest.raises(dataclasses.FrozenInstanceError):
        experiment.seed = 1  # type: ignore[misc]
    assert experiment.replace(seed=7).seed == 7 and experiment.seed == 42
    with pytest.raises(dataclasses.FrozenInstanceError):
        experiment.training.epochs = 1  # type: ignore[misc]
    for settings, key in [
        (EngineSettings, "engine"),
        (ExportSettings, "export"),
        (AssessmentSettings, "assessment"),
        (PretrainedSettings, "pretrained"),
        (DownloadSettings, "data"),
    ]:
        assert settings.from_dict(config[key]).as_dict() == config[key]
