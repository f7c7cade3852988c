"""The model registry: every model an experiment's ``model`` can name is one ``ModelEntry``, the
whole spec of that choice — its builder, its options (a frozen dataclass whose fields are
experiment keys, each with a default, a range and a description), and its capabilities (takes
dropout, pretrained weights and how they load, which filters the figure draws).

Adding a model is one module in ``fashion_cnn/models/architectures/`` that calls
``MODELS.add(...)``, its test, and ``make choices`` (which writes the torch-free catalog the config
layer validates with, ``workflow/schemas/choices.json``; ``make lint`` fails while it is stale).
Nothing else lists model names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from fashion_cnn.core.registry import Registry

ArgumentWhen = Literal["always", "never", "with_dropout"]


def option(
    default: Any,
    description: str,
    argument: ArgumentWhen = "always",
    **schema: Any,
) -> Any:
    """A field of a model's options: its default, its description and its JSON-schema constraints
    (``minimum``, ``maximum``, ``enum``, ``multipleOf``). ``argument`` says when the value is passed
    to the builder: always, never (read elsewhere, e.g. by the weights loader), or only when the
    experiment's dropout is above 0."""
    return field(
        default=default,
        metadata={"description": description, "argument": argument, "schema": schema},
    )


@dataclass(frozen=True)
class NoOptions:
    """A model with no options of its own."""


@dataclass(frozen=True)
class PretrainedWeights:
    """Published ImageNet weights of a model and how they load into it."""

    torchvision_weights: str  # the enum in torchvision.models, e.g. ResNet18_Weights
    head_keys: frozenset[str]  # layers the model replaces (kept fresh), whatever the file holds
    # maps a file's keys (torchvision's layout) to this model's; None: the same layout
    layout: Callable[[dict, nn.Module], dict] | None = None
    # reads Google's own .safetensors checkpoint, normalised with these statistics
    safetensors_statistics: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    """Everything about one model choice."""

    build: Callable[..., nn.Module]
    description: str  # one line for the config schema and the docs
    options: type = NoOptions  # a frozen dataclass made of option() fields
    takes_dropout: bool = False
    pretrained: PretrainedWeights | None = None
    # which filters the figure draws: the chapter's last conv layer, the first conv layer (a
    # pretrained network's conv1, all its filters), or none (no convolutions: a note instead)
    filters: Literal["last", "first", "none"] = "last"

    def option_fields(self) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(self.options)

    def arguments(
        self, options: Mapping[str, Any], output_softmax: bool, dropout: float, weights: str
    ) -> dict[str, Any]:
        """The builder's arguments (stored in checkpoints) for these option values."""
        arguments: dict[str, Any] = {"output_softmax": bool(output_softmax)}
        for item in self.option_fields():
            when = item.metadata["argument"]
            if when == "always" or (when == "with_dropout" and dropout):
                arguments[item.name] = options.get(item.name, item.default)
        statistics = self.pretrained.safetensors_statistics if self.pretrained else None
        if statistics and weights.endswith(".safetensors"):
            arguments["statistics"] = statistics
        if dropout:  # absent when 0, so checkpoints without dropout keep their arguments
            arguments["dropout"] = float(dropout)
        return arguments

    def catalog(self) -> dict[str, Any]:
        """The torch-free description the config layer reads (workflow/schemas/choices.json)."""
        options = {}
        for item in self.option_fields():
            kind = {int: "integer", float: "number", str: "string", bool: "boolean"}
            schema = dict(item.metadata["schema"])
            if "enum" not in schema:
                schema["type"] = kind[type(item.default)]
            options[item.name] = {
                "description": item.metadata["description"],
                "default": item.default,
                **schema,
            }
        return {
            "description": self.description,
            "options": options,
            "takes_dropout": self.takes_dropout,
            "pretrained": self.pretrained is not None,
            "reads_safetensors": bool(self.pretrained and self.pretrained.safetensors_statistics),
            "filters": self.filters,
        }


MODELS: Registry[ModelEntry] = Registry("model", "model")
