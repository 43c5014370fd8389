"""One writer of a project's seamless.lock at a time.

Two ``qmtl-lock resolve`` runs of one project would each read the old lock, materialize their
part and write their own new lock: the second write loses the first one's update. So a resolve
that may write the lock holds an exclusive lock on ``.seamless/resolve.lock`` next to
seamless.yaml from reading the old lock until the new one is in place. It is an OS file lock
(``filelock``): the kernel drops it when the process dies, so a crash or ``kill -9`` never leaves
a stale lock behind. The second writer waits, saying so, and gives up after a timeout.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from qmtl_lock.errors import ProjectBusy

DEFAULT_WAIT_S = 600.0
_POLL_S = 0.05


def lock_path(project_root: Path) -> Path:
    return project_root / ".seamless" / "resolve.lock"


def _holder(info: Path) -> str:
    try:
        text = info.read_text(encoding="utf-8").strip()
    except OSError:
        return "holder unknown"
    return text or "holder unknown"


@contextmanager
def writing_lock(project_root: Path, *, timeout_s: float = DEFAULT_WAIT_S,
                 on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the project's lock-writer lock for the ``with`` block.

    Calls ``on_wait`` once with a sentence when another writer holds it; raises
    :class:`ProjectBusy` (exit 2) when it is still held after ``timeout_s`` seconds.
    """
    from filelock import FileLock, Timeout

    path = lock_path(project_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = path.with_name("resolve.lock.owner")
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait(f"waiting for another qmtl-lock resolve of this project to finish "
                    f"({_holder(info)})…")
        try:
            lock.acquire(timeout=timeout_s, poll_interval=_POLL_S)
        except Timeout:
            raise ProjectBusy(path=path, holder=_holder(info), waited_s=timeout_s) from None
    try:
        # who holds it, for the message a waiting writer prints; not needed to lock
        with suppress(OSError):
            info.write_text(f"pid {os.getpid()} on {socket.gethostname()}\n", encoding="utf-8")
        yield
    finally:
        lock.release()
