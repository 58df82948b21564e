"""YAML documents that remember the line of every key, and problems that name file, line and key.

The schema-free half of ``config``: it knows YAML, key paths and type checks, nothing about
clusters. A ``YamlDoc`` either raises at the first problem or collects every problem (what
``config`` does, to list them all or to raise the one that comes first in the file); the schema
code calls ``doc.problem()`` and carries on with a default either way.

Imports only the standard library and PyYAML.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

import yaml

Where = tuple[str | int, ...]

_SCALARS = yaml.SafeLoader("")  # only its scalar constructors are used
# Aliases are expanded into plain values: a few nested ones ("billion laughs") would otherwise
# expand into more values than memory holds. A real cluster file has thousands.
MAX_VALUES = 1_000_000
_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "list": "a list",
    "bool": "true or false",
    "NoneType": "null",
}


class ConfigError(Exception):
    """A problem in a configuration file; ``str()`` is one line naming file, line and key.

    Example::

        try:
            config = ugro_health.load_config("cluster.yaml")
        except ugro_health.ConfigError as exc:
            sys.exit(f"bad configuration: {exc}")
    """

    def __init__(
        self, message: str, path: str | None = None, line: int | None = None, key: str | None = None
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.key = key
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = self.path or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


class YamlDoc:
    """A YAML document as plain values plus the line of every key path, for error messages.

    With ``collect=False`` the first ``problem()`` raises; with ``collect=True`` every distinct
    problem is kept in ``problems`` and the caller continues with a fallback value.
    """

    def __init__(self, path: str, collect: bool = False) -> None:
        self.path = path
        self.collect = collect
        self.lines: dict[Where, int] = {}
        self.problems: list[ConfigError] = []
        self._seen: set[tuple[int | None, str | None, str]] = set()
        self._open: set[int] = set()  # the collections being converted: an alias cycle test
        self._values = 0

    def error(self, where: Where, message: str, line: int | None = None) -> ConfigError:
        probe = where
        while probe and line is None:
            line = self.lines.get(probe)
            probe = probe[:-1]
        key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in where).replace(".[", "[")
        return ConfigError(message, self.path, line, key or None)

    def problem(self, where: Where, message: str, line: int | None = None) -> None:
        """Raise the problem, or record it once (a bad default is met by every node)."""
        error = self.error(where, message, line)
        if not self.collect:
            raise error
        fingerprint = (error.line, error.key, error.message)
        if fingerprint not in self._seen:
            self._seen.add(fingerprint)
            self.problems.append(error)

    def convert(self, node: yaml.Node, where: Where) -> Any:
        """Plain values from a composed node; an alias cycle or an alias bomb raises."""
        self.lines.setdefault(where, node.start_mark.line + 1)
        self._values += 1
        if self._values > MAX_VALUES:
            raise self.error(where, f"more than {MAX_VALUES:,} values once aliases are expanded")
        if not isinstance(node, yaml.CollectionNode):
            return _SCALARS.construct_object(node)
        if id(node) in self._open:  # an alias resolves to the very node it is inside of
            raise self.error(where, "an anchor (&name) is used inside itself (*name)")
        self._open.add(id(node))
        try:
            return self._convert_collection(node, where)
        finally:
            self._open.discard(id(node))

    def _convert_collection(self, node: yaml.CollectionNode, where: Where) -> Any:
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problem(where, "keys must be plain names", line)
                    continue
                key = key_node.value
                if key in out:
                    self.problem((*where, key), "duplicate key", line)
                    continue
                self.lines[(*where, key)] = line
                out[key] = self.convert(value_node, (*where, key))
            return out
        return [self.convert(item, (*where, i)) for i, item in enumerate(node.value)]


def parse_yaml(text: str, doc: YamlDoc) -> dict[str, Any]:
    """The document's top-level mapping. Invalid YAML, an empty file or a top level that is not a
    mapping raises ``ConfigError`` even when collecting: nothing below can be checked then."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = None if root is None else doc.convert(root, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {exc.problem or exc}", doc.path, line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", doc.path) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", doc.path) from None
    if root is None:
        raise ConfigError("the file is empty; it needs at least a `nodes:` list", doc.path, 1)
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping with a `nodes:` list", doc.path, 1)
    return data


def check_keys(
    doc: YamlDoc,
    data: Mapping[str, Any],
    allowed: Mapping[str, tuple[type, ...]] | tuple[str, ...],
    where: Where,
) -> dict[str, Any]:
    """The entries of ``data`` with a known key (and, given types, a value of an allowed type);
    each other entry is a problem, an unknown key with the nearest valid one as a hint."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            doc.problem((*where, key), f"unknown key{hint}")
        elif isinstance(allowed, Mapping) and not check_type(
            doc, value, allowed[key], (*where, key)
        ):
            continue
        else:
            out[key] = value
    return out


def check_type(doc: YamlDoc, value: Any, types: tuple[type, ...], where: Where) -> bool:
    """Whether ``value`` is one of ``types`` (a YAML true/false is not an integer); if not, a
    problem."""
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
        if isinstance(value, float) and not math.isfinite(value):  # YAML's .inf and .nan
            doc.problem(where, f"must be a finite number, not {value}")
            return False
        return True
    wanted = " or ".join(
        _TYPE_NAMES[t.__name__] for t in types if not (t is int and float in types)
    )
    doc.problem(where, f"must be {wanted}, not {describe(value)}")
    return False


def describe(value: Any) -> str:
    """A value as a person would name it in an error message."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def str_list_problem(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return None
    return f"must be a list of strings, not {describe(value)}"


def section(doc: YamlDoc, data: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``data[name]`` as a mapping: absent or empty is ``{}``, anything else is a problem."""
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        doc.problem((name,), f"must be a mapping, not {describe(value)}")
        return {}
    return value
