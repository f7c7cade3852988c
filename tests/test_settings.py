"""Typed settings: one field per config key, built once, frozen."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import base_config
from fashion_cnn.config.choices import option_owners
from fashion_cnn.config.settings import EngineSettings, ExperimentSettings
from fashion_cnn.config.validation import schema_at


@pytest.mark.parametrize(
    ("settings", "section"),
    [(ExperimentSettings, "experiments.*"), (EngineSettings, "engine")],
    ids=["experiment", "engine"],
)
def test_one_field_per_schema_key(settings, section):
    """The experiment's model options (every registered model's, flat in the YAML) travel in
    ``model_options``; every other key is a field of its own."""
    fields = [field.name for field in dataclasses.fields(settings) if field.name != "model_options"]
    if settings is ExperimentSettings:
        fields += list(option_owners())
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
    flat = config["experiments"]["cnn_small_augmented"]
    others = set(option_owners()) - set(experiment.model_options)  # other models' options
    assert experiment.as_dict() == {key: value for key, value in flat.items() if key not in others}
    assert experiment.model_options == {"dropout_place": "classifier"}  # the chapter's CNN's
    with pytest.raises(dataclasses.FrozenInstanceError):
        experiment.seed = 1  # type: ignore[misc]
    assert experiment.replace(seed=7).seed == 7 and experiment.seed == 42
    engine = EngineSettings.from_dict(config["engine"])
    assert engine.as_dict() == config["engine"]
