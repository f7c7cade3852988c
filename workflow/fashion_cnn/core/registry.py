"""One registry per choice an experiment makes: models, augmentation presets, optimizers and
learning-rate schedules (after torchvision's ``register_model`` / ``get_model`` / ``list_models``).

The module that implements a choice registers it; everything else asks the registry, and a name it
does not know is a user error that lists the known ones, never a silent fallback. The config
schema's enum for each choice is read from the registering module's source
(``config.REGISTRY_ENUMS``), and ``tests/test_registries.py`` holds it equal to the registry.
Torch-free, so the config layer may import it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from fashion_cnn.core.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, config_key: str):
        self.kind = kind
        self.config_key = config_key  # the experiment key that names a choice of this kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("cnn")`` above a class or builder function."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), list(self._entries), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UserError(
                f"Unknown {self.kind} '{name}'.{hint} Known: {', '.join(self.names())}. Set the "
                f"experiment's {self.config_key} to one of them."
            ) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
