"""The architectures, one module per family; each registers its models in
``fashion_cnn.models.registry.MODELS``. Every module here is imported (and so registered) when this
package is: a new model is a new module, with no list to edit."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
