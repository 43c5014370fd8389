"""The README's copy-pasteable snippets work as written, run for real.

The 60-second tour runs as one bash script in an empty folder, with the installed ``qmtl-lock``
console script and git; the Python snippet then runs in the project the tour made (its pinned
fingerprint included), the manifest shown is the one ``qmtl-lock init`` writes, the merge-driver
setup runs in that repository, and the pre-commit hook shown is the shipped one and passes there.

Not run: ``pip install`` lines. They install packages (from this clone; CI's ``.ci/run`` runs
that install), and must not change the environment the tests run in; they are checked to install
from a local path, since qmtl-lock is not on any package index. ``python -m pytest`` in the Set
up block is this suite itself.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from qmtl_lock.init import STARTER

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README,
                      re.MULTILINE | re.DOTALL)
    assert match, f"no README section {title!r}"
    return match.group(1)


def fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def git_env() -> dict[str, str]:
    """This environment, with a git identity and no global or system git settings."""
    env = dict(os.environ)
    env.update({"GIT_AUTHOR_NAME": "Tour", "GIT_AUTHOR_EMAIL": "tour@example.invalid",
                "GIT_COMMITTER_NAME": "Tour", "GIT_COMMITTER_EMAIL": "tour@example.invalid",
                "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"})
    env.pop("QMTL_LOCK_NOW", None)
    return env


def run(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=git_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{script}\n--- stdout:\n{result.stdout}\n" \
                                   f"--- stderr:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def toured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the tour made, after running the tour's block exactly as the README has it."""
    assert shutil.which("qmtl-lock"), "the qmtl-lock console script must be installed"
    [tour] = fenced(section("A 60-second tour"), "bash")
    home = tmp_path_factory.mktemp("tour")
    run(tour, home)
    return home / "my-strategy"


def test_the_tour_pins_commits_and_verifies(toured: Path) -> None:
    log = subprocess.run(["git", "log", "--format=%s", "--name-only"], cwd=toured,
                         env=git_env(), capture_output=True, text=True, check=True).stdout
    assert log.split() == ["Pin", "data", "seamless.lock", "seamless.yaml"]
    assert (toured / ".gitignore").read_text().splitlines() == [".seamless/"]
    status = subprocess.run(["git", "status", "--porcelain"], cwd=toured, env=git_env(),
                            capture_output=True, text=True, check=True).stdout
    assert status.split() == ["??", ".gitignore"]  # the store stays out of git


def test_the_manifest_shown_is_the_one_init_writes(toured: Path) -> None:
    [shown] = [b for b in fenced(section("A 60-second tour"), "yaml")
               if b.startswith("version: 1")]
    assert yaml.safe_load(shown) == yaml.safe_load(STARTER)
    assert yaml.safe_load((toured / "seamless.yaml").read_text()) == yaml.safe_load(shown)


def test_the_python_snippet_runs_in_the_tour_project(toured: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    [snippet] = fenced(section("A 60-second tour"), "python")
    assert "sha256:…" not in snippet  # a placeholder would not run
    monkeypatch.chdir(toured)
    names: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), names)  # raises if a fingerprint differs
    assert names["table"].num_rows == 754  # AAPL sessions 2010-2012
    assert len(names["df"]) == 125  # sessions of January to June 2012


def test_the_merge_driver_setup_registers_the_driver(toured: Path) -> None:
    [setup] = [b for b in fenced(section("Team workflow: diff, merge and gc"), "bash")
               if "merge-driver" in b]
    run(setup, toured)
    attr = subprocess.run(["git", "check-attr", "merge", "seamless.lock"], cwd=toured,
                          env=git_env(), capture_output=True, text=True, check=True).stdout
    assert attr.strip() == "seamless.lock: merge: qmtl-lock"
    driver = subprocess.run(["git", "config", "merge.qmtl-lock.driver"], cwd=toured,
                            env=git_env(), capture_output=True, text=True, check=True).stdout
    assert driver.strip() == "qmtl-lock merge-driver %O %A %B"


def test_the_pre_commit_hook_shown_is_the_shipped_one_and_passes(toured: Path) -> None:
    [config] = [b for b in fenced(section("In CI"), "yaml") if "pre-commit-config" in b]
    [local] = yaml.safe_load(config)["repos"]
    assert local["repo"] == "local"
    [hook] = local["hooks"]
    [shipped] = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    for key in ("id", "name", "entry", "files", "pass_filenames"):
        assert hook[key] == shipped[key], key
    assert re.search(hook["files"], "seamless.lock") and re.search(hook["files"], "presets.yaml")
    run(hook["entry"], toured)  # pre-commit runs the entry without file names: lock in sync


def test_install_lines_install_from_a_local_path() -> None:
    """qmtl-lock is on no package index: every pip line installs a path (or its extras)."""
    lines = [line.split("#")[0] for lang in ("bash", "yaml") for b in fenced(README, lang)
             for line in b.splitlines()]
    installs = [seg for line in lines for seg in line.split("&&") if "pip install" in seg]
    assert len(installs) >= 3
    for seg in installs:
        words = shlex.split(seg.split("run:")[-1])
        targets = [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
        assert targets, seg
        for target in targets:
            assert target.startswith((".", "/")), seg
    assert "pip install qmtl-lock" not in README
    assert "pip install qmtl-lock" not in (ROOT / "examples/ci/github-actions.yml").read_text()
