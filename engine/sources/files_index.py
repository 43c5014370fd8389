"""What each vendor file holds in time, remembered between runs, so an extension reads only the
files that can hold its new windows (issue 11).

A :class:`Span` sums up rows read in order: how many, the earliest and latest readable time,
the first and last readable time in row order, and how many rows come before the first
readable one (those, and any later unreadable row, take a neighbour's time, exactly as the files
source attributes them). Spans of consecutive runs of rows combine, so one span describes a
block of a file, a whole file or a glob of files.

The index keeps one small JSON per file in the engine's cache folder
(:func:`qmtl_engine.cache.default_cache_dir`)::

    <cache>/files-index/<aa>/<digest>.json

named by a digest of the reader's version, the source options, the symbol and the file's
identity as fsspec ``info`` gives it (path, size, and its mtime, ETag, checksum or generation).
Nothing in it is believed unless it was written for exactly that identity: a file whose identity
changed, an entry of another version, or one that does not parse is ignored and the file read
again. A file whose identity has only a time in it (no ETag or checksum) is indexed only when
that time lies two seconds or more before the read started, so a rewrite within the file
system's time resolution cannot hide behind an unchanged mtime (git's "racy clean" rule). A file
system with neither a time nor a content tag in ``info`` is never indexed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
from qmtl_engine.cache import write_whole

INDEX_VERSION = 1
RACY_SECONDS = 2.0
_TAGS = ("ETag", "etag", "md5Hash", "crc32c", "generation", "VersionId", "version_id",
         "checksum", "sha256", "md5")
_TIMES = ("mtime", "LastModified", "last_modified", "updated", "created", "timeCreated")

_log = logging.getLogger("qmtl_lock.files")


@dataclass(frozen=True)
class Span:
    """Rows read in order, summed up in time (epoch ms; None: no readable time)."""

    rows: int = 0
    lead: int = 0  # rows before the first readable time (all rows when none is readable)
    first: int | None = None  # readable times: the first and last in row order,
    last: int | None = None
    low: int | None = None  # and the earliest and latest
    high: int | None = None

    def then(self, other: Span) -> Span:
        """This span followed by ``other``."""
        if self.first is None:
            return Span(self.rows + other.rows, self.rows + other.lead, other.first, other.last,
                        other.low, other.high)
        if other.first is None:
            return Span(self.rows + other.rows, self.lead, self.first, self.last, self.low,
                        self.high)
        assert self.low is not None and self.high is not None
        assert other.low is not None and other.high is not None
        return Span(self.rows + other.rows, self.lead, self.first, other.last,
                    min(self.low, other.low), max(self.high, other.high))

    def consistent(self) -> bool:
        """Whether its fields can describe rows at all (an index entry must)."""
        times = (self.first, self.last, self.low, self.high)
        if self.first is None:
            return all(t is None for t in times) and self.lead == self.rows
        if any(t is None for t in times):
            return False
        low, high = cast(int, self.low), cast(int, self.high)
        return self.lead < self.rows and low <= min(cast(int, self.first), cast(int, self.last)) \
            and max(cast(int, self.first), cast(int, self.last)) <= high

    def attributed(self, carry: int | None) -> tuple[int, int] | None:
        """The earliest and latest time its rows are attributed to, when rows before its first
        readable time take ``carry``; None when it has no rows."""
        if self.rows == 0:
            return None
        times = [t for t in (self.low, self.high) if t is not None]
        if self.lead and carry is not None:
            times.append(carry)
        return (min(times), max(times)) if times else None


def overlaps(bounds: tuple[int, int] | None, start: int, end: int) -> bool:
    return bounds is not None and bounds[0] < end and bounds[1] >= start


@dataclass(frozen=True)
class FileSummary:
    """What the files source needs of one file without reading it: its span, its columns as
    read, and the first raw times (for the message when no time can be read)."""

    span: Span
    schema: pa.Schema
    sample: tuple[str, ...]


def file_identity(protocol: str, info: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """The identity of a file from fsspec ``info``, and the time it carries when nothing but a
    time would tell a rewrite (None: a content tag does, or nothing does)."""
    key: dict[str, Any] = {"protocol": protocol, "name": str(info.get("name")),
                           "size": info.get("size")}
    tags = {k: str(info[k]) for k in _TAGS if info.get(k) not in (None, "")}
    times: dict[str, float] = {}
    for k in _TIMES:
        seconds = _seconds(info.get(k))
        if seconds is not None:
            times[k] = seconds
    key.update(tags)
    key.update(times)
    if info.get("ino") is not None:
        key["ino"] = info["ino"]
    if key["size"] is None or not (tags or times):
        return {}, None  # nothing would tell that it changed: never indexed
    # A write always moves the mtime (other times, like a local file's ctime, move with it or
    # more often): the mtime is what a rewrite within its resolution could leave unchanged.
    return key, None if tags else times.get("mtime", max(times.values()))


def _seconds(value: object) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


class SpanIndex:
    """The folder of index entries; a folder that cannot be read or written is no index."""

    def __init__(self, root: Path | None, context: object) -> None:
        self.root = root
        self._context = json.dumps(context, sort_keys=True, default=str)
        self._warned = False

    def _path(self, key: dict[str, Any]) -> Path | None:
        if self.root is None or not key:
            return None
        text = json.dumps([INDEX_VERSION, pa.__version__, self._context, key], sort_keys=True,
                          default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.json"

    def get(self, key: dict[str, Any]) -> FileSummary | None:
        """The summary written for exactly this identity, or None (absent or not trusted)."""
        path = self._path(key)
        if path is None:
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc["version"] != INDEX_VERSION or doc["key"] != json.loads(
                    json.dumps(key, default=str)):
                return None
            got = doc["span"]
            rows, lead = _opt_int(got["rows"]), _opt_int(got["lead"])
            if rows is None or lead is None or not 0 <= lead <= rows:
                return None
            span = Span(rows, lead, *(_opt_int(got[f]) for f in ("first", "last", "low", "high")))
            if not span.consistent():
                return None
            schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(doc["schema"])))
            sample = tuple(str(s) for s in doc["sample"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
            _log.warning("files index entry %s ignored: %s", path, exc)
            return None
        return FileSummary(span, schema, sample)

    def put(self, key: dict[str, Any], summary: FileSummary) -> None:
        path = self._path(key)
        if path is None:
            return
        doc = {"version": INDEX_VERSION, "key": key, "span": asdict(summary.span),
               "schema": base64.b64encode(summary.schema.serialize().to_pybytes()).decode(),
               "sample": list(summary.sample)}
        try:
            write_whole(path, json.dumps(doc, default=str).encode("utf-8"))
        except OSError as exc:
            if not self._warned:
                self._warned = True
                _log.warning("cannot write the files index in %s: %s (files are read again "
                             "next time)", self.root, exc)


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value
