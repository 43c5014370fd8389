"""YAML loading that remembers the line of every key, so errors can point at file and line.

Every file qmtl-lock reads (seamless.yaml, seamless.lock, preset catalogs) may come from a pull
request, so the loader is defensive as well as safe. It composes the node tree itself from the
parser's events (libyaml's when available), which lets it refuse, at the offending line and before
anything is built:

- any YAML tag (``!Ref``, ``!!python/object``): our files are plain YAML;
- aliases that would expand to more than :data:`MAX_ALIASED_NODES` values (a "billion laughs"
  file is a few hundred bytes and would otherwise exhaust memory in every reader), aliases of
  undefined anchors and aliases inside their own anchor (a cycle);
- nesting deeper than :data:`MAX_DEPTH`, keys that are lists or mappings, duplicate keys (a merge
  key ``<<: *base`` followed by an override is not a duplicate), more than one document;
- git conflict markers and characters YAML does not allow.

:func:`read_yaml_text` reads a file as UTF-8 and turns every way that can fail (a directory, a
UTF-16 file, bytes that are not UTF-8) into a :class:`YAMLFileError` as well.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import yaml
from qmtl_engine.errors import YAMLFileError
from yaml import events

Path_ = tuple[str | int, ...]
# A string: yaml.CSafeLoader exists only when PyYAML was built with libyaml.
LoaderClass: TypeAlias = "type[yaml.SafeLoader] | type[yaml.CSafeLoader]"
# libyaml when available: ~10x faster. Both loaders give the same events, so the same checks.
FAST_LOADER: LoaderClass = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
PURE_LOADER: LoaderClass = yaml.SafeLoader

MAX_DEPTH = 64  # our deepest legitimate nesting is about 8 (catalog -> preset -> options -> ...)
MAX_ALIASED_NODES = 10_000  # values that aliases may add, counted as if written out

_MERGE_TAG = "tag:yaml.org,2002:merge"
_CONFLICT = re.compile(r"^(<{7}|>{7}|\|{7})(?: |$)|^={7}$", re.MULTILINE)
# What YAML 1.1 allows in a stream (PyYAML's Reader.NON_PRINTABLE), checked here for both loaders
# because libyaml reports it with a byte offset and crashes on lone surrogates.
_NOT_ALLOWED = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


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


# -- reading files -----------------------------------------------------------------------------
def read_yaml_text(path: str | Path) -> str:
    """The text of the YAML file ``path``, decoded as UTF-8 (a leading byte-order mark is fine).

    Raises :class:`FileNotFoundError` unchanged (callers know what a missing file means for
    them) and :class:`YAMLFileError` for a directory, an unreadable file, NUL bytes (UTF-16 or
    binary) or bytes that are not UTF-8, with the line where that is meaningful.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise YAMLFileError(f"{p} is a directory, not a file", path=str(p),
                            fix="point at the YAML file itself, or move the directory away"
                            ) from None
    except OSError as exc:
        raise YAMLFileError(f"{p} cannot be read: {exc.strerror or exc}", path=str(p),
                            fix="check the file's permissions and that it is a regular file"
                            ) from None
    return _decode(raw, str(p))


def _decode(raw: bytes, path: str) -> str:
    wide = _wide_encoding(raw)
    if wide or b"\x00" in raw:
        first = raw.find(b"\x00")
        line = None if wide or first < 0 else raw.count(b"\n", 0, first) + 1
        kind = f"is {wide} encoded" if wide else (
            "is UTF-16 encoded" if _looks_utf16(raw) else "contains NUL bytes")
        raise YAMLFileError(
            f"{path} {kind}; qmtl-lock reads YAML files as UTF-8", path=path, line=line,
            fix=f"save the file as UTF-8 (for example `iconv -f {wide or 'UTF-16'} -t UTF-8`)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise YAMLFileError(
            f"{path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded",
            path=path, line=line,
            fix="save the file as UTF-8 (for example `iconv -f latin1 -t UTF-8`)") from None


def _wide_encoding(raw: bytes) -> str | None:
    """The encoding a byte-order mark announces, if it is not UTF-8."""
    if raw.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "UTF-32"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    return None


def _looks_utf16(raw: bytes) -> bool:
    """Text in UTF-16 without a byte-order mark has a NUL in every other byte."""
    sample = raw[:200]
    return sample.count(b"\x00") * 3 >= len(sample)


# -- composing ---------------------------------------------------------------------------------
class _Frame:
    """A collection being composed: its node, its key path and (for a mapping) its keys."""

    __slots__ = ("anchor", "key", "keys", "node", "path", "size")

    def __init__(self, node: yaml.Node, path: Path_, anchor: str | None) -> None:
        self.node = node
        self.path = path
        self.anchor = anchor
        self.key: yaml.ScalarNode | None = None  # a mapping's key waiting for its value
        self.keys: set[str] = set()
        self.size = 1  # values in this collection, counting what aliases in it expand to


class _Composer:
    """Builds the node tree from parser events and records the line of every key path."""

    def __init__(self, loader: Any, path: str) -> None:  # a SafeLoader or a CSafeLoader
        self.loader = loader
        self.path = path
        self.lines: dict[Path_, int] = {}
        self.stack: list[_Frame] = []
        self.root: yaml.Node | None = None
        self.anchors: dict[str, tuple[yaml.Node, int] | None] = {}  # None: still open
        self.aliased = 0

    def fail(self, what: str, mark: Any, fix: str) -> YAMLFileError:
        return YAMLFileError(what, path=self.path, line=mark.line + 1 if mark else None, fix=fix)

    def compose(self) -> yaml.Node | None:
        documents = 0
        while True:
            event = self.loader.get_event()
            kind = type(event)
            if kind is events.StreamEndEvent:
                return self.root
            if kind is events.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise self.fail("the file holds more than one YAML document", event.start_mark,
                                    "remove the second `---` and what follows it")
            elif kind is events.AliasEvent:
                self.alias(event)
            elif kind is events.ScalarEvent:
                self.check_tag(event)
                node = yaml.ScalarNode(
                    self.loader.resolve(yaml.ScalarNode, event.value, event.implicit),
                    event.value, event.start_mark, event.end_mark, event.style)
                if event.anchor is not None:
                    self.anchors[event.anchor] = (node, 1)
                self.add(node, 1, event.start_mark)
            elif kind in (events.SequenceStartEvent, events.MappingStartEvent):
                self.start(event)
            elif kind in (events.SequenceEndEvent, events.MappingEndEvent):
                frame = self.stack.pop()
                frame.node.end_mark = event.end_mark
                if frame.anchor is not None:
                    self.anchors[frame.anchor] = (frame.node, frame.size)
                self.add(frame.node, frame.size, None)

    def check_tag(self, event: Any) -> None:
        if event.tag is not None:
            tag = event.tag.replace("tag:yaml.org,2002:", "!!")
            raise self.fail(f"the YAML tag {tag!r} is not accepted: qmtl-lock reads plain YAML",
                            event.start_mark,
                            f"remove `{tag}` and write the value as plain text, a number, a "
                            "list or a mapping")

    def start(self, event: Any) -> None:
        self.check_tag(event)
        if len(self.stack) >= MAX_DEPTH:
            raise self.fail(f"the YAML nests deeper than {MAX_DEPTH} levels", event.start_mark,
                            "flatten the structure; no qmtl-lock file needs that depth")
        cls = yaml.SequenceNode if type(event) is events.SequenceStartEvent else yaml.MappingNode
        node = cls(self.loader.resolve(cls, None, event.implicit), [], event.start_mark, None,
                   event.flow_style)
        path = self.place(event.start_mark)
        if path is None:
            raise self.fail("a key must be plain text, not a list or mapping", event.start_mark,
                            "write the key as a plain string")
        if event.anchor is not None:
            self.anchors[event.anchor] = None
        self.stack.append(_Frame(node, path, event.anchor))

    def alias(self, event: Any) -> None:
        name = event.anchor
        if name not in self.anchors:
            raise self.fail(f"the alias *{name} names no anchor", event.start_mark,
                            f"define `&{name}` before using `*{name}`, or write the value out")
        found = self.anchors[name]
        if found is None:
            raise self.fail(f"the alias *{name} is inside the block it refers to",
                            event.start_mark, f"remove `*{name}` from inside `&{name}`")
        node, size = found
        self.aliased += size
        if self.aliased > MAX_ALIASED_NODES:
            raise self.fail(
                f"aliases would expand to more than {MAX_ALIASED_NODES:,} values (at *{name})",
                event.start_mark,
                "write the values out instead of nesting aliases; qmtl-lock refuses alias "
                "expansion this large so that a small file cannot exhaust memory")
        self.add(node, size, event.start_mark)

    def place(self, mark: Any) -> Path_ | None:
        """Key path of a collection starting at ``mark`` (None: it would be a mapping's key)."""
        if not self.stack:
            self.lines[()] = mark.line + 1
            return ()
        top = self.stack[-1]
        if isinstance(top.node, yaml.SequenceNode):
            path = (*top.path, len(top.node.value))
            self.lines[path] = mark.line + 1
            return path
        return None if top.key is None else (*top.path, top.key.value)

    def add(self, node: yaml.Node, size: int, mark: Any) -> None:
        """Attach a finished node to its parent. ``mark`` is where a scalar or an alias stands;
        None for a collection, whose line :meth:`place` recorded when it started."""
        if not self.stack:
            if mark is not None:
                self.lines[()] = mark.line + 1
            self.root = node
            return
        top = self.stack[-1]
        if isinstance(top.node, yaml.SequenceNode):
            if mark is not None:
                self.lines[(*top.path, len(top.node.value))] = mark.line + 1
            top.node.value.append(node)
        elif top.key is None:
            self.key(node, mark or node.start_mark)
            return
        else:
            top.node.value.append((top.key, node))
            top.key = None
        top.size += size

    def key(self, node: yaml.Node, mark: Any) -> None:
        top = self.stack[-1]
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail("a key must be plain text, not a list or mapping", mark,
                            "write the key as a plain string")
        if node.tag != _MERGE_TAG:  # `<<: *base` then an override is YAML's merge, not a dupe
            if node.value in top.keys:
                raise YAMLFileError(
                    f"duplicate key {node.value!r}", path=self.path, line=mark.line + 1,
                    key=".".join(str(p) for p in (*top.path, node.value)),
                    fix="remove one of the two entries; YAML would silently keep only the last")
            top.keys.add(node.value)
            self.lines[(*top.path, node.value)] = mark.line + 1
        top.key = node
        top.size += 1


def _bad_scalar(node: yaml.Node | None) -> tuple[int | None, str | None]:
    """Line and text of the first scalar the safe loader cannot construct."""
    if node is None:
        return None, None
    stack = [node]
    seen: set[int] = set()
    constructor = yaml.SafeLoader("")
    while stack:
        current = stack.pop(0)
        if id(current) in seen:  # aliases share nodes
            continue
        seen.add(id(current))
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


def conflict_marker_line(text: str) -> int | None:
    """Line of the first git conflict marker (``<<<<<<<``, ``=======``, ``>>>>>>>``), if any."""
    m = _CONFLICT.search(text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _check_text(text: str, path: str, conflict_fix: str | None) -> None:
    line = conflict_marker_line(text)
    if line is not None:
        name = Path(path).name
        raise YAMLFileError(
            f"{name} has unresolved git conflict markers", path=path, line=line,
            fix=conflict_fix or f"resolve the git conflict in {name}: keep the lines you want "
            "and delete the <<<<<<<, ======= and >>>>>>> lines")
    bad = _NOT_ALLOWED.search(text)
    if bad:
        raise YAMLFileError(
            f"{path} is not valid YAML: the character U+{ord(bad.group()):04X} is not allowed",
            path=path, line=text.count("\n", 0, bad.start()) + 1,
            fix="remove the control character (editors often show it as a box or ^@)")


def load_yaml(text: str, path: str, *, conflict_fix: str | None = None,
              loader: LoaderClass | None = None) -> LocatedYAML:
    """Parse ``text`` (read from ``path``) with the safe loader, keeping key lines.

    ``conflict_fix`` is what to do when the text holds git conflict markers; ``loader`` forces
    libyaml (:data:`FAST_LOADER`) or the pure-Python parser (:data:`PURE_LOADER`). Every problem
    is a :class:`YAMLFileError` with the line.
    """
    _check_text(text, path, conflict_fix)
    cls = loader or FAST_LOADER
    node: yaml.Node | None = None
    try:
        parser = cls(text)
        try:
            composer = _Composer(parser, path)
            node = composer.compose()
            data = parser.construct_document(node) if node is not None else None
        finally:
            parser.dispose()
    except YAMLFileError:
        raise  # our own refusals, already located (and a ValueError, like the next branch)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, text, path, cls) from None
    except yaml.YAMLError as exc:
        raise YAMLFileError(f"{path} is not valid YAML: {exc}", path=path) from None
    except ValueError as exc:  # e.g. an impossible date such as 2024-02-30
        line, value = _bad_scalar(node)
        raise YAMLFileError(
            f"{path} has an invalid value{f' {value!r}' if value else ''}: {exc}",
            path=path, line=line,
            fix="write dates as YYYY-MM-DD with a real day of the month",
        ) from None
    return LocatedYAML(data=data, path=path, lines=composer.lines)


def _syntax_error(exc: yaml.MarkedYAMLError, text: str, path: str,
                  cls: LoaderClass) -> YAMLFileError:
    if cls is not PURE_LOADER:  # libyaml's wording is terser: ask the Python parser
        try:
            for _ in yaml.parse(text, Loader=PURE_LOADER):  # events only: no recursion
                pass
        except yaml.MarkedYAMLError as detailed:
            exc = detailed
    mark = exc.problem_mark or exc.context_mark
    return YAMLFileError(
        f"{path} is not valid YAML: {exc.problem or 'invalid YAML'}", path=path,
        line=mark.line + 1 if mark else None,
        fix="fix the YAML syntax at that line (indentation, a missing colon or quote)")


def pydantic_error(exc: Any, doc: LocatedYAML, *, what: str, fix: str,
                   prefix: Sequence[str | int] = ()) -> YAMLFileError:
    """Turn the first error of a pydantic ``ValidationError`` into a located YAML error.

    ``prefix`` is where the validated value sits in ``doc`` (for a model validated on a part).
    """
    err = exc.errors()[0]
    loc = [*prefix, *(p for p in err["loc"]  # not pydantic's own markers: only our keys
                      if not (isinstance(p, str) and (p.startswith("function-") or p == "[key]")))]
    key = ".".join(str(p) for p in loc)
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = f"unknown key {loc[-1]!r}"
    elif err["type"] == "missing":
        msg = f"missing required key {loc[-1]!r}"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return YAMLFileError(f"{what}: {msg}{suffix}", path=doc.path, line=doc.line_of(loc),
                         key=key or None, fix=fix)
