"""Sweeps: many runs of one config, on Optuna (``jaxfit sweep CONFIG``).

An edge above the runner: it imports ``jaxfit._src.runner``, never the reverse.
``spec`` reads the ``sweep:`` section into a ``SweepSpec`` (the search space as
Optuna distributions, the sampler, the pruner, the objective) and registers its
check into the runner's ``checks`` on import, so that ``jaxfit validate`` checks
the section too. Optuna is imported only when a sweep is validated or built.
"""

import jaxfit._src.sweep.spec  # noqa: F401 - registers the sweep: section's check
