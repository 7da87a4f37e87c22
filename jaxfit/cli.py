"""The ``jaxfit`` command: ``run``, ``validate`` and ``show`` (also ``python -m jaxfit``).

jaxfit run CONFIG [--set key.path=value ...] [--workdir DIR]
jaxfit run --resume RUN_DIR
jaxfit validate CONFIG [--set key.path=value ...]
jaxfit show RUN_DIR
"""

from jaxfit._src.app.cli import main as main

__all__ = ["main"]
