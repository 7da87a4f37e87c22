"""The one reader of config text: YAML, bounded, with the line of every key.

All config text (a file, a run directory's ``config.yaml`` for ``jaxfit show``,
a ``--set`` value) goes through ``load_yaml_text`` (``read`` for a file), which
bounds what a few bytes can make the runner do. Each of these is a one-line
``ConfigError`` naming the file (or ``--set``) and the line:

- a file that is not a regular file (a directory, a FIFO, a device), larger
  than ``MAX_BYTES`` (1 MiB), or not UTF-8 (the byte, its offset and line);
- YAML that is not valid (PyYAML's problem, with its line and column);
- more than ``MAX_ALIASES`` (100) alias uses (``*name``), more than
  ``MAX_VALUES`` (100,000) values once aliases are expanded (the "billion
  laughs" alias bomb), lists and mappings nested more than ``MAX_DEPTH`` (64)
  deep, aliases expanded;
- a recursive alias (``&a [*a]``: a config is a tree);
- a duplicate key in one mapping (PyYAML would keep the last value silently),
  naming the key path and both lines (a merge ``<<: *base`` may still be
  overridden);
- a value PyYAML cannot make (``2024-13-45`` as a date), with its line.

PyYAML is imported lazily (``_yaml``); ``config`` applies ``--set`` overrides and
the schema on top of what this module reads.
"""

from __future__ import annotations

import functools
import os
import stat
from typing import Any

from jaxfit._src.runner.schema import ConfigError

MSG_NO_YAML = "YAML configs need PyYAML: pip install pyyaml (part of jaxfit's install)."


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as error:
        raise ImportError(MSG_NO_YAML) from error
    return yaml


# The bounds of config text (see the module docstring).
MAX_BYTES = 1 << 20  # a config file's size: 1 MiB
MAX_ALIASES = 100  # alias uses (*name) in one document
MAX_VALUES = 100_000  # scalars, lists and mappings once aliases are expanded
MAX_DEPTH = 64  # lists and mappings nested in each other, aliases expanded


class _Refused(Exception):
    """What the bounded loader refuses: a message, and the line it is about."""

    def __init__(self, message: str, mark: Any):
        super().__init__(message)
        self.line = None if mark is None else mark.line + 1


def _children(node: Any) -> list[Any]:
    value = node.value
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return [part for pair in value for part in pair]  # a mapping's pairs
    return value if isinstance(value, list) else []


# The loader's base for the type checker: ``yaml.SafeLoader``, mixed in at run
# time by ``_loader_class`` (PyYAML is imported lazily).
_LoaderBase: Any = object


class _Bounds(_LoaderBase):
    """The bounds of ``_loader_class``'s loader, mixed into ``yaml.SafeLoader``.

    Aliases are counted as they are composed, each use adding the values it
    expands to, so an alias bomb is refused after a few hundred events, never
    expanded; the nodes themselves stay shared, as PyYAML composes them."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.aliases = 0
        self.values = 0
        self.depth = 0
        self.open_anchors: list[str | None] = []
        self.sizes: dict[Any, int] = {}  # node: values with aliases expanded
        self.heights: dict[Any, int] = {}  # node: nesting levels it holds
        self.key_path: list[str] = []

    def where(self) -> str:
        path = "".join(self.key_path).lstrip(".") or "config"
        return path if len(path) <= 60 else path[:57] + "..."

    def count(self, values: int, mark: Any) -> None:
        self.values += values
        if self.values > MAX_VALUES:
            raise _Refused(
                f"{self.where()}: expected a config of at most {MAX_VALUES:,} "
                "values with its aliases expanded, got more (an alias bomb?); "
                "write the values out",
                mark,
            )

    def deeper(self, levels: int, mark: Any) -> None:
        if self.depth + levels > MAX_DEPTH:
            raise _Refused(
                f"{self.where()}: expected lists and mappings nested at most "
                f"{MAX_DEPTH} deep (aliases expanded), got deeper",
                mark,
            )

    def alias(self, event: Any) -> None:
        target = self.anchors.get(event.anchor)
        if target is None:
            return  # PyYAML's own "found undefined alias"
        self.aliases += 1
        if self.aliases > MAX_ALIASES:
            raise _Refused(
                f"{self.where()}: expected at most {MAX_ALIASES} alias uses "
                "(*name) in a config, got more; write the values out",
                event.start_mark,
            )
        if event.anchor in self.open_anchors:
            raise _Refused(
                f"{self.where()}: the alias *{event.anchor} is inside the "
                "value it names (a recursive alias); a config is a tree",
                event.start_mark,
            )
        self.count(self.sizes[target], event.start_mark)
        self.deeper(self.heights[target], event.start_mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        yaml = _yaml()
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self.alias(event)
            return super().compose_node(parent, index)
        start = self.values
        self.count(1, event.start_mark)
        nested = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        if nested:
            self.deeper(1, event.start_mark)
            self.depth += 1
            self.open_anchors.append(event.anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            if nested:
                self.depth -= 1
                self.open_anchors.pop()
        self.sizes[node] = self.values - start
        below = [self.heights[child] for child in _children(node)]
        self.heights[node] = 1 + max(below, default=0) if nested else 0
        return node

    def compose_sequence_node(self, anchor: Any) -> Any:
        yaml = _yaml()
        start_event = self.get_event()
        tag = start_event.tag
        if tag is None or tag == "!":
            tag = self.resolve(yaml.SequenceNode, None, start_event.implicit)
        node = yaml.SequenceNode(
            tag, [], start_event.start_mark, None, flow_style=start_event.flow_style
        )
        if anchor is not None:
            self.anchors[anchor] = node
        index = 0
        while not self.check_event(yaml.SequenceEndEvent):
            self.key_path.append(f"[{index}]")
            node.value.append(self.compose_node(node, index))
            self.key_path.pop()
            index += 1
        node.end_mark = self.get_event().end_mark
        return node

    def compose_mapping_node(self, anchor: Any) -> Any:
        yaml = _yaml()
        start_event = self.get_event()
        tag = start_event.tag
        if tag is None or tag == "!":
            tag = self.resolve(yaml.MappingNode, None, start_event.implicit)
        node = yaml.MappingNode(
            tag, [], start_event.start_mark, None, flow_style=start_event.flow_style
        )
        if anchor is not None:
            self.anchors[anchor] = node
        seen: dict[tuple[str, str], int] = {}
        while not self.check_event(yaml.MappingEndEvent):
            key = self.compose_node(node, None)
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
            self.key_path.append(f".{name}")
            if isinstance(key, yaml.ScalarNode):
                ident, line = (key.tag, key.value), key.start_mark.line + 1
                if ident in seen:
                    raise _Refused(
                        f"{self.where()}: duplicate key, first at line "
                        f"{seen[ident]}; a key may appear once in a mapping "
                        "(PyYAML would keep the last value): remove one",
                        key.start_mark,
                    )
                seen[ident] = line
            node.value.append((key, self.compose_node(node, key)))
            self.key_path.pop()
        node.end_mark = self.get_event().end_mark
        return node

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as error:  # a date 2024-13-45
            raise _Refused(
                f"config: cannot read the value {_clip(node.value)}: "
                f"{_first_line(error)}",
                node.start_mark,
            ) from None


@functools.cache
def _loader_class() -> Any:
    """``yaml.SafeLoader`` with the bounds (``_Bounds``; made once: PyYAML
    imported lazily)."""
    yaml = _yaml()

    class BoundedLoader(_Bounds, yaml.SafeLoader):  # type: ignore[name-defined]
        pass

    return BoundedLoader


def _lines(node: Any, prefix: str, out: dict[str, int]) -> None:
    """``{dotted key path: 1-based line}`` from a composed YAML node tree."""
    yaml = _yaml()
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            out[path] = key.start_mark.line + 1
            _lines(value, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}[{i}]"
            out[path] = item.start_mark.line + 1
            _lines(item, path, out)


def _clip(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _located_at(source: str, line: int | None) -> str:
    """`` (file, line N)`` or `` (from --set ...)``, as ``schema.where`` says it."""
    if source.startswith("--set "):
        return f" (from {source})"
    return f" ({source}, line {line})" if line is not None else f" ({source})"


class _NotYAML(ConfigError):
    """Text that is not valid YAML (a ``--set`` value is then a string)."""

    def __init__(self, message: str):
        super().__init__(message, located=True)


def _syntax(error: Any, text: str, source: str) -> ConfigError:
    """PyYAML's error on one line: its problem, context and where."""
    yaml = _yaml()
    if isinstance(error, yaml.reader.ReaderError):
        position = getattr(error, "position", 0)
        line = text.count("\n", 0, position) + 1
        character = getattr(error, "character", "")
        code = ord(character) if isinstance(character, str) else character
        return _NotYAML(
            f"config: not valid YAML: the character #x{code:04x} is not allowed "
            f"in YAML text{_located_at(source, line)}"
        )
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    words = [
        " ".join(str(part).split())
        for part in (getattr(error, "context", None), getattr(error, "problem", None))
        if part
    ]
    what = ", ".join(words) if words else _first_line(error)
    if mark is None:
        return _NotYAML(f"config: not valid YAML: {what}{_located_at(source, None)}")
    return _NotYAML(
        f"config: not valid YAML: {what}, at column {mark.column + 1}"
        + _located_at(source, mark.line + 1)
    )


def load_yaml_text(text: str, source: str) -> tuple[Any, dict[str, int]]:
    """The YAML document ``text`` (bounded, see the module docstring) and its
    ``{dotted key path: line}``; ``None`` for an empty document.

    Args:
      text: the YAML text.
      source: where it came from, for the messages: a file name, or
        ``"--set key=value"``.

    Raises:
      ConfigError: one line naming ``source`` and the line, for invalid YAML or
        text beyond the bounds (aliases, values, depth, a recursive alias, a
        duplicate key).
    """
    yaml = _yaml()
    loader = None
    try:
        loader = _loader_class()(text)  # PyYAML's reader checks the characters
        node = loader.get_single_node()
        raw = None if node is None else loader.construct_document(node)
    except _Refused as refused:
        raise ConfigError(
            f"{refused}{_located_at(source, refused.line)}", located=True
        ) from None
    except yaml.YAMLError as error:
        raise _syntax(error, text, source) from None
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[str, int] = {}
    if node is not None:
        _lines(node, "", lines)
    return raw, lines


def _read_bytes(path: str) -> bytes:
    """The bytes of the regular file ``path``, at most ``MAX_BYTES`` of them;
    opened without blocking, so a FIFO is refused rather than waited on."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ConfigError(f"config: cannot read {path!r}: {reason}.") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise ConfigError(f"config: expected a YAML file, got {path!r}, {kind}.")
        chunks, size = [], 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        raise ConfigError(
            f"config: cannot read {path!r}: {error.strerror or error}."
        ) from None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise ConfigError(
            f"config: expected a config file of at most {MAX_BYTES:,} bytes, got "
            f"{path!r}, which is larger."
        )
    return b"".join(chunks)


def _decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ConfigError(
            f"config: expected UTF-8 text, got the byte 0x{data[error.start]:02x} "
            f"at offset {error.start} (line {line}, column {column}), which is not "
            f"UTF-8; save the file as UTF-8 ({path}, line {line})",
            located=True,
        ) from None


def read(path: str | os.PathLike[str]) -> tuple[Any, dict[str, int]]:
    """The YAML document at ``path`` (``{}`` when empty) and its key lines.

    The one reader of config files (``jaxfit run``, ``validate`` and ``show``):
    bounded as the module docstring says.

    Raises:
      ConfigError: one line naming the file (and the line), when it cannot be
        read, is not a regular file, is too large, is not UTF-8, or its YAML is
        invalid or beyond the bounds.
    """
    path = os.fspath(path)
    raw, lines = load_yaml_text(_decode(_read_bytes(path), path), path)
    return raw if raw is not None else {}, lines
