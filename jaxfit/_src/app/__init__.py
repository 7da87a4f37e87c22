"""The applications on top of every layer: the ``jaxfit`` command and the
multi-process set-up (``jaxfit.cli`` and ``jaxfit.distributed`` are their faces)."""
