"""Run a command in a real subprocess and SIGKILL it once a condition on disk holds."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def kill_when(command: Sequence[str], *, cwd: Path, env: Mapping[str, str],
              ready: Callable[[], bool], timeout_s: float = 60) -> None:
    """Start ``command``, poll ``ready`` and kill -9 the process the moment it is true.

    Fails if the command ends on its own first or makes no progress within ``timeout_s``.
    """
    child = subprocess.Popen(list(command), cwd=cwd, env=dict(env), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            assert child.poll() is None, "the command finished before it could be killed"
            assert time.monotonic() < deadline, "the command made no progress"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
        assert child.stderr is not None
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
