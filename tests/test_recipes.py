"""The CI and editor recipes we ship point at commands and options that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from qmtl_lock.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def qmtl_invocations(text: str) -> list[list[str]]:
    """Every `qmtl-lock ...` command line in a shell snippet."""
    found = []
    pattern = r"(?:^|&&[ \t]*|run:[ \t]*|\|\|[ \t]*)qmtl-lock[ \t]+([a-z][^\n|&#`\"']*)"
    for match in re.finditer(pattern, text, re.MULTILINE):
        words = shlex.split(match.group(1).replace("${{ github.base_ref }}", "main"))
        found.append(words)
    return found


def assert_parses(words: list[str]) -> None:
    command = cli.commands.get(words[0])
    assert command is not None, f"no qmtl-lock command {words[0]!r}"
    ctx = command.make_context(words[0], [w for w in words[1:] if not w.startswith("%")] +
                               (["a", "b", "c"] if words[0] == "merge-driver" else []),
                               resilient_parsing=False)
    assert ctx is not None


def test_pre_commit_hook_runs_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    [hook] = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "qmtl-lock-check" and hook["pass_filenames"] is False
    assert re.search(hook["files"], "seamless.lock") and re.search(hook["files"], "a/seamless.yaml")
    words = shlex.split(hook["entry"])
    assert words[0] == "qmtl-lock"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seamless.yaml").write_text(
        "version: 1\ndatasets: {}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, words[1:])
    assert result.exit_code == 1 and "does not exist" in result.output  # no lock yet: drift


def test_example_workflow_uses_real_commands() -> None:
    text = (ROOT / "examples" / "ci" / "github-actions.yml").read_text()
    yaml.safe_load(text)
    invocations = qmtl_invocations(text)
    assert {w[0] for w in invocations} >= {"check", "diff", "resolve", "verify"}
    for words in invocations:
        assert_parses(words)


def test_readme_commands_exist() -> None:
    """Every `qmtl-lock ...` line in the README's shell blocks parses with the real CLI."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|yaml)\n(.*?)```", text, re.DOTALL)
    lines = [line.split("#")[0] for block in blocks for line in block.splitlines()]
    invocations = qmtl_invocations("\n".join(lines))
    assert len(invocations) > 15
    for words in invocations:
        assert_parses([w for w in words if w not in {"&&"}])


def test_demo_files_reference_the_schemas() -> None:
    for path, schema in [("seamless.yaml", "schemas/seamless.schema.json"),
                         ("examples/strategy/seamless.yaml",
                          "../../schemas/seamless.schema.json"),
                         ("engine/data/presets.yaml", "../../schemas/presets.schema.json")]:
        first = (ROOT / path).read_text().splitlines()[0]
        assert first == f"# yaml-language-server: $schema={schema}"
        assert (ROOT / path).parent.joinpath(schema).resolve().exists()
