"""Typed settings: one field per config key, built once, frozen."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import base_config
from fashion_cnn.config.settings import EngineSettings, ExperimentSettings
from fashion_cnn.config.validation import schema_at


@pytest.mark.parametrize(
    ("settings", "section"),
    [(ExperimentSettings, "experiments.*"), (EngineSettings, "engine")],
    ids=["experiment", "engine"],
)
def test_one_field_per_schema_key(settings, section):
    fields = [field.name for field in dataclasses.fields(settings)]
    assert sorted(fields) == sorted(schema_at(section)["properties"]), (
        f"{settings.__name__} and {section} in the config schema must have the same keys"
    )


def test_built_from_the_validated_config_and_frozen():
    config = base_config()
    experiment = ExperimentSettings.from_dict(config["experiments"]["cnn_small_augmented"])
    assert (experiment.train_subset, experiment.augmentation, experiment.epochs) == (
        500,
        "chapter",
        1000,
    )
    assert experiment.as_dict() == config["experiments"]["cnn_small_augmented"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        experiment.seed = 1  # type: ignore[misc]
    assert experiment.replace(seed=7).seed == 7 and experiment.seed == 42
    engine = EngineSettings.from_dict(config["engine"])
    assert engine.as_dict() == config["engine"]
