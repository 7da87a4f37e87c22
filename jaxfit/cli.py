"""The ``jaxfit`` command: ``run``, ``validate``, ``show``, ``evaluate``,
``compare``, ``sweep`` and ``configs`` (also ``python -m jaxfit``).

jaxfit run CONFIG [--set key.path=value ...] [--workdir DIR]
jaxfit run --resume RUN_DIR
jaxfit validate CONFIG [--set key.path=value ...]
jaxfit show RUN_DIR | SWEEP_DIR
jaxfit evaluate RUN_DIR [--data NAME] [--set data.KEY=VALUE ...] [--split test|train]
jaxfit compare RUN_DIR... [--metric M] [--mode auto|min|max] [--out PNG]
jaxfit sweep CONFIG [--set ...] [--workdir DIR] [--trials N] [--storage URL]
jaxfit sweep --resume SWEEP_DIR
jaxfit configs [DIR]

CONFIG is a YAML file or a shipped config's name (``jaxfit run digits_mlp``).
"""

from jaxfit._src.app.cli import main as main

__all__ = ["main"]
