"""The search space of a ``sweep:`` section: one ``Param`` per config key path.

Each entry of ``sweep.space`` is ``{config key path: distribution}``, the
distribution one of

    {uniform: [low, high]}            a float in [low, high]; also step: s
    {loguniform: [low, high]}         a float, log-uniform in [low, high] (low > 0)
    {int: [low, high]}                an int in [low, high]; also step: s, log: true
    {choice: [v1, v2, ...]}           one of the values (any YAML values: lists too)

``low < high``; a ``step`` divides ``high - low``; an ``int`` with ``log: true``
has ``low >= 1`` and no step (Optuna's rules, refused here rather than warned
about). Every candidate value (``low``, ``high``, each choice) is set at its key
path in the config, as ``--set`` would (``config.apply_overrides``), and the
result goes through the schema and the runner's checks (``checks.check``): a key
path the config does not have, or a value its key does not take, is refused,
naming ``sweep.space.<path>``. So an int range on a float key is fine (its values
are given as floats), a float range on an int key is not, and a choice the key's
type refuses is refused. The candidates are kept as the checks converted them
(``1e-3`` read by PyYAML as a string is a float).

Optuna's categorical distributions hold ``None``, bool, int, float and str only.
A choice whose values are all of those is given to Optuna as is; otherwise
(a list, a mapping among them) every value of that choice is given as its JSON
text (``"[128, 64]"``, readable in optuna-dashboard), and ``Param.value`` maps
it back.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any, Literal

from jaxfit._src import errors
from jaxfit._src.runner import checks, schema, yaml_reader
from jaxfit._src.runner import config as config_lib
from jaxfit._src.runner.types import ConfigError

# the key naming an entry's distribution -> (Param.kind, the other keys it takes)
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "uniform": ("float", ("step",)),
    "loguniform": ("float", ()),
    "int": ("int", ("step", "log")),
    "choice": ("choice", ()),
}
_SCALARS = (type(None), bool, int, float, str)  # what an Optuna categorical holds


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched config key path and its distribution.

    Attributes:
      path: the config key path (``optimizer.learning_rate``).
      kind: ``"float"``, ``"int"`` or ``"choice"``.
      low: the lowest value (``float`` / ``int``), else ``None``.
      high: the highest value (inclusive), else ``None``.
      log: whether the values are drawn log-uniformly.
      step: the spacing of the values, or ``None`` (any value in the range).
      choices: a ``choice``'s values, as the config's checks converted them.
      as_float: an ``int`` range on a float key: its values are given as floats.
    """

    path: str
    kind: Literal["float", "int", "choice"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    as_float: bool = False

    @property
    def encoded(self) -> bool:
        """Whether Optuna holds this choice's values as JSON text (see the module
        docstring): some value is not a ``None``, bool, int, float or str."""
        return self.kind == "choice" and not all(
            isinstance(c, _SCALARS) for c in self.choices
        )

    def optuna_choices(self) -> list[Any]:
        """The choice's values as Optuna holds them (JSON text when ``encoded``)."""
        if self.encoded:
            return [json.dumps(c) for c in self.choices]
        return list(self.choices)

    def distribution(self) -> Any:
        """The Optuna distribution: ``FloatDistribution``, ``IntDistribution`` or
        ``CategoricalDistribution`` (of ``optuna_choices()``)."""
        distributions = optuna_module().distributions
        if self.kind == "choice":
            return distributions.CategoricalDistribution(self.optuna_choices())
        cls = (
            distributions.FloatDistribution
            if self.kind == "float"
            else distributions.IntDistribution
        )
        step = 1 if self.kind == "int" and self.step is None else self.step
        return cls(self.low, self.high, log=self.log, step=step)

    def value(self, raw: Any) -> Any:
        """The config value of an Optuna value of this parameter (a trial's
        ``params[path]``): a choice's JSON text decoded, an ``as_float`` int a
        float, a float a Python float."""
        if self.kind == "choice":
            return json.loads(raw) if self.encoded else raw
        if self.kind == "int":
            return float(raw) if self.as_float else int(raw)
        return float(raw)

    def suggest(self, trial: Any) -> Any:
        """``trial.suggest_float`` / ``suggest_int`` / ``suggest_categorical`` of
        this parameter (named by its path), as its config value (``value``)."""
        if self.kind == "choice":
            raw = trial.suggest_categorical(self.path, self.optuna_choices())
        elif self.kind == "int":
            step = 1 if self.step is None else self.step
            raw = trial.suggest_int(
                self.path, self.low, self.high, step=step, log=self.log
            )
        else:
            raw = trial.suggest_float(
                self.path, self.low, self.high, step=self.step, log=self.log
            )
        return self.value(raw)


INSTALL = "pip install optuna (it is in jaxfit-trainer's sweep extra)"


def optuna_module() -> Any:
    """``optuna``, imported on first use (``import jaxfit`` never imports it).

    Raises:
      ImportError: optuna is not installed (one line: what to install).
    """
    try:
        import optuna
    except ImportError as error:
        raise ImportError(f"jaxfit sweeps need optuna: {INSTALL}.") from error
    return optuna


# -- the config with values set at key paths ------------------------------------
def overrides(values: Mapping[str, Any]) -> list[str]:
    """``["key.path=value", ...]``: ``values`` as ``--set`` overrides, each value
    written as YAML that reads back as the same value."""
    dump = yaml_reader._yaml().safe_dump
    out = []
    for path, value in values.items():
        text = dump(value, default_flow_style=True, width=math.inf)
        out.append(f"{path}={text.removesuffix('...' + chr(10)).strip()}")
    return out


def trial_config(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The config of one trial: ``base`` with each key path set to its value.

    Args:
      base: the sweep's config as plain data (as config.yaml holds it); its
        ``sweep`` section, if any, is left out.
      values: ``{config key path: value}`` (``SweepSpec.suggest``'s).

    Returns:
      A new mapping, what ``jaxfit run BASE --set path=value ...`` would run
      (``config.apply_overrides``); ``base`` is unchanged.

    Raises:
      ConfigError: a key path through a value that is not a section.
    """
    raw = {key: value for key, value in base.items() if key != "sweep"}
    return config_lib.apply_overrides(raw, overrides(values))[0]


# -- parsing ----------------------------------------------------------------------
def parse_param(path: str, entry: Any, base: Mapping[str, Any], key: str) -> Param:
    """One ``sweep.space`` entry as a ``Param``, its candidates checked against
    the config ``base`` (plain data, without a sweep section).

    Raises:
      ConfigError: naming ``key`` (``sweep.space.<path>``) or one of its keys.
    """
    if not isinstance(entry, Mapping):
        raise ConfigError(_expected_entry(key, entry))
    named = [name for name in entry if name in KINDS]
    if len(named) != 1:
        raise ConfigError(_expected_entry(key, entry))
    name = named[0]
    kind, options = KINDS[name]
    for option in entry:
        if option != name and option not in options:
            raise ConfigError(
                f"{key}.{option}: unknown key; {name!r} takes "
                f"{list(options) or 'no other key'}."
            )
    if kind == "choice":
        return _choice(path, entry[name], base, key)
    return _range(path, name, entry, base, key)


def _expected_entry(key: str, entry: Any) -> str:
    return errors.expected(
        key,
        "a mapping with one of " + ", ".join(repr(k) for k in KINDS),
        entry,
        "E.g. {loguniform: [1.0e-4, 1.0e-1]} or {choice: [64, 128]}.",
    )


def _choice(path: str, values: Any, base: Mapping[str, Any], key: str) -> Param:
    if not isinstance(values, list) or not values:
        raise ConfigError(
            errors.expected(f"{key}.choice", "a non-empty list of values", values)
        )
    choices = tuple(
        _candidate(base, path, value, f"{key}.choice[{i}]")
        for i, value in enumerate(values)
    )
    param = Param(path, "choice", choices=choices)
    seen = param.optuna_choices()
    for i, value in enumerate(seen):
        if json.dumps(value) in (json.dumps(v) for v in seen[:i]):
            raise ConfigError(
                errors.expected(
                    f"{key}.choice[{i}]", "a value not given before", values[i]
                )
            )
    return param


def _bound(value: Any, kind: str, key: str) -> Any:
    """One end of a range: an int (``int``) or a number (a float)."""
    tp = int if kind == "int" else float
    try:
        return schema._convert(value, tp, key)
    except schema._Mismatch as mismatch:
        raise ConfigError(f"{mismatch.path}: {mismatch}") from None


def _range(
    path: str, name: str, entry: Mapping[str, Any], base: Mapping[str, Any], key: str
) -> Param:
    kind, bounds = KINDS[name][0], entry[name]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise ConfigError(
            errors.expected(f"{key}.{name}", "a list [low, high]", bounds)
        )
    low = _bound(bounds[0], kind, f"{key}.{name}[0]")
    high = _bound(bounds[1], kind, f"{key}.{name}[1]")
    if not low < high:
        raise ConfigError(
            errors.expected(f"{key}.{name}", "[low, high] with low < high", bounds)
        )
    log = name == "loguniform" or bool(entry.get("log", False))
    step = _step(entry, kind, low, high, log, f"{key}.step")
    if log and (low < 1 if kind == "int" else low <= 0):
        least = "low >= 1" if kind == "int" else "low > 0"
        raise ConfigError(
            errors.expected(f"{key}.{name}[0]", f"{least} (a log scale)", bounds[0])
        )
    checked = [
        _candidate(base, path, value, f"{key}.{name}[{i}]")
        for i, value in enumerate((low, high))
    ]
    as_float = kind == "int" and isinstance(checked[0], float)
    return Param(path, kind, low, high, log, step, as_float=as_float)  # type: ignore[arg-type]


def _step(
    entry: Mapping[str, Any], kind: str, low: Any, high: Any, log: bool, key: str
) -> Any:
    """The entry's ``step`` (``None`` without one), checked as Optuna needs it."""
    if "log" in entry and not isinstance(entry["log"], bool):
        raise ConfigError(
            errors.expected(key.removesuffix("step") + "log", "true or false", entry)
        )
    if "step" not in entry:
        return None
    step = _bound(entry["step"], kind, key)
    if step <= 0:
        raise ConfigError(errors.expected(key, "a step > 0", entry["step"]))
    if log:
        raise ConfigError(
            errors.expected(key, "no step with log: true (Optuna's rule)", step)
        )
    count = (high - low) / step
    if abs(count - round(count)) > 1e-9 * max(1.0, abs(count)):
        raise ConfigError(
            errors.expected(
                key, f"a step that divides high - low ({high - low:g})", step
            )
        )
    return step


def _candidate(base: Mapping[str, Any], path: str, value: Any, key: str) -> Any:
    """``value`` once the config with it at ``path`` passed the schema and the
    runner's checks (as they converted it).

    Raises:
      ConfigError: naming ``key``, the candidate and the check's own message.
    """
    try:
        raw = trial_config(base, {path: value})
        config = checks.check(schema.parse(raw))
    except ConfigError as error:
        raise ConfigError(
            f"{key}: expected a value that {path} takes, got "
            f"{errors.describe(value)}: {error}"
        ) from None
    node: Any = schema.to_dict(config)
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return value
        node = node[part]
    return node
