"""Progress shows on a terminal and stays quiet in CI (a real pseudo-terminal, real process)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

MANIFEST = """\
version: 1
datasets:
  d:
    preset: ohlcv.synthetic.crypto.1h
    symbols: [X]
    start: 2022-01-01
    end: 2024-01-01
    contract_version: v1
"""


def run_on_terminal(folder: Path, *, ci: bool) -> str:
    """Run resolve with stderr on a pseudo-terminal; return what the terminal showed."""
    main, child = pty.openpty()
    env = {**os.environ, "QMTL_LOCK_NOW": "2024-06-01T00:00:00Z"}
    env.pop("CI", None)
    if ci:
        env["CI"] = "true"
    proc = subprocess.Popen([sys.executable, "-m", "qmtl_lock.cli", "resolve"], cwd=folder,
                            env=env, stdout=subprocess.DEVNULL, stderr=child)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("ci", [False, True])
def test_progress_on_a_terminal_only_outside_ci(tmp_path: Path, ci: bool) -> None:
    (tmp_path / "seamless.yaml").write_text(MANIFEST, encoding="utf-8")
    shown = run_on_terminal(tmp_path, ci=ci)
    if ci:
        assert "partitions" not in shown
    else:
        assert "d/X: 1/2 partitions (" in shown and "d/X: 2/2 partitions (" in shown


def test_symbols_at_once_take_turns_and_each_ends_on_its_own_line(tmp_path: Path) -> None:
    (tmp_path / "seamless.yaml").write_text(MANIFEST.replace("[X]", "[X, YY, Z]"),
                                            encoding="utf-8")
    shown = run_on_terminal(tmp_path, ci=False)  # --jobs: one per core
    finished = [line.rsplit("\r", 1)[-1] for line in shown.split("\r\n") if line.strip()]
    assert sorted(line.split(":")[0].strip() for line in finished) == ["d/X", "d/YY", "d/Z"]
    assert all(": 2/2 partitions (" in line for line in finished)
