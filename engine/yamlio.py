"""YAML loading that remembers the line of every key, so errors can point at file and line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from qmtl_engine.errors import YAMLFileError

Path_ = tuple[str | int, ...]
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster


@dataclass
class LocatedYAML:
    """Parsed YAML data plus the 1-based line of each key path."""

    data: Any
    path: str
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """Line of the deepest known prefix of ``loc``."""
        key = tuple(loc)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), None)


def _walk(node: yaml.Node, prefix: Path_, lines: dict[Path_, int], path: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise YAMLFileError(
                    f"duplicate key {key!r}", path=path, line=key_node.start_mark.line + 1,
                    key=".".join(str(p) for p in (*prefix, key)),
                    fix="remove one of the two entries; YAML would silently keep only the last",
                )
            seen.add(key)
            lines[(*prefix, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*prefix, key), lines, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*prefix, i)] = item.start_mark.line + 1
            _walk(item, (*prefix, i), lines, path)


def _bad_scalar(node: yaml.Node | None) -> tuple[int | None, str | None]:
    """Line and text of the first scalar the safe loader cannot construct."""
    if node is None:
        return None, None
    stack = [node]
    constructor = yaml.SafeLoader("")
    while stack:
        current = stack.pop(0)
        if isinstance(current, yaml.ScalarNode):
            try:
                constructor.construct_object(current, deep=True)
            except ValueError:
                return current.start_mark.line + 1, str(current.value)
        elif isinstance(current, yaml.MappingNode):
            for k, v in current.value:
                stack.extend([k, v])
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return None, None


def load_yaml(text: str, path: str) -> LocatedYAML:
    """Parse ``text`` (read from ``path``) with the safe loader, keeping key lines."""
    node: yaml.Node | None = None
    try:
        loader = _Loader(text)  # one parse gives both the node tree and the data
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError:
        if _Loader is not yaml.SafeLoader:  # libyaml's wording is terser: ask the Python parser
            try:
                yaml.compose(text, Loader=yaml.SafeLoader)
            except yaml.MarkedYAMLError as detailed:
                exc = detailed
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or "invalid YAML"
        raise YAMLFileError(
            f"{path} is not valid YAML: {problem}", path=path, line=line,
            fix="fix the YAML syntax at that line (indentation, a missing colon or quote)",
        ) from None
    except yaml.YAMLError as exc:
        raise YAMLFileError(f"{path} is not valid YAML: {exc}", path=path) from None
    except ValueError as exc:  # e.g. an impossible date such as 2024-02-30
        line, value = _bad_scalar(node)
        raise YAMLFileError(
            f"{path} has an invalid value{f' {value!r}' if value else ''}: {exc}",
            path=path, line=line,
            fix="write dates as YYYY-MM-DD with a real day of the month",
        ) from None
    lines: dict[Path_, int] = {}
    if node is not None:
        lines[()] = node.start_mark.line + 1
        _walk(node, (), lines, path)
    return LocatedYAML(data=data, path=path, lines=lines)


def pydantic_error(exc: Any, doc: LocatedYAML, *, what: str, fix: str) -> YAMLFileError:
    """Turn the first error of a pydantic ``ValidationError`` into a located YAML error."""
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    key = ".".join(str(p) for p in loc)
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = f"unknown key {loc[-1]!r}"
    elif err["type"] == "missing":
        msg = f"missing required key {loc[-1]!r}"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return YAMLFileError(f"{what}: {msg}{suffix}", path=doc.path, line=doc.line_of(loc),
                         key=key or None, fix=fix)
