"""Real file-system faults for tests: read-only mounts, full disks, immutable files.

The tests run as root, and ``chmod`` does not stop root, so each fault is one the kernel enforces
for root too: a read-only bind mount or tmpfs (EROFS), a small tmpfs filled to the brim (ENOSPC),
the immutable attribute (``chattr +i``: EPERM). Each helper is a context manager that undoes its
fault on exit, and skips the test with the kernel's own words when the fault cannot be made.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _sh(*argv: str, skip: str) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"{skip}: `{' '.join(argv)}` failed: {proc.stderr.strip()}")


def _undo(*argv: str) -> None:
    subprocess.run(list(argv), capture_output=True, check=True)


@contextmanager
def read_only_bind(path: Path) -> Iterator[Path]:
    """``path`` (a folder) bind-mounted onto itself, read-only."""
    _sh("mount", "--bind", str(path), str(path), skip="cannot bind-mount")
    try:
        _sh("mount", "-o", "remount,bind,ro", str(path), skip="cannot remount read-only")
        yield path
    finally:
        _undo("umount", str(path))


@contextmanager
def tmpfs(path: Path, *, size: str = "256k", read_only: bool = False) -> Iterator[Path]:
    """A fresh tmpfs of ``size`` on ``path`` (created if missing)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    _sh("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path), skip="cannot mount a tmpfs")
    try:
        yield path
    finally:
        _undo("umount", str(path))


def fill(folder: Path) -> None:
    """Write a filler file into ``folder`` until its file system has no space left."""
    chunk = b"\0" * 4096
    fd = os.open(folder / ".filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, chunk)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


@contextmanager
def immutable(path: Path, *, recursive: bool = False) -> Iterator[Path]:
    """``path`` (and with ``recursive`` all below it) made immutable: even root gets EPERM."""
    flags = ["-R"] if recursive else []
    _sh("chattr", *flags, "+i", str(path), skip="cannot set the immutable attribute")
    try:
        yield path
    finally:
        _undo("chattr", *flags, "-i", str(path))
