"""Docstring examples run (STYLE rule 9): doctest over the public modules."""

import doctest
import importlib

import pytest

MODULES = [
    "jaxfit._src.driver.trainer",
    "jaxfit._src.callbacks.early_stopping",
    "jaxfit._src.callbacks.lambda_callback",
    "jaxfit._src.callbacks.csv_logger",
    "jaxfit._src.callbacks.lr",
    "jaxfit._src.callbacks.model_checkpoint",
    "jaxfit._src.callbacks.backup_and_restore",
    "jaxfit._src.callbacks.tensorboard",
    "jaxfit._src.driver.history",
    "jaxfit._src.driver.progress",
    "jaxfit._src.core.model",
    "jaxfit._src.app.distributed",
    "jaxfit._src.driver.trainer_base",
    "jaxfit._src.driver.callback",
    "jaxfit._src.callbacks.monitor",
    "jaxfit._src.errors",
    "jaxfit._src.adapters.flax_linen",
    "jaxfit._src.adapters.nnx",
    "jaxfit._src.adapters.equinox",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0
