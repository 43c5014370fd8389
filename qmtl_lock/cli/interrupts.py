"""Ctrl-C that always stops the command: exit 130, one line, state intact.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be. Inside an import
that is a problem: a lazy import of pandas or pyarrow runs their module code, whose ``except
ImportError`` (or a C extension that turns the exception into ``SystemError``) can swallow it,
so the resolve went on and exited 0, or reported the interrupt as a source failure (exit 3).

:class:`InterruptGuard` is the console script's SIGINT handler. It records every Ctrl-C and raises
it at once, unless the main thread is inside an import: then it raises it in the frame that
started the outermost import, as soon as that import has finished (a trace function on that one
frame, the mechanism debuggers use). :func:`caused_by_interrupt` recognizes an error that an
interrupt caused.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any


def caused_by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``KeyboardInterrupt`` or was raised while handling one (an
    ``ImportError`` or ``SystemError`` from an interrupted import, a ``SourceError`` that
    wrapped those)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        stack += [current.__cause__, current.__context__]
    return False


def _import_caller(frame: FrameType | None) -> FrameType | None:
    """The frame that started the outermost import running at ``frame`` (None: no import)."""
    caller = None
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            caller = frame.f_back
        frame = frame.f_back
    return caller


def _untraced(frame: FrameType, event: str, arg: Any) -> None:
    return None  # tracing stays on for the armed frame only; every other frame runs as usual


class InterruptGuard:
    """The SIGINT handler of a real ``qmtl-lock`` process (never installed under CliRunner).

    ``seen`` is set by every Ctrl-C, raised or not: a command that ends normally after one still
    exits 130. After :meth:`hold`, a Ctrl-C is only recorded, so the final message is printed
    whole.
    """

    def __init__(self) -> None:
        self.seen = False
        self._held = False
        self._armed = False  # a Ctrl-C waits for an import to finish
        self._unraisable = sys.unraisablehook

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._on_sigint)
        sys.unraisablehook = self._on_unraisable

    def hold(self) -> None:
        self._held = True

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.seen = True
        if self._held or self._armed:
            return
        caller = _import_caller(frame)
        if caller is None:
            raise KeyboardInterrupt
        self._raise_in(caller)

    def _raise_in(self, frame: FrameType) -> None:
        """Raise ``KeyboardInterrupt`` at the next line ``frame`` runs (or when it returns)."""
        def fire(traced: FrameType, event: str, arg: Any) -> None:
            sys.settrace(None)
            traced.f_trace = None
            self._armed = False
            if not self._held:
                raise KeyboardInterrupt

        self._armed = True
        frame.f_trace = fire
        frame.f_trace_lines = True
        sys.settrace(_untraced)

    def _on_unraisable(self, unraisable: Any) -> None:
        """A Ctrl-C that landed in a finalizer (``__del__``, a weakref callback) cannot
        propagate; Python would print a traceback and go on. Raise it in the code that ran."""
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            self._unraisable(unraisable)
            return
        self.seen = True
        running = sys._getframe(1)
        target = _import_caller(running) or running
        if not (self._held or self._armed):
            self._raise_in(target)
