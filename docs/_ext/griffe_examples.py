"""A griffe extension for the API reference: jaxfit's docstrings title their doctest
section ``Example:`` (STYLE rule 9), which griffe's Google parser reads as an
admonition, rendering ``>>>`` lines as nested quotes; this retitles it
``Examples:``, which griffe renders as code."""

import re

import griffe

_TITLE = re.compile(r"^(\s*)Example:\s*$", re.M)


class ExampleSections(griffe.Extension):
    """Retitles ``Example:`` docstring sections ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _TITLE.sub(r"\1Examples:", obj.docstring.value)
