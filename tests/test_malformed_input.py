"""Malformed input: every way seamless.yaml, seamless.lock, a preset catalog or an argument can be
wrong ends in exit 2 with the file and line (or the argument) named, no traceback, and not one
byte of the project, its lock or its store changed.

The first part tests the YAML loader itself on hostile forms (alias bombs, tags, deep nesting,
encodings), through libyaml and through the pure-Python parser. The second part is a table of
malformed inputs, generated per file and key rather than written out one by one, run through the
command line against one resolved project that every case restores after itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import NOW
from qmtl_engine.yamlio import (
    FAST_LOADER,
    MAX_ALIASED_NODES,
    MAX_DEPTH,
    PURE_LOADER,
    YAMLFileError,
    load_yaml,
    read_yaml_text,
)

LOADERS = [pytest.param(FAST_LOADER, id="libyaml"), pytest.param(PURE_LOADER, id="python")]


def _bomb(levels: int = 9, width: int = 9, key: str = "lol") -> str:
    """The "billion laughs": each level an anchored list of ``width`` aliases of the previous."""
    rows = [f"{key}0: &{key}0 [{', '.join(['lol'] * width)}]"]
    rows += [f"{key}{i}: &{key}{i} [{', '.join([f'*{key}{i - 1}'] * width)}]"
             for i in range(1, levels)]
    return "\n".join(rows) + "\n"


def _error(text: str, loader: type[yaml.SafeLoader]) -> YAMLFileError:
    with pytest.raises(YAMLFileError) as info:
        load_yaml(text, "f.yaml", loader=loader)
    return info.value


# -- the loader ----------------------------------------------------------------------------------
def test_both_loaders_are_really_different() -> None:
    """The two parametrized paths are not one loader twice (libyaml is installed here)."""
    assert FAST_LOADER is not PURE_LOADER
    assert FAST_LOADER.__name__ == "CSafeLoader"


@pytest.mark.parametrize("loader", LOADERS)
def test_alias_bomb_is_refused_quickly_at_its_line(loader: type[yaml.SafeLoader]) -> None:
    text = "version: 1\n" + _bomb()
    started = time.perf_counter()
    exc = _error(text, loader)
    assert time.perf_counter() - started < 0.5
    assert "aliases would expand" in exc.what
    # lol0 has 10 values; each level adds 9 copies of the previous: the 5th level crosses 10,000
    assert exc.line == 6
    assert exc.exit_code == 2


@pytest.mark.parametrize("loader", LOADERS)
def test_aliases_within_budget_are_expanded(loader: type[yaml.SafeLoader]) -> None:
    doc = load_yaml(_bomb(levels=3, width=9), "f.yaml", loader=loader)
    assert len(doc.data["lol2"]) == 9
    assert doc.data["lol2"][0][0] == ["lol"] * 9


@pytest.mark.parametrize("loader", LOADERS)
def test_alias_budget_counts_what_aliases_add(loader: type[yaml.SafeLoader]) -> None:
    """Just under the budget loads; one alias more is refused."""
    block = "base: &b [" + ", ".join(["x"] * 99) + "]\n"  # 100 values with the list itself
    fits = block + "uses: [" + ", ".join(["*b"] * (MAX_ALIASED_NODES // 100)) + "]\n"
    assert len(load_yaml(fits, "f.yaml", loader=loader).data["uses"]) == MAX_ALIASED_NODES // 100
    over = fits.replace("uses: [", "uses: [*b, ", 1)
    assert _error(over, loader).line == 2


TAGS = [
    ("local_tag", "a: !Ref x\n", "!Ref"),
    ("python_object", "a: !!python/object:os.system {}\n", "!!python/object:os.system"),
    ("python_apply", 'a: !!python/object/apply:os.system ["echo hi"]\n',
     "!!python/object/apply:os.system"),
    ("python_name", "a: !!python/name:os.system ''\n", "!!python/name:os.system"),
    ("binary", "a: !!binary aGk=\n", "!!binary"),
    ("set", "a: !!set {x: null}\n", "!!set"),
    ("str_on_number", "a: !!str 1\n", "!!str"),
    ("non_specific", "a: ! 5\n", "!"),
    ("on_sequence", "a: !seq [1, 2]\n", "!seq"),
    ("verbatim", "a: !<tag:example.com,2024:x> 1\n", "!<tag:example.com,2024:x>"),
    ("in_nested_value", "a:\n  b:\n    - !Ref x\n", "!Ref"),
]


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(("text", "tag"), [t[1:] for t in TAGS], ids=[t[0] for t in TAGS])
def test_any_tag_is_refused_at_its_line(loader: type[yaml.SafeLoader], text: str,
                                        tag: str) -> None:
    exc = _error(text, loader)
    assert "YAML tag" in exc.what
    assert exc.line == text.count("\n")  # each tag sits on the last line
    shown = tag.replace("!<tag:example.com,2024:x>", "tag:example.com,2024:x")
    assert shown in exc.what


@pytest.mark.parametrize("loader", LOADERS)
def test_merge_key_with_override_is_accepted(loader: type[yaml.SafeLoader]) -> None:
    text = ("base: &base {calendar: 24x7, kind: ohlcv}\n"
            "fx:\n"
            "  <<: *base\n"
            "  calendar: 24x5\n")
    doc = load_yaml(text, "f.yaml", loader=loader)
    assert doc.data["fx"] == {"calendar": "24x5", "kind": "ohlcv"}
    assert doc.line_of(("fx", "calendar")) == 4
    assert doc.line_of(("fx", "kind")) == 2  # merged: the mapping's line


@pytest.mark.parametrize("loader", LOADERS)
def test_merge_of_several_anchors(loader: type[yaml.SafeLoader]) -> None:
    text = "a: &a {x: 1}\nb: &b {y: 2}\nc:\n  <<: [*a, *b]\n  x: 3\n"
    assert load_yaml(text, "f.yaml", loader=loader).data["c"] == {"x": 3, "y": 2}


DUPLICATES = [
    ("plain", "a: 1\nb: 2\na: 3\n", 3, "a"),
    ("nested", "a:\n  x: 1\n  x: 2\n", 3, "a.x"),
    ("after_a_merge", "b: &b {x: 1}\nc:\n  <<: *b\n  y: 1\n  y: 2\n", 5, "c.y"),
    ("flow", "a: {x: 1, x: 2}\n", 1, "a.x"),
    ("quoted_and_plain", "a: 1\n\"a\": 2\n", 2, "a"),
]


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(("text", "line", "key"), [d[1:] for d in DUPLICATES],
                         ids=[d[0] for d in DUPLICATES])
def test_real_duplicate_keys_stay_refused(loader: type[yaml.SafeLoader], text: str, line: int,
                                          key: str) -> None:
    exc = _error(text, loader)
    assert exc.what == f"duplicate key {key.rsplit('.', 1)[-1]!r}"
    assert (exc.line, exc.key) == (line, key)


HOSTILE = [
    ("flow_nesting_10000", "a: " + "[" * 10_000 + "]" * 10_000 + "\n", 1, "nests deeper"),
    ("block_nesting", "".join(f"{'  ' * i}k{i}:\n" for i in range(200)) + "  " * 200 + "x: 1\n",
     MAX_DEPTH + 1, "nests deeper"),
    ("undefined_alias", "a: 1\nb: *nope\n", 2, "names no anchor"),
    ("alias_inside_its_anchor", "a: &r [1, *r]\n", 1, "inside the block it refers to"),
    ("mapping_as_key", "a: 1\n? {x: 1}\n: 2\n", 2, "a key must be plain text"),
    ("list_as_key", "[a, b]: 1\n", 1, "a key must be plain text"),
    ("alias_of_list_as_key", "a: &l [1]\nb:\n  *l : 2\n", 3, "a key must be plain text"),
    ("two_documents", "a: 1\n---\nb: 2\n", 2, "more than one YAML document"),
    ("nul_character", "a: 1\nb: x\x00y\n", 2, "U+0000"),
    ("bell_character", "a: 1\nb: x\x07y\n", 2, "U+0007"),
    ("lone_surrogate", "a: 1\nb: x\ud800y\n", 2, "U+D800"),
    ("unclosed_flow", "a: [1, 2\nb: 3\n", 2, "not valid YAML"),
    ("tab_indent", "a:\n\tb: 1\n", 2, "not valid YAML"),
    ("merge_of_a_scalar", "a:\n  <<: 5\n", 2, "merging"),
    ("impossible_date", "a: 1\nb: 2024-02-30\n", 2, "invalid value '2024-02-30'"),
    ("conflict_markers", "a: 1\n<<<<<<< HEAD\nb: 2\n=======\nb: 3\n>>>>>>> theirs\n", 2,
     "conflict markers"),
    ("conflict_marker_left_over", "a: 1\nb: 2\n>>>>>>> theirs\n", 3, "conflict markers"),
]


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(("text", "line", "message"), [h[1:] for h in HOSTILE],
                         ids=[h[0] for h in HOSTILE])
def test_hostile_yaml_is_refused_at_its_line(loader: type[yaml.SafeLoader], text: str,
                                             line: int, message: str) -> None:
    started = time.perf_counter()
    exc = _error(text, loader)
    assert time.perf_counter() - started < 1.0
    assert message in exc.what
    assert exc.line == line
    assert f"f.yaml:{line}" in str(exc)
    assert exc.fix


@pytest.mark.parametrize("loader", LOADERS)
def test_nesting_up_to_the_limit_loads(loader: type[yaml.SafeLoader]) -> None:
    text = "a: " + "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1) + "\n"
    assert load_yaml(text, "f.yaml", loader=loader).data["a"] is not None


@pytest.mark.parametrize("loader", LOADERS)
def test_empty_and_comment_only_files_have_no_data(loader: type[yaml.SafeLoader]) -> None:
    assert load_yaml("", "f.yaml", loader=loader).data is None
    assert load_yaml("# nothing\n", "f.yaml", loader=loader).data is None


@pytest.mark.parametrize("loader", LOADERS)
def test_lines_are_recorded_for_keys_and_items(loader: type[yaml.SafeLoader]) -> None:
    doc = load_yaml("a:\n  b: [x, y]\n  c:\n    - 1\n    - {d: 2}\n", "f.yaml", loader=loader)
    assert doc.lines == {(): 1, ("a",): 1, ("a", "b"): 2, ("a", "b", 0): 2, ("a", "b", 1): 2,
                         ("a", "c"): 3, ("a", "c", 0): 4, ("a", "c", 1): 5,
                         ("a", "c", 1, "d"): 5}


ENCODINGS = [
    ("utf16_le_bom", "version: 1\n".encode("utf-16"), None, "UTF-16"),
    ("utf16_be_bom", b"\xfe\xff" + "version: 1\n".encode("utf-16-be"), None, "UTF-16"),
    ("utf16_no_bom", "version: 1\n".encode("utf-16-le"), 1, "is UTF-16 encoded"),
    ("utf32", "version: 1\n".encode("utf-32"), None, "is UTF-32 encoded"),
    ("latin1", "version: 1\ndescription: caf\xe9\n".encode("latin-1"), 2, "byte 0xe9"),
    ("bad_continuation", b"version: 1\n\nname: \xc3\x28\n", 3, "byte 0xc3"),
    ("nul_in_utf8", b"version: 1\nx: a\x00b\n", 2, "NUL bytes"),
]


@pytest.mark.parametrize(("raw", "line", "message"), [e[1:] for e in ENCODINGS],
                         ids=[e[0] for e in ENCODINGS])
def test_files_that_are_not_utf8_are_refused(tmp_path: Path, raw: bytes, line: int | None,
                                             message: str) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes(raw)
    with pytest.raises(YAMLFileError) as info:
        read_yaml_text(path)
    assert message in info.value.what
    assert info.value.line == line
    assert str(path) in str(info.value)
    assert "UTF-8" in (info.value.fix or "")


def test_utf8_with_a_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes(b"\xef\xbb\xbfversion: 1\n")
    assert load_yaml(read_yaml_text(path), str(path)).data == {"version": 1}


def test_a_directory_is_not_a_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(YAMLFileError) as info:
        read_yaml_text(tmp_path)
    assert "is a directory" in info.value.what


def test_a_missing_file_is_left_to_the_caller(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_yaml_text(tmp_path / "nope.yaml")


# -- catalog validation at load time -------------------------------------------------------------
def test_every_source_uses_the_light_options_model() -> None:
    """The catalog checks options with OPTIONS; each source must parse with the same model."""
    from qmtl_engine.sources import REGISTRY, get_source_class
    from qmtl_engine.sources.options import OPTIONS

    assert set(OPTIONS) == set(REGISTRY)
    for name in REGISTRY:
        if name == "ccxt":  # its class needs the optional ccxt package to import
            from qmtl_engine.sources.ccxt_source import CcxtSource

            assert CcxtSource.Options is OPTIONS[name]
            continue
        assert get_source_class(name).Options is OPTIONS[name]


def test_calendar_names_match_the_installed_library() -> None:
    import exchange_calendars as xcals
    from qmtl_engine.calendar_names import EXCHANGE_CALENDARS

    assert set(xcals.get_calendar_names(include_aliases=True)) == EXCHANGE_CALENDARS


def test_every_known_calendar_name_gives_a_calendar() -> None:
    from qmtl_engine.calendar_names import BUILTIN_CALENDARS, EXCHANGE_CALENDARS
    from qmtl_engine.calendars import get_calendar

    for name in (*BUILTIN_CALENDARS, *sorted(EXCHANGE_CALENDARS)[:3]):
        assert get_calendar(name) is not None


def test_unknown_calendar_asks_the_library_before_refusing() -> None:
    from qmtl_engine.calendar_names import is_known_calendar

    assert is_known_calendar("XNYS")
    assert not is_known_calendar("XNYZ")


# -- the command-line table ----------------------------------------------------------------------
MANIFEST = """\
version: 1
store: .seamless/store
presets: [presets.yaml]
retention_classes:
  scratch: {ttl_days: 7, description: throwaway}
datasets:
  crypto:
    preset: ohlcv.synthetic.crypto.1h
    symbols: [BTCUSDT, ETHUSDT]
    start: 2024-01-01
    end: 2024-01-03
    contract_version: v1
    retention_class: scratch
    priority: low
    accepted_gaps: [{start: 2024-01-01T05:00:00Z, end: 2024-01-01T06:00:00Z, reason: outage}]
    description: two days of hourly bars
  mine:
    preset: ohlcv.mine.crypto.1h
    symbols: [SOLUSDT]
    start: 2024-01-01
    end: 2024-01-02
    contract_version: v1
"""

CATALOG = """\
version: 1
data_presets:
  ohlcv.mine.crypto.1h:
    kind: ohlcv
    interval_ms: 3600000
    stabilization_bars: 0
    contract: {name: ohlcv, version: v1}
    calendar: 24x7
    partition: month
    source: {name: synthetic, options: {seed: 7, start_price: 50.0}}
    sla_preset: mine-sla
    conformance_preset: mine-conf
    description: my synthetic bars
conformance_presets:
  mine-conf: {partial_ok: false, block: [duplicate_ts]}
sla_presets:
  mine-sla: {total_deadline_ms: 60000, min_coverage: 0.5, on_violation: fail_fast}
retention_classes:
  mine-ret: {ttl_days: 30}
"""

FILES = {"manifest": "seamless.yaml", "lock": "seamless.lock", "catalog": "presets.yaml"}
CHECK, RESOLVE, DRY, PRESETS, VERIFY, SHOW = (
    ("check",), ("resolve",), ("resolve", "--dry-run"), ("presets",), ("verify",), ("show",))
# Who reads what: `presets` parses seamless.yaml (not its datasets) and the catalogs; `show`
# reads only the lock; the others read everything.
READERS = {
    "manifest": (CHECK, RESOLVE, DRY, PRESETS, VERIFY),
    "datasets": (CHECK, RESOLVE, DRY, VERIFY),  # problems found once presets are resolved
    "lock": (CHECK, RESOLVE, DRY, VERIFY, SHOW),
    "catalog": (CHECK, RESOLVE, DRY, PRESETS, VERIFY),
}
ANY_LINE = 0  # the error must name some line of the file (a parser's guess, e.g. end of file)

Edit = Callable[[str], tuple[str | bytes, int | None]]


@dataclass(frozen=True)
class Case:
    """One malformed input. ``edit`` turns the good file into the bad one and says which line
    the error must name (None: the file alone); argument cases break ``argv`` instead, and
    their output must contain ``needle``."""

    id: str
    file: str  # a key of FILES, or "" for an argument case
    edit: Edit | None
    commands: tuple[tuple[str, ...], ...] = ()
    argv: tuple[str, ...] = ()  # {m}: the manifest's path, {root}: the project's
    needle: str = ""
    directory: bool = False  # the file is replaced by a directory


def _index(lines: list[str], prefix: str) -> int:
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            return i
    raise AssertionError(f"no line starts with {prefix!r}")


def replace(prefix: str, new: str, expect: str | None = None) -> Edit:
    """Replace the first line starting with ``prefix`` by ``new``. The error names that line,
    or the line starting with ``expect``."""
    def edit(text: str) -> tuple[str, int]:
        lines = text.splitlines(keepends=True)
        i = _index(lines, prefix)
        lines[i] = new + "\n"
        return "".join(lines), (i if expect is None else _index(lines, expect)) + 1
    return edit


def value(prefix: str, bad: str, expect: str | None = None) -> Edit:
    """``prefix`` is a key with its indentation (``    start:``); its value becomes ``bad``."""
    return replace(prefix, f"{prefix} {bad}", expect)


def anywhere(edit: Edit) -> Edit:
    """The same edit, but any line of the file may be named."""
    return lambda text: (edit(text)[0], ANY_LINE)


def insert_after(prefix: str, new: str) -> Edit:
    def edit(text: str) -> tuple[str, int]:
        lines = text.splitlines(keepends=True)
        i = _index(lines, prefix)
        lines.insert(i + 1, new + "\n")
        return "".join(lines), i + 2
    return edit


def remove(prefix: str, expect: str) -> Edit:
    def edit(text: str) -> tuple[str, int]:
        lines = text.splitlines(keepends=True)
        del lines[_index(lines, prefix)]
        return "".join(lines), _index(lines, expect) + 1
    return edit


def whole(new: str, line: int | None) -> Edit:
    return lambda text: (new, line)


def append(extra: str, line_in_extra: int) -> Edit:
    """Add ``extra`` at the end; the error names its ``line_in_extra``-th line (1-based)."""
    return lambda text: (text + extra, text.count("\n") + line_in_extra)


def encoded(encode: Callable[[str], bytes], line: int | None) -> Edit:
    return lambda text: (encode(text), line)


def conflict_in_place(prefix: str) -> Edit:
    """A conflict as git leaves it: two versions of one line between markers."""
    def edit(text: str) -> tuple[str, int]:
        lines = text.splitlines(keepends=True)
        i = _index(lines, prefix)
        lines[i:i + 1] = ["<<<<<<< HEAD\n", lines[i], "=======\n", lines[i], ">>>>>>> branch\n"]
        return "".join(lines), i + 1
    return edit


BAD_DATES = [("int", "20180101"), ("float", "2018.5"), ("bool", "true"), ("garbage", "soon"),
             ("quoted_compact", '"20180101"'), ("naive_time", '"2024-01-01T00:00:00"'),
             ("space_time", '"2024-01-01 10:00"'), ("far_future", "9999-12-31"),
             ("far_future_text", '"9999-12-31T00:00:00Z"'), ("too_old", "1600-01-01"),
             ("null", "~"), ("list", "[2024-01-01]"), ("mapping", "{y: 2024}"),
             ("impossible", "2024-02-30"), ("month_13", '"2024-13-01"'),
             ("week_date", '"2024-W01-1"')]
NOT_TEXT = [("int", "5"), ("list", "[a]"), ("mapping", "{a: 1}"), ("null", "~")]

MANIFEST_ROWS: list[tuple[str, Edit]] = [
    *((f"version_{n}", value("version:", v)) for n, v in
      [("2", "2"), ("0", "0"), ("text", '"1"'), ("null", "~"), ("list", "[1]"), ("float", "1.5")]),
    *((f"store_{n}", value("store:", v)) for n, v in [*NOT_TEXT, ("bool", "true")]),
    *((f"presets_{n}", value("presets:", v)) for n, v in
      [("int", "5"), ("text", "presets.yaml"), ("list_of_int", "[5]"), ("mapping", "{a: b}")]),
    *((f"retention_{n}", value("  scratch:", v)) for n, v in
      [("int", "5"), ("ttl_zero", "{ttl_days: 0}"), ("ttl_text", "{ttl_days: x}"),
       ("ttl_negative", "{ttl_days: -1}"), ("ttl_float", "{ttl_days: 1.5}"),
       ("unknown_key", "{ttl_days: 7, colour: red}")]),
    ("datasets_int", whole("version: 1\ndatasets: 5\n", 2)),
    ("datasets_list", whole("version: 1\ndatasets: [a, b]\n", 2)),
    ("dataset_int", whole("version: 1\ndatasets:\n  crypto: 5\n", 3)),
    ("not_a_mapping", whole("- version\n- 1\n", 1)),
    ("a_scalar", whole("hello\n", 1)),
    ("empty", whole("", 1)),
    ("dataset_name", replace("  crypto:", '  "bad name!":', expect="datasets:")),
    *((f"preset_{n}", value("    preset:", v)) for n, v in NOT_TEXT),
    *((f"symbols_{n}", value("    symbols:", v)) for n, v in
      [("int", "5"), ("text", "BTCUSDT"), ("empty", "[]"), ("list_of_int", "[5]"),
       ("traversal", '["../x"]'), ("absolute", '["/etc/passwd"]'), ("space", '["a b"]'),
       ("two_slashes", '["a/b/c"]'), ("empty_symbol", '[""]'), ("twice", "[BTCUSDT, BTCUSDT]"),
       ("mapping_item", "[{a: 1}]"), ("leading_dash", '["-x"]'), ("trailing_slash", '["x/"]'),
       ("null", "~")]),
    *((f"start_{n}", value("    start:", v)) for n, v in BAD_DATES),
    *((f"end_{n}", value("    end:", v)) for n, v in BAD_DATES),
    *((f"contract_version_{n}", value("    contract_version:", v)) for n, v in
      [("int", "5"), ("list", "[v1]"), ("null", "~")]),
    *((f"retention_class_{n}", value("    retention_class:", v)) for n, v in
      [("int", "5"), ("list", "[x]")]),
    *((f"priority_{n}", value("    priority:", v)) for n, v in
      [("urgent", "urgent"), ("int", "5"), ("null", "~"), ("upper", "HIGH")]),
    *((f"live_{n}", insert_after("    priority:", f"    live: {v}")) for n, v in
      [("int", "5"), ("list", "[a]"), ("text", "feed")]),
    *((f"accepted_gaps_{n}", value("    accepted_gaps:", v)) for n, v in
      [("int", "5"), ("list_of_int", "[5]"), ("missing_keys", "[{start: 2024-01-01}]"),
       ("empty_reason", "[{start: 2024-01-01, end: 2024-01-02, reason: ''}]"),
       ("int_start", "[{start: 20240101, end: 2024-01-02, reason: x}]"),
       ("far_end", "[{start: 2024-01-01, end: 9999-01-01, reason: x}]"),
       ("now_start", "[{start: now, end: 2024-01-02, reason: x}]"),
       ("unknown_key", "[{start: 2024-01-01, end: 2024-01-02, reason: x, who: me}]")]),
    *((f"description_{n}", value("    description:", v)) for n, v in NOT_TEXT[:3]),
    ("unknown_top_key", insert_after("store:", "storage: s3://bucket")),
    ("unknown_dataset_key", insert_after("    priority:", "    colour: red")),
    ("missing_version", remove("version:", expect="store:")),
    *((f"missing_{k}", remove(f"    {k}:", expect="  crypto:"))
      for k in ("preset", "symbols", "start", "end", "contract_version")),
    ("duplicate_key", insert_after("    end: 2024-01-03", "    end: 2024-01-04")),
    ("duplicate_dataset", append("  crypto: {}\n", 1)),
    ("conflict_in_place", conflict_in_place("    end: 2024-01-03")),
]
DATASET_ROWS: list[tuple[str, Edit]] = [
    ("unknown_preset", value("    preset:", "ohlcv.synthetic.crypto.1mn")),
    ("contract_not_offered", value("    contract_version:", "v2")),
    ("unknown_retention_class", value("    retention_class:", "nope")),
    ("start_now", value("    start:", "now")),
    ("start_after_end", value("    start:", "2024-02-01", expect="    end:")),
    ("start_equals_end", value("    start:", "2024-01-03", expect="    end:")),
    ("end_before_start_as_time", value("    end:", "2023-12-31T23:00:00Z")),
    ("gap_ends_before_it_starts", value(
        "    accepted_gaps:", "[{start: 2024-01-02, end: 2024-01-01, reason: x}]")),
    ("missing_catalog", value("presets:", "[nope.yaml]")),
    ("catalog_is_a_directory", value("presets:", "[.seamless]")),
]
LOCK_ROWS: list[tuple[str, Edit]] = [
    *((f"lock_version_{n}", value("lock_version:", v)) for n, v in
      [("newer", "2"), ("0", "0"), ("text", '"1"'), ("null", "~"), ("float", "1.0"),
       ("list", "[1]"), ("bool", "true")]),
    ("missing_lock_version", remove("lock_version:", expect="datasets:")),
    ("datasets_int", whole("lock_version: 1\ndatasets: 5\n", 2)),
    ("datasets_list", whole("lock_version: 1\ndatasets: [a]\n", 2)),
    ("dataset_int", whole("lock_version: 1\ndatasets:\n  crypto: 5\n", 3)),
    ("not_a_mapping", whole("- lock_version\n- 1\n", 1)),
    ("empty", whole("", None)),
    ("banner_only", whole("# @generated by qmtl-lock\n", None)),
    *((f"request_preset_{n}", value("      preset:", v)) for n, v in NOT_TEXT),
    *((f"request_symbols_{n}", value("      symbols:", v)) for n, v in
      [("int", "5"), ("list_of_int", "[5]"), ("traversal", '["../x"]')]),
    *((f"request_start_{n}", value("      start:", v)) for n, v in [("int", "5"), ("null", "~")]),
    ("request_contract_list", value("      contract_version:", "[v1]")),
    ("missing_request_preset", remove("      preset:", expect="    request:")),
    *((f"preset_digest_{n}", value("    preset_digest:", v)) for n, v in
      [("short", "sha256:abc"), ("int", "5"), ("md5", "md5:" + "0" * 32)]),
    *((f"fingerprint_{n}", value("        dataset_fingerprint:", v)) for n, v in
      [("short", "sha256:xyz"), ("int", "5"), ("null", "~"), ("upper", "sha256:" + "A" * 64)]),
    *((f"coverage_{n}", value("        coverage_bounds:", v)) for n, v in
      [("one", "[2024-01-01T00:00:00Z]"), ("words", "[a, b]"), ("int", "5"),
       ("dates", "[2024-01-01, 2024-01-03]"),
       ("three", "[2024-01-01T00:00:00Z, 2024-01-02T00:00:00Z, 2024-01-03T00:00:00Z]")]),
    *((f"as_of_{n}", value("        as_of:", v)) for n, v in
      [("word", "yesterday"), ("int", "5"), ("date", "2024-06-01"), ("null", "~")]),
    *((f"rows_{n}", value("        rows:", v)) for n, v in
      [("negative", "-1"), ("word", "x"), ("float", "1.5"), ("null", "~"), ("list", "[1]"),
       ("bool", "true")]),
    *((f"partitions_{n}", value("        partitions:", v)) for n, v in
      [("negative", "-1"), ("word", "x")]),
    *((f"flag_{n}", value("          gap_bars:", v)) for n, v in
      [("word", "x"), ("float", "1.5"), ("null", "~")]),
    *((f"sla_{n}", value(f"          {k}:", v)) for n, k, v in
      [("deadline_word", "deadline_ms", "x"), ("violation_int", "violation", "5")]),
    # locks of 0.1 carried the elapsed time; it is read and dropped, but must still be a count
    ("sla_elapsed_word", insert_after("          deadline_ms:", "          elapsed_ms: x")),
    ("sla_unknown_key", insert_after("          violation:", "          colour: red")),
    *((f"retention_class_{n}", value("        retention_class:", v)) for n, v in
      [("int", "5"), ("list", "[a]")]),
    *((f"expires_at_{n}", value("        expires_at:", v)) for n, v in
      [("word", "never"), ("int", "5"), ("date", "2024-06-01")]),
    ("unknown_symbol_key", insert_after("        rows:", "        colour: red")),
    ("unknown_dataset_key", insert_after("    preset_digest:", "    colour: red")),
    ("unknown_top_key", insert_after("lock_version:", "colour: red")),
    ("duplicate_key", insert_after("        rows:", "        rows: 5")),
    ("symbol_traversal", replace("      BTCUSDT:", '      "../x":')),
    ("missing_rows", remove("        rows:", expect="      BTCUSDT:")),
    ("conflict_in_place", conflict_in_place("        rows:")),
]
PRESET = "  ohlcv.mine.crypto.1h:"
SOURCES = [
    ("int", "5"), ("unknown_name", "{name: nope}"), ("no_name", "{options: {}}"),
    ("options_int", "{name: synthetic, options: 5}"),
    ("synthetic_seed_word", "{name: synthetic, options: {seed: x}}"),
    ("synthetic_unknown", "{name: synthetic, options: {colour: red}}"),
    ("synthetic_price", "{name: synthetic, options: {start_price: -1}}"),
    ("synthetic_volatility", "{name: synthetic, options: {step_volatility: 1.0}}"),
    ("synthetic_rate_limit", "{name: synthetic, options: {rate_limit: {burst: 1}}}"),
    ("files_no_url", "{name: files, options: {}}"),
    ("files_format", "{name: files, options: {url: x, format: xlsx}}"),
    ("files_delimiter", "{name: files, options: {url: x, delimiter: ';;'}}"),
    ("files_ts_unit", "{name: files, options: {url: x, ts_unit: minutes}}"),
    ("binance_market", "{name: binance_vision, options: {market: options}}"),
    ("binance_concurrency", "{name: binance_vision, options: {concurrency: 0}}"),
    ("binance_attempts", "{name: binance_vision, options: {max_attempts: 99}}"),
    ("binance_rate", "{name: binance_vision, options: {rate_limit: {requests_per_second: 0}}}"),
    ("polygon_url", "{name: polygon, options: {base_url: 'ftp://x'}}"),
    ("polygon_key_in_url", "{name: polygon, options: {base_url: 'https://x?apiKey=abc'}}"),
    ("polygon_zone", "{name: polygon, options: {daily_timezone: Mars/Olympus}}"),
    ("ccxt_no_exchange", "{name: ccxt, options: {}}"),
    ("ccxt_credentials", "{name: ccxt, options: {exchange: binance, config: {apiKey: k}}}"),
]
CATALOG_ROWS: list[tuple[str, Edit]] = [
    *((f"version_{n}", value("version:", v)) for n, v in [("2", "2"), ("null", "~")]),
    ("data_presets_int", whole("version: 1\ndata_presets: 5\n", 2)),
    ("not_a_mapping", whole("- version\n", 1)),
    ("empty", whole("", 1)),
    ("bad_id", replace(PRESET, "  OHLCV.Mine:")),
    ("id_without_interval", replace(PRESET, "  ohlcv.mine.crypto.hourly:")),
    ("id_interval_mismatch", replace(PRESET, "  ohlcv.mine.crypto.1m:",
                                     expect="    interval_ms:")),
    ("reuses_builtin_id", replace(PRESET, "  ohlcv.synthetic.crypto.1h:")),
    *((f"kind_{n}", value("    kind:", v)) for n, v in NOT_TEXT),
    *((f"interval_{n}", value("    interval_ms:", v)) for n, v in
      [("zero", "0"), ("negative", "-1"), ("word", "x"), ("float", "1.5"), ("null", "~")]),
    *((f"stabilization_{n}", value("    stabilization_bars:", v)) for n, v in
      [("negative", "-1"), ("word", "x")]),
    *((f"contract_{n}", value("    contract:", v)) for n, v in
      [("int", "5"), ("no_version", "{name: ohlcv}"),
       ("unknown_key", "{name: ohlcv, version: v1, x: 1}")]),
    *((f"calendar_{n}", value("    calendar:", v)) for n, v in
      [("typo", "XNYZ"), ("lowercase", "nyse"), ("int", "5"), ("list", "[24x7]"),
       ("hyphen", "24-7")]),
    *((f"partition_{n}", value("    partition:", v)) for n, v in
      [("week", "week"), ("int", "5")]),
    *((f"source_{n}", value("    source:", v)) for n, v in SOURCES),
    ("live_int", insert_after("    partition:", "    live: 5")),
    *((f"sla_preset_{n}", value("    sla_preset:", v)) for n, v in
      [("unknown", "nope"), ("int", "5")]),
    *((f"conformance_preset_{n}", value("    conformance_preset:", v)) for n, v in
      [("unknown", "nope"), ("list", "[a]")]),
    ("description_int", value("    description:", "5")),
    ("override_word", insert_after("    description:", "    override: maybe")),
    ("unknown_preset_key", insert_after("    kind:", "    colour: red")),
    ("missing_sla_preset", remove("    sla_preset:", expect=PRESET)),
    ("missing_source", remove("    source:", expect=PRESET)),
    *((f"conformance_{n}", value("  mine-conf:", v)) for n, v in
      [("partial_word", "{partial_ok: x}"), ("unknown_flag", "{block: [nope_flag]}"),
       ("block_int", "{block: 5}"), ("unknown_key", "{colour: 1}"), ("int", "5")]),
    *((f"sla_{n}", value("  mine-sla:", v)) for n, v in
      [("deadline_zero", "{total_deadline_ms: 0}"), ("coverage_2", "{min_coverage: 2}"),
       ("coverage_negative", "{min_coverage: -0.1}"), ("violation", "{on_violation: explode}"),
       ("lag_word", "{max_lag_seconds: x}"), ("backoff_negative", "{retry_backoff_ms: -1}"),
       ("unknown_key", "{colour: 1}")]),
    *((f"retention_{n}", value("  mine-ret:", v)) for n, v in
      [("ttl_zero", "{ttl_days: 0}"), ("ttl_word", "{ttl_days: x}"), ("unknown", "{colour: 1}")]),
    ("duplicate_key", insert_after("    kind:", "    kind: ohlcv")),
    ("conflict_in_place", conflict_in_place("    interval_ms:")),
]


def hostile(anchor: str) -> list[tuple[str, Edit]]:
    """Hostile YAML forms, on the line starting with ``anchor`` or appended to the file."""
    return [
        ("tag_ref", value(anchor, "!Ref x")),
        ("tag_python", value(anchor, '!!python/object/apply:os.system ["true"]')),
        ("tag_binary", value(anchor, "!!binary aGk=")),
        ("tag_on_mapping", value(anchor, "!foo {a: 1}")),
        ("alias_bomb", append(_bomb(key="zz"), 5)),
        ("deep_flow_nesting", append("zz: " + "[" * 10_000 + "]" * 10_000 + "\n", 1)),
        ("deep_block_nesting", append(
            "".join(f"{'  ' * i}z{i}:\n" for i in range(100)) + "  " * 100 + "x: 1\n",
            MAX_DEPTH + 1)),
        ("undefined_alias", value(anchor, "*nope")),
        ("alias_in_own_anchor", append("zz: &zz [*zz]\n", 1)),
        ("complex_key", append("? [a]\n: 1\n", 1)),
        ("second_document", append("---\nzz: 1\n", 1)),
        ("conflict_markers", append("<<<<<<< HEAD\nzz: 1\n=======\nzz: 2\n>>>>>>> b\n", 1)),
        ("nul_character", value(anchor, "a\x00b")),
        ("control_character", value(anchor, "a\x1bb")),
        ("unclosed_flow", anywhere(value(anchor, "[a, b"))),
        ("unclosed_quote", anywhere(value(anchor, '"abc'))),
        ("tab_indent", append("zz:\n\tyy: 1\n", 2)),
        ("merge_of_scalar", append("zz:\n  <<: 5\n", 2)),
        ("impossible_date", value(anchor, "2024-02-30")),
    ]


ENCODINGS: list[tuple[str, Edit]] = [
    ("utf16", encoded(lambda t: t.encode("utf-16"), None)),
    ("utf16_be", encoded(lambda t: b"\xfe\xff" + t.encode("utf-16-be"), None)),
    ("utf16_no_bom", encoded(lambda t: t.encode("utf-16-le"), 1)),
    ("utf32", encoded(lambda t: t.encode("utf-32"), None)),
    # as a Windows editor saves it: cp1252 (the lock's banner has an em dash, 0x97 there)
    ("cp1252", encoded(lambda t: ("# caf\xe9\n" + t).encode("cp1252", "replace"), 1)),
    ("bad_utf8", lambda t: (t.encode() + b"x: \xc3\x28\n", t.count("\n") + 1)),
]
ANCHORS = {"manifest": "    description:", "lock": "        retention_class:",
           "catalog": "    description:"}


def _file_cases() -> list[Case]:
    def cases(file: str, readers: str, rows: list[tuple[str, Edit]]) -> list[Case]:
        return [Case(f"{file}-{name}", file, edit, READERS[readers]) for name, edit in rows]

    out = [*cases("manifest", "manifest", MANIFEST_ROWS),
           *cases("manifest", "datasets", DATASET_ROWS),
           *cases("lock", "lock", LOCK_ROWS),
           *cases("catalog", "catalog", CATALOG_ROWS)]
    for file, anchor in ANCHORS.items():
        out += cases(file, file, [*hostile(anchor), *ENCODINGS])
    return [*out, Case("lock-is-a-directory", "lock", None, READERS["lock"], directory=True),
            Case("catalog-is-a-directory", "catalog", None, (PRESETS,), directory=True)]


def _materialize(name: str, needle: str, *options: str) -> Case:
    args = {"--symbol": "X", "--start": "2024-01-01", "--end": "2024-01-02"}
    preset = "ohlcv.synthetic.crypto.1h"
    rest: list[str] = []
    it = iter(options)
    for opt in it:
        if opt == "PRESET":
            preset = next(it)
        elif opt.startswith("--no-"):
            args.pop("--" + opt.removeprefix("--no-"))
        else:
            args[opt] = next(it)
    rest = [x for pair in args.items() for x in pair]
    return Case(f"arg-materialize-{name}", "", None,
                argv=("materialize", preset, *rest, "--store", "{root}/.seamless/store"),
                needle=needle)


ARGUMENT_CASES = [
    Case("arg-check-extra", "", None, argv=("check", "-m", "{m}", "stray"),
         needle="unexpected extra argument"),
    Case("arg-check-unknown-option", "", None, argv=("check", "-m", "{m}", "--bogus"),
         needle="--bogus"),
    *(Case(f"arg-resolve-jobs-{n}", "", None, argv=("resolve", "-m", "{m}", "-j", v),
           needle="--jobs") for n, v in [("zero", "0"), ("word", "x"), ("huge", "65")]),
    Case("arg-resolve-locked-frozen", "", None,
         argv=("resolve", "-m", "{m}", "--locked", "--frozen"), needle="--locked and --frozen"),
    Case("arg-resolve-unknown-dataset", "", None, argv=("resolve", "-m", "{m}", "nope"),
         needle="unknown dataset 'nope'"),
    Case("arg-dry-run-unknown-dataset", "", None,
         argv=("resolve", "--dry-run", "-m", "{m}", "nope"), needle="unknown dataset 'nope'"),
    Case("arg-verify-unknown-dataset", "", None, argv=("verify", "-m", "{m}", "nope"),
         needle="dataset 'nope' is not in the lock"),
    Case("arg-show-unknown-dataset", "", None, argv=("show", "-m", "{m}", "nope"),
         needle="dataset 'nope' is not in the lock"),
    Case("arg-show-gaps-without-dataset", "", None, argv=("show", "-m", "{m}", "--gaps"),
         needle="--gaps needs a DATASET"),
    Case("arg-show-gaps-unknown-dataset", "", None,
         argv=("show", "-m", "{m}", "--gaps", "nope"), needle="dataset 'nope' is not in"),
    *(Case(f"arg-{cmd}-manifest-is-a-directory", "", None, argv=(cmd, "-m", "{root}"),
           needle="--manifest") for cmd in ("check", "presets", "verify")),
    *(Case(f"arg-{cmd}-manifest-missing", "", None, argv=(cmd, "-m", "{root}/nope.yaml"),
           needle="nope.yaml does not exist") for cmd in ("check", "resolve", "verify")),
    _materialize("symbol-traversal", "invalid symbol '../../x'", "--symbol", "../../x"),
    _materialize("symbol-absolute", "--symbol", "--symbol", "/etc/passwd"),
    _materialize("symbol-space", "--symbol", "--symbol", "a b"),
    _materialize("symbol-empty", "--symbol", "--symbol", ""),
    _materialize("start-compact", "write it as 2024-01-01", "--start", "20240101"),
    _materialize("start-now", "--start", "--start", "now"),
    _materialize("start-garbage", "--start", "--start", "yesterday"),
    _materialize("end-far", "2261-12-31", "--end", "9999-12-31"),
    _materialize("end-naive", "needs its zone", "--end", "2024-01-02T00:00:00"),
    _materialize("unknown-preset", "unknown preset", "PRESET", "ohlcv.nope.crypto.1h"),
    _materialize("contract", "ohlcv@v9", "--contract-version", "v9"),
    _materialize("retention-class", "unknown retention class 'nope'",
                 "--retention-class", "nope"),
    _materialize("no-symbol", "--symbol", "--no-symbol"),
]

CASES = [*_file_cases(), *ARGUMENT_CASES]


def test_the_table_is_large_and_ids_are_unique() -> None:
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(len(c.commands) or 1 for c in CASES) >= 600  # command runs in all


# -- running the table ---------------------------------------------------------------------------
@dataclass
class TableProject:
    root: Path
    runner: CliRunner

    @property
    def manifest(self) -> Path:
        return self.root / "seamless.yaml"

    def tree(self) -> dict[str, str]:
        """Every file and folder under the project, with a digest of each file's bytes."""
        return {str(p.relative_to(self.root)):
                "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.root.rglob("*"))}

    def run(self, argv: tuple[str, ...]) -> tuple[int, str, BaseException | None]:
        from qmtl_lock.cli import cli

        args = [a.replace("{m}", str(self.manifest)).replace("{root}", str(self.root))
                for a in argv]
        result = self.runner.invoke(cli, args, env={"QMTL_LOCK_NOW": NOW, "CI": "1"},
                                    catch_exceptions=True)
        return result.exit_code, result.output, result.exception

    @contextmanager
    def broken(self, case: Case) -> Iterator[tuple[Path, int | None]]:
        """Break the case's file; yield its path and the line the error must name; put the
        good bytes back whatever happens."""
        path = self.root / FILES[case.file]
        good = path.read_bytes()
        line: int | None = None
        try:
            if case.directory:
                path.unlink()
                path.mkdir()
            elif case.edit is not None:
                new, line = case.edit(good.decode("utf-8"))
                path.write_bytes(new.encode("utf-8") if isinstance(new, str) else new)
            yield path, line
        finally:
            if path.is_dir():
                shutil.rmtree(path)
            path.write_bytes(good)


@pytest.fixture(scope="module")
def table_project(tmp_path_factory: pytest.TempPathFactory) -> TableProject:
    """MANIFEST and CATALOG resolved once, for the whole table."""
    from qmtl_engine.ranges import to_ms

    from qmtl_lock.resolve import PinnedNowClock, resolve

    root = tmp_path_factory.mktemp("table") / "proj"
    root.mkdir()
    (root / "seamless.yaml").write_text(MANIFEST, encoding="utf-8")
    (root / "presets.yaml").write_text(CATALOG, encoding="utf-8")
    resolve(root / "seamless.yaml", clock=PinnedNowClock(to_ms(NOW)))
    return TableProject(root, CliRunner())


@pytest.fixture
def project(table_project: TableProject, monkeypatch: pytest.MonkeyPatch) -> TableProject:
    monkeypatch.chdir(table_project.root)  # materialize's default store is relative to the cwd
    return table_project


@pytest.mark.parametrize("argv", [CHECK, RESOLVE, DRY, PRESETS, VERIFY, SHOW],
                         ids=lambda a: "-".join(a))
def test_the_good_project_passes_every_reader(project: TableProject,
                                              argv: tuple[str, ...]) -> None:
    """So each refusal below is caused by its one broken input."""
    before = project.tree()
    code, output, _ = project.run((*argv, "-m", "{m}"))
    assert code == 0, output
    assert project.tree() == before


def _refused(code: int, output: str, exception: BaseException | None, what: str) -> None:
    assert code == 2, f"{what}: exit {code}\n{output}"
    assert isinstance(exception, SystemExit), f"{what}: {exception!r}\n{output}"
    assert "Traceback" not in output, f"{what}:\n{output}"


@pytest.mark.parametrize("case", [c for c in CASES if c.file], ids=lambda c: c.id)
def test_malformed_file_is_refused_with_file_and_line(project: TableProject, case: Case) -> None:
    with project.broken(case) as (path, line):
        before = project.tree()
        for argv in case.commands:
            what = f"{case.id} via `{' '.join(argv)}`"
            code, output, exception = project.run((*argv, "-m", "{m}"))
            _refused(code, output, exception, what)
            if line is None:
                assert str(path) in output, f"{what}: {path} not named in\n{output}"
            elif line == ANY_LINE:
                assert re.search(rf"{re.escape(str(path))}:\d+", output), f"{what}:\n{output}"
            else:
                assert f"{path}:{line}" in output, f"{what}: {path}:{line} not in\n{output}"
            assert project.tree() == before, f"{what} changed the project's files"


@pytest.mark.parametrize("case", ARGUMENT_CASES, ids=lambda c: c.id)
def test_bad_argument_is_refused_naming_it(project: TableProject, case: Case) -> None:
    before = project.tree()
    code, output, exception = project.run(case.argv)
    _refused(code, output, exception, case.id)
    assert case.needle in output, f"{case.id}: {case.needle!r} not in\n{output}"
    assert project.tree() == before, f"{case.id} changed the project's files"


# A representative subset, as users read it (the project path scrubbed).
SNAPSHOT_IDS = [
    "manifest-alias_bomb", "manifest-tag_python", "manifest-deep_flow_nesting",
    "manifest-utf16", "manifest-cp1252", "manifest-conflict_in_place", "manifest-start_int",
    "manifest-end_far_future", "manifest-end_naive_time", "manifest-symbols_traversal",
    "manifest-missing_catalog", "lock-conflict_in_place", "lock-lock_version_newer",
    "lock-is-a-directory", "lock-symbol_traversal", "catalog-source_synthetic_seed_word",
    "catalog-source_polygon_zone", "catalog-calendar_typo", "catalog-merge_of_scalar",
]


@pytest.mark.parametrize("case_id", SNAPSHOT_IDS)
def test_error_text_snapshot(project: TableProject, snapshot: object, case_id: str) -> None:
    case = next(c for c in CASES if c.id == case_id)
    with project.broken(case):
        code, output, _ = project.run((*case.commands[0], "-m", "{m}"))
    assert code == 2
    assert output.replace(str(project.root), "<project>") == snapshot


@pytest.mark.parametrize("argv", [
    ("materialize", "ohlcv.synthetic.crypto.1h", "--symbol", "../../x", "--start", "2024-01-01",
     "--end", "2024-01-02"),
    ("materialize", "ohlcv.synthetic.crypto.1h", "--symbol", "X", "--start", "20240101",
     "--end", "2024-01-02"),
], ids=["symbol", "date"])
def test_materialize_argument_snapshot(project: TableProject, snapshot: object,
                                       argv: tuple[str, ...]) -> None:
    code, output, _ = project.run(argv)
    assert code == 2
    assert output == snapshot


# -- what the table cannot say -------------------------------------------------------------------
def test_check_refuses_an_alias_bomb_in_well_under_a_second(project: TableProject) -> None:
    case = next(c for c in CASES if c.id == "manifest-alias_bomb")
    with project.broken(case) as (path, line):
        started = time.perf_counter()
        code, output, _ = project.run(("check", "-m", "{m}"))
        elapsed = time.perf_counter() - started
    assert code == 2
    assert f"{path}:{line}" in output
    assert elapsed < 0.5


def test_a_merge_key_with_an_override_works_in_a_catalog(project: TableProject) -> None:
    """Why merge keys matter: presets that share most of their definition."""
    catalog = project.root / "presets.yaml"
    good = catalog.read_bytes()
    shared = CATALOG.replace("  ohlcv.mine.crypto.1h:\n", "  ohlcv.mine.crypto.1h: &mine\n")
    shared = shared.replace("conformance_presets:\n", "  ohlcv.mine.fx.1h:\n"
                            "    <<: *mine\n"
                            "    calendar: 24x5\n"
                            "    description: my FX bars\n"
                            "conformance_presets:\n")
    try:
        catalog.write_text(shared, encoding="utf-8")
        code, output, _ = project.run(("presets", "-m", "{m}"))
        assert code == 0, output
        listed = {line.split()[0]: line.split()[1:3] for line in output.splitlines()}
        assert listed["ohlcv.mine.fx.1h"] == ["synthetic", "24x5"]
        assert listed["ohlcv.mine.crypto.1h"] == ["synthetic", "24x7"]
        code, output, _ = project.run(("check", "-m", "{m}"))
        assert code == 0, output
    finally:
        catalog.write_bytes(good)


def test_check_with_a_user_catalog_stays_light(project: TableProject) -> None:
    """Validating source options and calendars at load time imports no heavy module."""
    code = (
        "import json, sys; from qmtl_lock.cli import cli; from click.testing import CliRunner; "
        f"r = CliRunner().invoke(cli, ['check', '-m', {str(project.manifest)!r}]); "
        "print(json.dumps([r.exit_code, sorted(m for m in ('pyarrow', 'fsspec', 'jsonschema', "
        "'deepdiff', 'pandas', 'numpy', 'exchange_calendars') if m in sys.modules)]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "QMTL_LOCK_NOW": NOW})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [0, []]
