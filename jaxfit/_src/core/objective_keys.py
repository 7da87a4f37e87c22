"""How an ``Objective``'s metrics and log keys are laid out: one entry per metric
and output, in Keras' order, keyed as Keras keys them; keys that repeat, or that
the ``val_`` prefix of validation logs would repeat, refused.
"""

from __future__ import annotations

from typing import Any

import jax

from jaxfit._src import errors
from jaxfit._src.core import metric_objects


def expand(names: list[str], entries: Any, objects: Any) -> list[str]:
    """``names`` with each vector metric's key replaced by ``<key>_<i>``."""
    sizes = {key: getattr(m, "size", None) for (key, *_), m in zip(entries, objects)}
    out: list[str] = []
    for name in names:
        size = sizes.get(name)
        out += [name] if size is None else [f"{name}_{i}" for i in range(size)]
    return out


def loss_keys(names: list[str]) -> set[str]:
    """The loss keys of outputs ``names``: what a metric key may not repeat."""
    taken = {"loss"}
    if len(names) > 1:
        taken |= {f"{name}_loss" for name in names}
    return taken


def metric_entries(names, y, y_pred, metric_spec, weighted_spec, taken):
    """``(key, leaf, fn, weighted, metric)`` for every metric, in Keras' order."""
    y_leaves = jax.tree_util.tree_leaves(y)
    pred_leaves = jax.tree_util.tree_leaves(y_pred)
    entries = []
    metric_keys: set[str] = set()
    for spec, weighted, argname in (
        (metric_spec, False, "metrics"),
        (weighted_spec, True, "weighted_metrics"),
    ):
        per_leaf = _metrics_per_output(spec, names, argname)
        for leaf, (name, specs) in enumerate(zip(names, per_leaf)):
            for item in specs:
                metric = metric_objects.get(
                    item, y_leaves[leaf], pred_leaves[leaf], argname=argname
                )
                key = f"{name}_{metric.name}" if len(names) > 1 else metric.name
                if key in metric_keys:  # Keras: a weighted twin gets a prefix
                    key = f"weighted_{key}"
                if key in taken or key in metric_keys:
                    raise ValueError(_duplicate(argname, key, item))
                metric_keys.add(key)
                fn = (
                    metric.fn
                    if isinstance(metric, metric_objects.MeanMetricWrapper)
                    else metric
                )
                entries.append((key, leaf, fn, weighted, metric))
    return entries


def _duplicate(argname: str, key: str, item: Any) -> str:
    return errors.expected(
        argname,
        "metrics whose log keys differ from each other and from the loss keys",
        item,
        f"Its log key {key!r} is taken; give it another name (name=...).",
    )


def check_keys(keys: list[str], output_names: tuple[str, ...]) -> None:
    """Refuses log keys that repeat, or that the ``val_`` prefix would repeat."""
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise ValueError(
                errors.expected(
                    "metrics",
                    "log keys that differ",
                    errors.Description(f"{key!r} twice"),
                )
            )
        seen.add(key)
    for key in keys:
        if key.startswith("val_") and key[4:] in seen:
            owner = [n for n in output_names if key.startswith(f"{n}_")]
            raise ValueError(
                errors.expected(
                    "y",
                    "output names whose log keys do not collide with the "
                    "validation keys (val_<key>)",
                    errors.Description(
                        f"the output {(owner or [key])[0]!r}, whose key {key!r} "
                        f"is also the validation key of {key[4:]!r}"
                    ),
                    "Rename the output (a dict key of y and of the model's output).",
                )
            )


def _metrics_per_output(spec: Any, names: list[str], argname: str) -> list[list[Any]]:
    """A list of metrics applies to every output; a dict names outputs."""
    if spec is None:
        return [[] for _ in names]
    if isinstance(spec, dict):
        unknown = set(spec) - set(names)
        if unknown:
            raise ValueError(
                errors.expected(argname, f"keys among the outputs {names}", spec)
            )
        return [_as_list(spec.get(name)) for name in names]
    return [_as_list(spec)] * len(names)


def _as_list(spec: Any) -> list[Any]:
    if spec is None:
        return []
    if isinstance(spec, (list, tuple)):
        return list(spec)
    return [spec]
