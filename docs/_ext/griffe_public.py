"""A griffe extension for the API reference: what griffe reads from the source alone
misses two things a reader of jaxfit's public classes needs.

- A method that overrides a documented one (a callback's ``on_epoch_end``) and has
  no docstring of its own, or an attribute described only in its class's
  ``Attributes:`` section, has no docstring to griffe and would not be listed; this
  gives it the docstring Python's ``help`` shows (``inspect.getdoc``), or its
  ``Attributes:`` entry.
- Properties built by a factory (``optimizer = _compiled("optimizer", ...)``) are,
  to a static reader, attributes without a docstring, so they would not be listed;
  this gives them the runtime property's docstring and its labels (``property``,
  ``writable``), and drops the factory call, a private name, as their value.
- A default that is a private sentinel (``compile(optimizer=_UNCHANGED)``) is shown
  as ``...``: the docstring says what leaving the argument out means.
- A class's bases are rendered as ``Bases: ...``; a base that is an implementation
  detail (living in ``jaxfit._src`` and exported by no public module, or named with a
  leading underscore) is noise there. This records, in ``extra["jaxfit"]
  ["public_bases"]``, the bases to show (the class template in ``templates/``
  renders only those). The bases themselves stay, so inherited members still are
  found through them.
"""

import importlib
import inspect
import pkgutil
from functools import cache
from typing import Any

import griffe


def _runtime(cls: griffe.Class) -> Any:
    """The runtime class of a griffe class, or None when it cannot be imported."""
    try:
        obj: Any = importlib.import_module(cls.module.path)
        for part in cls.path[len(cls.module.path) + 1 :].split("."):
            obj = getattr(obj, part)
    except Exception:  # noqa: BLE001 - a class griffe sees but Python cannot reach
        return None
    return obj if isinstance(obj, type) else None


@cache
def _public_modules(top: str) -> tuple[Any, ...]:
    """The package ``top`` and its submodules whose names do not start with ``_``."""
    package = importlib.import_module(top)
    names = [
        f"{top}.{info.name}"
        for info in pkgutil.iter_modules(getattr(package, "__path__", []))
        if not info.name.startswith("_")
    ]
    return (package, *(importlib.import_module(name) for name in names))


def _is_public(base: type) -> bool:
    """Whether a base class is reachable under a public name."""
    if base.__name__.startswith("_"):
        return False
    module = base.__module__
    if not any(part.startswith("_") for part in module.split(".")):
        return True
    try:
        modules = _public_modules(module.split(".")[0])
    except Exception:  # noqa: BLE001 - an external package's odd layout
        return False
    return any(getattr(m, base.__name__, None) is base for m in modules)


def _private(default: Any) -> bool:
    """Whether a default value's expression names something private."""
    names = default.iterate(flat=True) if isinstance(default, griffe.Expr) else ()
    return any(
        isinstance(name, griffe.ExprName) and name.name.startswith("_")
        for name in names
    )


def _documented_attributes(runtime: type) -> dict[str, str]:
    """The ``Attributes:`` sections of a class's and its bases' docstrings, name ->
    description (the nearest class's entry first, as attribute lookup goes)."""
    described: dict[str, str] = {}
    for klass in reversed(runtime.__mro__):
        text = klass.__dict__.get("__doc__")
        if not isinstance(text, str) or "Attributes:" not in text:
            continue
        # mkdocs.yml's docstring_options, so this parse warns about nothing the
        # build's own parse would not
        sections = griffe.Docstring(inspect.cleandoc(text)).parse(
            "google", warn_unknown_params=False, warn_missing_types=False
        )
        for section in sections:
            if section.kind is griffe.DocstringSectionKind.attributes:
                described |= {item.name: item.description for item in section.value}
    return described


def _describe(member: griffe.Object, runtime: type, attributes: dict) -> None:
    """Gives an undocumented member the docstring Python would show for it: an
    override's from the method it overrides, a factory-made property's own, an
    attribute's from the class's ``Attributes:`` section."""
    name = member.name
    value = runtime.__dict__.get(name)
    if isinstance(value, (property, classmethod, staticmethod)) or callable(value):
        doc = inspect.getdoc(getattr(runtime, name))
    else:
        doc = attributes.get(name)
    if not doc:
        return
    member.docstring = griffe.Docstring(doc, parent=member)
    if member.is_attribute and isinstance(value, property):
        member.labels = {"property"} | ({"writable"} if value.fset else set())
        member.value = None  # the factory call, a private name


class PublicSurface(griffe.Extension):
    """Documents what Python documents (overrides, factory-made properties,
    attributes described by their class), hides private defaults, marks which
    bases are public."""

    def on_function_instance(self, *, func: griffe.Function, **kwargs: Any) -> None:
        for parameter in func.parameters:
            if _private(parameter.default):
                parameter.default = "..."

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        runtime = _runtime(cls)
        if runtime is None:
            return
        attributes = _documented_attributes(runtime)
        for member in cls.members.values():
            if not member.is_alias and member.docstring is None:
                _describe(member, runtime, attributes)
        bases = runtime.__bases__
        if len(bases) == len(cls.bases):
            shown = [e for e, b in zip(cls.bases, bases) if _is_public(b)]
        else:  # griffe and Python disagree: show what the source says
            shown = list(cls.bases)
        cls.extra["jaxfit"]["public_bases"] = shown
