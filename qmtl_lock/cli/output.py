"""What every command shares: exit codes, redacted output, one-message errors, common options.

This module alone maps errors to exit codes (DESIGN §10): 0 ok; 1 drift or verification failure
(or locks that differ, or a merge with conflicts); 2 bad input; 3 materialization or storage
failed (and an unexpected error, which is a bug); 130 interrupted (Ctrl-C). Whatever a command
prints goes through :func:`echo` or :func:`emit_json`, which redact credentials, and a failure
of any kind reaches the user as one message (what, where, fix), never as a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from qmtl_engine import QmtlLockError

from qmtl_lock.redact import redact_output

if TYPE_CHECKING:
    from types import TracebackType

    from qmtl_engine import StoreError

    from qmtl_lock.cli.interrupts import InterruptGuard

EXIT_OK, EXIT_DRIFT, EXIT_INPUT, EXIT_MATERIALIZE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a program stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of our output went away (`... | head`)
LOCK_NAME = "seamless.lock"  # named here too: the pydantic models stay unloaded

def _nearest_manifest(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path:
    """Without ``--manifest``, the nearest seamless.yaml here or in a parent folder."""
    if value is not None:
        return value
    from qmtl_lock.inputs import MANIFEST_NAME, find_manifest  # light: no pydantic models

    return find_manifest() or Path(MANIFEST_NAME)


manifest_option = click.option(
    "--manifest", "-m", "manifest", default=None, show_default="the nearest seamless.yaml here "
    "or in a parent folder", type=click.Path(dir_okay=False, path_type=Path),
    callback=_nearest_manifest, help="Path to seamless.yaml.")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")

# Set by console_main() in a real process only (never under click's CliRunner): the SIGINT
# handler that keeps a Ctrl-C from being lost inside an import.
_guard: InterruptGuard | None = None


def echo(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    """Print one line (or ``nl=False`` a part of one), credentials redacted."""
    click.echo(redact_output(text), err=err, nl=nl)


def emit_json(data: Any) -> None:
    click.echo(redacted_json(data))


def redacted_json(data: Any) -> str:
    """``data`` as indented JSON with sorted keys, every string redacted."""
    return json.dumps(_redact_strings(data), indent=2, sort_keys=True)


def _redact_strings(value: Any) -> Any:
    if isinstance(value, str):
        return redact_output(value)
    if isinstance(value, dict):
        return {k: _redact_strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_strings(v) for v in value]
    return value


def fail(exc: QmtlLockError, as_json: bool) -> NoReturn:
    """Print one error (what, where, fix) and exit with its code."""
    _print_error(exc, as_json)
    sys.exit(exc.exit_code)


def _print_error(exc: QmtlLockError, as_json: bool) -> None:
    if as_json:
        emit_json({"ok": False, **exc.to_dict()})
    else:
        echo(f"error: {exc.render()}", err=True)


@dataclass(frozen=True)
class Files:
    """Where a command keeps its data, to name the store or the lock in a bare OS error.

    ``manifest`` gives the store (``store:`` in seamless.yaml) and the lock beside it; ``store``
    is a store URL given on the command line instead.
    """

    manifest: Path | None = None
    store: str | None = None

    def store_url(self) -> str | None:
        if self.store is not None:
            return self.store
        if self.manifest is None or not self.manifest.is_file():
            return None
        from qmtl_lock.manifest import load_manifest

        try:
            return load_manifest(self.manifest).store_url
        except (QmtlLockError, OSError):
            return None

    def store_setting(self) -> str:
        """Where the user sets the store, for a fix to name."""
        return "--store" if self.store is not None else "`store:` in seamless.yaml"

    def lock_path(self) -> Path | None:
        return self.manifest.with_name(LOCK_NAME) if self.manifest is not None else None


def run(as_json: bool, fn: Callable[[], int], *, files: Files | None = None) -> NoReturn:
    """Run a command's body and exit with the code it returns, or with its failure's.

    A :class:`QmtlLockError` keeps its code; an OS error becomes a :class:`StoreError` naming
    the store or file (exit 3); an interrupt prints one line and exits 130; anything else is a
    bug, reported in one message (exit 3; ``QMTL_LOCK_DEBUG=1`` adds the traceback).
    """
    try:
        code = fn()
    except (SystemExit, click.exceptions.Exit, click.ClickException):
        raise  # already an exit, or click's own usage error
    except BaseException as exc:  # every failure becomes one message
        if _guard is not None:
            _guard.hold()  # a second Ctrl-C must not break the message half-way
        code = report_failure(exc, as_json, files or Files())
    else:
        if _guard is not None and _guard.seen:
            code = report_interrupt()  # a Ctrl-C that something swallowed still stops us
    sys.exit(code)


def report_failure(exc: BaseException, as_json: bool, files: Files) -> int:
    """Print ``exc`` as one message and return its exit code (re-raises non-failures)."""
    from qmtl_lock.cli.interrupts import caused_by_interrupt

    if caused_by_interrupt(exc) or (_guard is not None and _guard.seen):
        return report_interrupt()
    if isinstance(exc, BrokenPipeError) and exc.filename is None:
        return EXIT_BROKEN_PIPE  # nobody is reading; nothing to say and nowhere to say it
    if isinstance(exc, QmtlLockError):
        error = exc
    elif isinstance(exc, OSError):
        error = storage_error(exc, files)
    elif isinstance(exc, NotImplementedError) and _origin(exc.__traceback__) == "store":
        error = _store_cannot(exc, files)
    elif isinstance(exc, Exception):
        error = _unexpected(exc)
    else:
        raise exc  # GeneratorExit and the like are not failures of the command
    _print_error(error, as_json)
    return error.exit_code


def report_interrupt() -> int:
    echo("interrupted; seamless.lock and the store are intact (only finished work was kept) "
         "— rerun to resume", err=True)
    return EXIT_INTERRUPTED


class UnexpectedError(QmtlLockError):
    """A failure qmtl-lock did not foresee: a bug, reported as one message like the others."""

    exit_code = EXIT_MATERIALIZE


def _unexpected(exc: Exception) -> UnexpectedError:
    if os.environ.get("QMTL_LOCK_DEBUG"):
        import traceback

        echo("".join(traceback.format_exception(exc)), err=True, nl=False)
    frame = _innermost(exc.__traceback__)
    return UnexpectedError(
        f"unexpected {type(exc).__name__}: {exc}", where=frame,
        fix="this is a bug in qmtl-lock: please report it with the command you ran; rerun with "
        "QMTL_LOCK_DEBUG=1 to see the traceback")


def _innermost(tb: TracebackType | None) -> str | None:
    where = None
    while tb is not None:
        code = tb.tb_frame.f_code
        where = f"{code.co_filename}:{tb.tb_lineno} in {code.co_name}"
        tb = tb.tb_next
    return where


# -- OS errors ---------------------------------------------------------------------------------
_REASONS: dict[int, tuple[str, str]] = {
    # errno: (what happened, what to do about it); {place} is the store or the file
    errno.EACCES: ("permission denied", "give this user read and write access to {place} "
                   "(check the owner and mode)"),
    errno.EPERM: ("operation not permitted", "make {place} writable: check the owner, the mode "
                  "and an immutable flag (`lsattr`, `chattr -i`)"),
    errno.EROFS: ("read-only file system", "the file system holding {place} is mounted "
                  "read-only: remount it read-write"),
    errno.ENOSPC: ("no space left on the device", "free space on the device holding {place}"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota on {place}, or raise "
                   "the quota"),
    errno.EFBIG: ("file too large", "a file size limit stopped the write (`ulimit -f`, or the "
                  "file system's maximum): raise it for {place}"),
}


def storage_error(exc: OSError, files: Files) -> StoreError:
    """The :class:`StoreError` for an OS error: what failed (the store, the lock or the named
    file), why, and the fix for that errno."""
    from qmtl_engine import StoreError

    path = exc.filename2 if exc.filename2 is not None else exc.filename
    path = os.fsdecode(path) if isinstance(path, str | bytes) else None
    origin = _origin(exc.__traceback__)
    store_url = files.store_url() if origin == "store" or path is not None else None
    in_store = store_url is not None and (origin == "store" or _inside(path, store_url))
    if origin == "lock" and files.lock_path() is not None:
        path = str(files.lock_path())
    detail = exc.strerror or (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    reason, fix = _REASONS.get(exc.errno or -1, (detail, "check that {place} exists and is usable"))
    fix = fix.format(place=store_url if in_store else (path or "the folder it writes to"))
    if in_store and exc.errno in _REASONS:
        fix += f", or set {files.store_setting()} to a location that works"
    thing = "the store" if in_store else (Path(path).name if path else "a file")
    context = click.get_current_context(silent=True)
    name = context.info_name if context is not None else None
    rerun = f"`qmtl-lock {name}`" if name else "the command"
    kept = " (finished partitions are kept)" if name in ("resolve", "materialize") else ""
    if exc.errno in (errno.EACCES, errno.EPERM):
        what = f"access to {thing} was refused: {reason}"
    elif exc.errno in _REASONS:
        what = f"cannot write to {thing}: {reason}"
    else:
        what = f"{thing} failed: {reason}"
    return StoreError(
        what,
        url=store_url if in_store else None, path=path, errno=exc.errno,
        fix=f"{fix}; then rerun {rerun}{kept}")


def _store_cannot(exc: NotImplementedError, files: Files) -> StoreError:
    """fsspec raises NotImplementedError for what a file system cannot do (an http:// store
    is read-only)."""
    from qmtl_engine import StoreError

    url = files.store_url()
    return StoreError(
        "the store's file system cannot do what qmtl-lock needs (write, rename, delete)"
        + (f": {exc}" if str(exc) else ""), url=url,
        fix=f"set {files.store_setting()} to a file system qmtl-lock can write: a path, "
        "file://, s3://bucket/prefix, gcs://bucket/prefix")


def _origin(tb: TracebackType | None) -> str | None:
    """Whether the innermost of our frames is the store's or the lock writer's: a bare
    ``OSError`` (ENOSPC from ``write()``) does not say which file it is about."""
    origin = None
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module == "qmtl_engine.store":
            origin = "store"
        elif module == "qmtl_lock.lockfile":
            origin = "lock"
        tb = tb.tb_next
    return origin


def _inside(path: str | None, store_url: str) -> bool:
    if path is None:
        return False
    import fsspec

    try:
        root = fsspec.core.url_to_fs(store_url)[1].strip("/")
    except (ImportError, ValueError):
        return False
    candidate = path.split("://", 1)[-1].strip("/")
    return candidate == root or candidate.startswith(root + "/")


# -- the console script ------------------------------------------------------------------------
def console_main(command: click.Command) -> NoReturn:
    """Run the command line as the ``qmtl-lock`` script does, and leave with its exit code.

    Ctrl-C anywhere prints one line and exits 130. Once the command has finished and its output
    is flushed, the process ends with ``os._exit``: interpreter shutdown (pyarrow's threads
    under load) must not turn a finished command's code into another (134, an abort).
    """
    from qmtl_lock.cli.interrupts import InterruptGuard, caused_by_interrupt

    global _guard
    _guard = InterruptGuard()
    _guard.install()
    try:
        code = _invoke(command)
    except BaseException as exc:  # an interrupt outside a command body
        _guard.hold()
        if not (caused_by_interrupt(exc) or _guard.seen):
            raise
        code = report_interrupt()
    if _guard.seen and code not in (EXIT_INTERRUPTED, EXIT_OK):
        code = report_interrupt()
    os._exit(_flushed(code))


def _invoke(command: click.Command) -> int:
    from qmtl_lock.cli.interrupts import caused_by_interrupt

    try:
        result = command.main(prog_name="qmtl-lock", standalone_mode=False)
    except SystemExit as exc:
        return _exit_code(exc.code)
    except click.exceptions.Abort as exc:  # click turns Ctrl-C (and EOF at a prompt) into Abort
        if caused_by_interrupt(exc):
            return report_interrupt()
        echo("Aborted!", err=True)
        return 1  # what click itself exits with
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return result if isinstance(result, int) else EXIT_OK


def _exit_code(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    echo(str(code), err=True)
    return 1  # what Python exits with for sys.exit("a message")


def _flushed(code: int) -> int:
    """Flush what was printed (os._exit will not); a reader that went away is SIGPIPE's code."""
    if "logging" in sys.modules:
        import logging

        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            code = code or EXIT_BROKEN_PIPE
        except (OSError, ValueError):
            pass  # a closed stream: nothing more can be said
    return code
