"""The ``jaxfit`` command: ``run``, ``validate``, ``show``, ``evaluate`` and
``configs`` (also ``python -m jaxfit``).

jaxfit run CONFIG [--set key.path=value ...] [--workdir DIR]
jaxfit run --resume RUN_DIR
jaxfit validate CONFIG [--set key.path=value ...]
jaxfit show RUN_DIR
jaxfit evaluate RUN_DIR [--data NAME] [--set data.KEY=VALUE ...] [--split test|train]
jaxfit configs [DIR]

CONFIG is a YAML file or a shipped config's name (``jaxfit run digits_mlp``).
"""

from jaxfit._src.app.cli import main as main

__all__ = ["main"]
