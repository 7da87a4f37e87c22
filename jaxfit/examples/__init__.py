"""Runnable examples: ``python -m jaxfit.examples.<name>``."""
