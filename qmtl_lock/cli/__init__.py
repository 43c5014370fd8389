"""The ``qmtl-lock`` command line: one module per command, named after its verb.

The group follows click's LazyGroup pattern ("Advanced: lazily loading subcommands"): it knows
each command's name and ``module:attribute`` (:data:`COMMANDS`) and imports a command's module
only when that command runs (``--help`` of the group imports them all, for their short help).
Command modules import heavy modules (pyarrow, fsspec, jsonschema, deepdiff, the pydantic
models) inside the command, so ``check`` stays fast enough for a pre-commit hook. Exit codes and
error output are in :mod:`qmtl_lock.cli.output`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import click

COMMANDS: Mapping[str, str] = {
    "check": "qmtl_lock.cli.check:check_command",
    "diff": "qmtl_lock.cli.diff:diff_command",
    "gc": "qmtl_lock.cli.gc:gc_command",
    "init": "qmtl_lock.cli.init:init_command",
    "materialize": "qmtl_lock.cli.materialize:materialize_command",
    "merge-driver": "qmtl_lock.cli.merge_driver:merge_driver_command",
    "presets": "qmtl_lock.cli.presets:presets_command",
    "repair": "qmtl_lock.cli.repair:repair_command",
    "resolve": "qmtl_lock.cli.resolve:resolve_command",
    "schemas": "qmtl_lock.cli.schemas:schemas_command",
    "show": "qmtl_lock.cli.show:show_command",
    "verify": "qmtl_lock.cli.verify:verify_command",
}


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands by name; a lazy one is imported from its ``module:attribute`` the
    first time it is looked up. Listing the names or testing ``in`` imports nothing."""

    def __init__(self, lazy: Mapping[str, str], loaded: Mapping[str, click.Command]) -> None:
        self._lazy = dict(lazy)
        self._loaded = dict(loaded)

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            self._loaded[name] = _load(self._lazy[name])
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._lazy.pop(name, None)
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
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = LazyCommands(lazy_subcommands or {}, self.commands)


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS,
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
