"""Reporting at the edge: History files and plots (no JAX, no training)."""
