"""One registry per choice: the schema's enums are the registries' names, and a name no registry
knows is a user error naming the known ones (before, an unknown optimizer became SGD silently)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import base_config
from fashion_cnn.config.choices import CATALOG_PATH, option_owners
from fashion_cnn.config.schema import schema_at
from fashion_cnn.config.settings import ExperimentSettings
from fashion_cnn.core.errors import UserError
from fashion_cnn.core.registry import Registry
from fashion_cnn.data.augment import PRESETS, Policy, get_policy
from fashion_cnn.models.architectures.cnn import ChapterCNN
from fashion_cnn.models.catalog import MODELS, build_model
from fashion_cnn.models.registry import ModelEntry, option
from fashion_cnn.tools.choices import render, write_or_check
from fashion_cnn.training.losses import THRESHOLDS
from fashion_cnn.training.muon import MuonAdamW
from fashion_cnn.training.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_scheduler
from torch import nn

REGISTRIES = {"model": MODELS, "augmentation": PRESETS, "optimizer": OPTIMIZERS}
REGISTRIES["lr_schedule"] = SCHEDULES
REGISTRIES["strong_augmentation"] = PRESETS  # a second key choosing from the presets
REGISTRIES["pseudo_label_thresholds"] = THRESHOLDS


@pytest.mark.parametrize("key", list(REGISTRIES))
def test_the_schema_enum_is_the_registry(key):
    registry = REGISTRIES[key]
    assert registry.config_key == key or key == "strong_augmentation"
    assert schema_at(f"experiments.*.{key}")["enum"] == registry.names(), (
        f"experiments.*.{key}'s enum, read from the source of the module that registers "
        f"{registry.kind}s (config.REGISTRY_ENUMS), must be exactly the registered names"
    )


def test_the_committed_catalog_describes_the_registries():
    """workflow/schemas/choices.json is what the registries render now (make choices writes it)."""
    assert CATALOG_PATH.read_text() == render()


def test_a_new_registered_model_reaches_the_schema_through_the_catalog(tmp_path, monkeypatch):
    """Adding a model is one entry (and its test): make choices carries its name, options and
    ranges into the config schema, which reads no torch."""
    from fashion_cnn.config import choices, schema, validation

    @dataclasses.dataclass(frozen=True)
    class TinyOptions:
        hidden: int = option(32, "units", minimum=1, maximum=512)

    monkeypatch.setitem(MODELS._entries, "tiny_mlp", ModelEntry(nn.Linear, "tiny", TinyOptions))
    path = tmp_path / "choices.json"
    write_or_check(check=False, path=path)
    monkeypatch.setattr(choices, "CATALOG_PATH", path)
    choices.catalog.cache_clear()
    schema._schema.cache_clear()
    try:
        assert schema_at("experiments.*.model")["enum"][-1] == "tiny_mlp"
        assert schema_at("experiments.*.hidden")["default"] == 32
        config = base_config()
        config["experiments"]["cnn_baseline"].update(model="tiny_mlp", hidden=0)
        with pytest.raises(UserError, match="hidden = 0 is out of range"):
            validation.validate_config(config)
    finally:
        choices.catalog.cache_clear()
        schema._schema.cache_clear()


def test_an_option_shared_by_models_has_one_default():
    """The YAML keeps model options flat, so models that share an option name share its default
    (the default every experiment gets filled in)."""
    for key, owners in option_owners().items():
        defaults = {MODELS.get(name).catalog()["options"][key]["default"] for name in owners}
        assert len(defaults) == 1, f"{key} has several defaults: {defaults}"


def _experiment(**changes) -> ExperimentSettings:
    """The baseline's settings (Adam 1e-3, constant rate) with ``changes``."""
    baseline = ExperimentSettings.from_dict(base_config()["experiments"]["cnn_baseline"])
    return baseline.replace(**changes)


@pytest.mark.parametrize(
    ("ask", "expected"),
    [
        (
            lambda: build_model("vgg", {}),
            "Unknown model 'vgg'. Known: cnn, cnn_bn, resnet_small, resnet18, vit_b16, vit_small.",
        ),
        (lambda: get_policy("mixup"), "Unknown augmentation preset 'mixup'."),
        (
            lambda: make_optimizer(ChapterCNN(), _experiment(optimizer="adamm").training),
            "Unknown optimizer 'adamm'. Did you mean 'adam'?",
        ),
        (
            lambda: make_scheduler(None, _experiment(lr_schedule="step").training, 10),
            "Unknown learning-rate schedule 'step'.",
        ),
    ],
    ids=["model", "augmentation preset", "optimizer", "schedule"],
)
def test_an_unknown_name_is_a_user_error_never_a_fallback(ask, expected):
    with pytest.raises(UserError) as caught:
        ask()
    assert expected in " ".join(caught.value.paragraph().split())


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_each_optimizer_builds_what_its_name_says(name):
    optimizer = make_optimizer(
        ChapterCNN(), _experiment(optimizer=name, weight_decay=0.01).training
    )
    expected = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    expected["muon"] = MuonAdamW
    assert type(optimizer) is expected[name]
    assert optimizer.param_groups[0]["lr"] == 1.0e-3
    assert optimizer.param_groups[0]["weight_decay"] == 0.01


def test_schedules_step_the_rate_as_named():
    rates = {}
    for name in SCHEDULES:
        model = ChapterCNN()
        optimizer = make_optimizer(model, _experiment().training)
        scheduler = make_scheduler(optimizer, _experiment(lr_schedule=name).training, 10)
        seen = []
        for _ in range(5):
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            seen.append(optimizer.param_groups[0]["lr"])
        rates[name] = seen
    assert rates["constant"] == [1.0e-3] * 5
    assert rates["cosine"][-1] < rates["cosine"][0] < 1.0e-3  # annealing down
    assert rates["onecycle"][0] < rates["onecycle"][-1]  # still warming up towards the peak


def test_a_name_registered_twice_is_refused():
    registry: Registry[Policy] = Registry("augmentation preset", "augmentation")
    registry.add("none", Policy())
    with pytest.raises(ValueError, match="registered twice"):
        registry.add("none", Policy())


def test_on_a_cpu_adam_is_fused_and_takes_the_default_step():
    """Fused Adam is the same arithmetic in one pass per tensor (faster for ResNet-18's 11.2M
    parameters): a few steps of each from the same start end at the same weights."""
    cpu = torch.device("cpu")
    for name in ("adam", "adamw", "sgd"):
        optimizer = make_optimizer(ChapterCNN(), _experiment(optimizer=name).training, device=cpu)
        assert optimizer.param_groups[0].get("fused") is (True if name != "sgd" else None)
    models = []
    for device in (None, cpu):  # None: no device named, the default implementation
        torch.manual_seed(0)
        model = ChapterCNN()
        optimizer = make_optimizer(model, _experiment(weight_decay=0.01).training, device=device)
        images, labels = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
        for _ in range(5):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
        models.append(model)
    for default, fused in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(fused, default, rtol=1e-5, atol=1e-6)
