"""The ``qmtl-lock`` command line: one module per command, named after its verb.

The group follows click's LazyGroup pattern ("Advanced: lazily loading subcommands"): it knows
each command's name and ``module:attribute`` (:data:`COMMANDS`) and imports a command's module
only when that command runs. ``--help`` of the group lists the commands from :data:`SUMMARIES`
(the first paragraph of each command's help, kept equal by tests/test_cli_light.py), so it
imports none of them. Command modules import heavy modules (pyarrow, fsspec, jsonschema, the
pydantic models) inside the command, so ``check`` stays fast enough for a pre-commit hook. Exit
codes and error output are in :mod:`qmtl_lock.cli.output`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import click
from click.utils import make_default_short_help

COMMANDS: Mapping[str, str] = {
    "check": "qmtl_lock.cli.check:check_command",
    "diff": "qmtl_lock.cli.diff:diff_command",
    "doctor": "qmtl_lock.cli.doctor:doctor_command",
    "gc": "qmtl_lock.cli.gc:gc_command",
    "init": "qmtl_lock.cli.init:init_command",
    "materialize": "qmtl_lock.cli.materialize:materialize_command",
    "merge-driver": "qmtl_lock.cli.merge_driver:merge_driver_command",
    "pins": "qmtl_lock.cli.pins:pins_group",
    "presets": "qmtl_lock.cli.presets:presets_command",
    "pull": "qmtl_lock.cli.pull:pull_command",
    "repair": "qmtl_lock.cli.repair:repair_command",
    "resolve": "qmtl_lock.cli.resolve:resolve_command",
    "schemas": "qmtl_lock.cli.schemas:schemas_command",
    "show": "qmtl_lock.cli.show:show_command",
    "verify": "qmtl_lock.cli.verify:verify_command",
}


# The first paragraph of each command's help: what `qmtl-lock --help` lists.
SUMMARIES: Mapping[str, str] = {
    "check": "Check that seamless.lock matches seamless.yaml and the presets (reads no data).",
    "diff": "Show what changed between two locks, down to the changed partitions.",
    "doctor": "Probe the store: reachable, writable, conditional writes honoured, cache "
              "writable.",
    "gc": "Delete store data that no kept lock pins and retention no longer protects.",
    "init": "Write a starter seamless.yaml and git-ignore the store.",
    "materialize": "Materialize one preset and symbol into the store, without a lock; print "
                   "the report.",
    "merge-driver": "Git merge driver for seamless.lock: merges per dataset and symbol.",
    "pins": "Register this project's pins in a shared store, so gc elsewhere keeps them.",
    "presets": "List the presets (built-in and from seamless.yaml) with their definitions.",
    "pull": "Bring what the lock pins from a remote store into the local cache, verified.",
    "repair": "Move corrupted store files aside and fetch again only the partitions they held.",
    "resolve": "Materialize what is missing or changed and write seamless.lock.",
    "schemas": "Print (or write) the JSON Schemas of seamless.yaml, seamless.lock and preset "
               "catalogs.",
    "show": "Show what is locked: coverage, rows, fingerprint, flags, expiry.",
    "verify": "Re-read the store and re-hash it against the lock.",
}


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands by name; a lazy one is imported from its ``module:attribute`` the
    first time it is looked up. Listing the names, testing ``in`` or asking for the short help
    of a command with a summary imports nothing."""

    def __init__(self, lazy: Mapping[str, str], loaded: Mapping[str, click.Command],
                 summaries: Mapping[str, str] | None = None) -> None:
        self._lazy = dict(lazy)
        self._loaded = dict(loaded)
        self._summaries = dict(summaries or {})

    def short_help(self, name: str, limit: int) -> str | None:
        """What the group's help lists for ``name`` (as click shortens it), or None when the
        command is hidden."""
        if name in self._lazy and name not in self._loaded and name in self._summaries:
            return make_default_short_help(self._summaries[name], limit).strip()
        command = self[name]
        return None if command.hidden else command.get_short_help_str(limit)

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            self._loaded[name] = _load(self._lazy[name])
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._lazy.pop(name, None)
        self._summaries.pop(name, None)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._lazy.pop(name, None)
        self._loaded.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._lazy or name in self._loaded

    def __iter__(self) -> Iterator[str]:
        return iter(sorted({*self._lazy, *self._loaded}))

    def __len__(self) -> int:
        return len({*self._lazy, *self._loaded})


def _load(spec: str) -> click.Command:
    module, _, attribute = spec.partition(":")
    command = getattr(importlib.import_module(module), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{spec} is not a click command")
    return command


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use; see :class:`LazyCommands`.

    The lazy table sits behind :attr:`commands` (rather than beside it, as in click's example)
    so that ``get_command``, ``list_commands`` and code that reads ``group.commands`` all see
    every command.
    """

    def __init__(self, *args: Any, lazy_subcommands: Mapping[str, str] | None = None,
                 summaries: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = LazyCommands(lazy_subcommands or {}, self.commands, summaries)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, with each short help from :meth:`LazyCommands.short_help`."""
        commands = self.commands
        names = self.list_commands(ctx)
        if not isinstance(commands, LazyCommands) or not names:
            super().format_commands(ctx, formatter)
            return
        limit = formatter.width - 6 - max(len(name) for name in names)  # click's spacing
        rows = [(name, text) for name in names
                if (text := commands.short_help(name, limit)) is not None]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS, summaries=SUMMARIES,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qmtl-lock")
def cli() -> None:
    """Pin market data the way a lockfile pins packages.

    Declare data in seamless.yaml, pin it with `qmtl-lock resolve`, keep CI honest with
    `qmtl-lock check`, and load it in Python through the lock.
    """


def main() -> None:
    """The ``qmtl-lock`` console script (see :func:`qmtl_lock.cli.output.console_main`)."""
    from qmtl_lock.cli.output import console_main

    console_main(cli)
