"""``qmtl-lock pins push|list|remove`` in real git repositories: what a pin file holds, how the
project and ref are named when not given, a push that waits for a running gc, and the README's
CI snippet."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from gc_repo import at
from qmtl_engine import Store, StoredPin
from shared_projects import Project, make_project, store_paths, two_projects

from qmtl_lock.cli import cli
from qmtl_lock.pins import key_name, push_pins

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def alpha(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Project:
    project, _ = two_projects(tmp_path, store_url, monkeypatch)
    project.git("remote", "add", "origin", "git@github.com:acme/research.git")
    project.resolve()
    project.commit("pin")
    return project


def _pin(store: Store, project: str, ref: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(store.fs.cat_file(store.pin_path(project, ref)))
    return data


def test_push_registers_every_fingerprint_of_the_lock(alpha: Project) -> None:
    out = alpha.run("pins", "push").output
    assert out == ("registered 2 fingerprints of project research@main in "
                   f"{alpha.store.display(alpha.store.pin_path('research', 'main'))}\n")
    lock = (alpha.root / "seamless.lock").read_bytes()
    fps = alpha.pins()
    assert _pin(alpha.store, "research", "main") == {
        "pin_version": 1, "project": "research", "ref": "main",
        "lock_digest": "sha256:" + hashlib.sha256(lock).hexdigest(), "pushed_at": at(0),
        "commit": alpha.git("rev-parse", "HEAD").strip(),
        "fingerprints": {fps["a"]: ["a/BTCUSDT"], fps["b"]: ["b/ETHUSDT"]}}

    listed = alpha.run("pins", "list").output.splitlines()
    assert listed[1:] == [f"  project research@main: 2 fingerprints, pushed {at(0)}, commit "
                          f"{alpha.git('rev-parse', 'HEAD')[:12]} (pins/research/main.json)"]
    data = json.loads(alpha.run("pins", "list", "--json").stdout)
    assert [(p["project"], p["ref"], p["fingerprints"], p["problem"]) for p in data["pins"]] == [
        ("research", "main", 2, None)]

    alpha.run("pins", "push")  # the same lock again: the same file
    assert [p.path for p in alpha.store.pins()] == ["pins/research/main.json"]

    alpha.run("pins", "remove", "--project", "research", "--ref", "main")
    assert alpha.store.pins() == ()
    again = alpha.run("pins", "remove", "--project", "research", "--ref", "main").output
    assert "no pins of project research@main" in again and "nothing to remove" in again


@pytest.mark.parametrize("store_url", ["local"], indirect=True)  # names do not touch the store
def test_project_and_ref_names(alpha: Project, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    alpha.git("checkout", "-q", "-b", "release/1.2")
    assert push_pins(alpha.manifest).path.endswith("pins/research/release-1.2.json")
    assert _pin(alpha.store, "research", "release-1.2")["ref"] == "release/1.2"
    [pin] = [p for p in alpha.store.pins() if p.ref == "release/1.2"]
    assert pin.label == "project research@release/1.2"

    alpha.git("remote", "set-url", "origin", "https://github.com/acme/alpha-strats")
    assert push_pins(alpha.manifest).project == "alpha-strats"
    alpha.git("remote", "remove", "origin")
    assert push_pins(alpha.manifest).project == "alpha"  # the work tree's folder
    assert push_pins(alpha.manifest, project="Quant Book!", ref="main").project == "Quant-Book"

    # detached, as CI checks out: the CI's branch variable, else --ref
    alpha.git("checkout", "-q", "--detach")
    result = alpha.run("pins", "push", code=2)
    assert "cannot tell which ref these pins are for: HEAD is detached" in result.output
    assert "pass --ref NAME" in result.output
    monkeypatch.setenv("GITHUB_REF_NAME", "main")
    assert push_pins(alpha.manifest).ref == "main"

    mono = make_project(tmp_path / "mono", alpha.store_url)
    (mono.root / "strategies" / "a").mkdir(parents=True)
    nested = Project(mono.root / "strategies" / "a", alpha.store_url)
    nested.manifest.write_text(alpha.manifest.read_text(), encoding="utf-8")
    (nested.root / "seamless.lock").write_bytes((alpha.root / "seamless.lock").read_bytes())
    mono.commit("two projects in one repository")
    monkeypatch.delenv("GITHUB_REF_NAME")
    assert (push_pins(nested.manifest).project, push_pins(nested.manifest).ref) == (
        "mono-strategies-a", "main")

    outside = tmp_path / "plain"
    outside.mkdir()
    (outside / "seamless.yaml").write_text(alpha.manifest.read_text(), encoding="utf-8")
    (outside / "seamless.lock").write_bytes((alpha.root / "seamless.lock").read_bytes())
    plain = Project(outside, alpha.store_url)
    assert "this project is not in a git repository" in plain.run("pins", "push",
                                                                   code=2).output
    assert push_pins(plain.manifest, ref="main").project == "plain"

    assert alpha.run("pins", "push", "--project", "///", code=2).output.count(
        "--project '///' leaves no name for the store key") == 1
    assert key_name(" feature/x y ") == "feature-x-y"


@pytest.mark.parametrize("store_url", ["local"], indirect=True)  # the check is has_snapshot
def test_push_says_when_the_store_lacks_what_the_lock_pins(alpha: Project) -> None:
    store = alpha.store
    first = sorted(alpha.pins().values())[0]
    store.remove(f"snapshots/{first[7:9]}/{first[7:]}.json")
    out = alpha.run("pins", "push", code=3).output
    assert ("registered the pins of project research@main, but 1 of the 2 snapshots the lock "
            f"pins are not in the store (first {first}): gc cannot keep what is gone") in out
    assert "qmtl-lock resolve --frozen" in out
    assert [p.path for p in store.pins()] == ["pins/research/main.json"]


def test_push_waits_for_a_running_gc(alpha: Project) -> None:
    store = alpha.store
    waiting = threading.Event()
    said: list[str] = []
    pushed: list[object] = []

    def push() -> None:
        try:
            pushed.append(push_pins(alpha.manifest, on_wait=lambda t: (said.append(t),
                                                                       waiting.set())))
        except BaseException as exc:  # reported by the main thread
            pushed.append(exc)
            waiting.set()

    lock = store.gc_lock("gc in the way").acquire()
    thread = threading.Thread(target=push)
    try:
        thread.start()
        assert waiting.wait(60), "the push never reached the store"
        assert store.pins() == ()  # not while gc runs
        assert not any(p.startswith("leases/") for p in store_paths(store))  # stepped back
    finally:
        lock.release()
        thread.join(120)
    assert len(said) == 1 and "waiting for gc to finish on the store" in said[0]
    assert "gc in the way" in said[0]
    assert [type(p).__name__ for p in pushed] == ["PinPush"]
    assert [p.label for p in store.pins()] == ["project research@main"]
    assert not any(p.startswith(("leases/", "locks/")) for p in store_paths(store))


def test_an_unreadable_pin_is_listed_with_its_problem(alpha: Project) -> None:
    store = alpha.store
    path = store.pin_path("gamma", "main")
    if not alpha.store_url.startswith("s3://"):
        store.fs.makedirs(path.rpartition("/")[0], exist_ok=True)
    store.fs.pipe_file(path, b"[1, 2]")
    assert store.pins() == (StoredPin("pins/gamma/main.json", "gamma", "main",
                                      problem="it is not a JSON object"),)
    assert "pins/gamma/main.json: cannot be read: it is not a JSON object" in alpha.run(
        "pins", "list").output


def test_the_readme_ci_snippet_names_real_commands_and_options() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Sharing a store between projects\n(.*?)(?=^## |\Z)", readme,
                        re.MULTILINE | re.DOTALL)
    assert section, "no README section 'Sharing a store between projects'"
    blocks = re.findall(r"^```(?:yaml|bash)\n(.*?)^```$", section.group(1),
                        re.MULTILINE | re.DOTALL)
    commands = [part.split("qmtl-lock", 1)[1]
                for block in blocks for line in block.splitlines()
                for part in line.split("#")[0].split("&&") if "qmtl-lock " in part]
    assert {tuple(c.split()[:2]) for c in commands} >= {
        ("pins", "push"), ("pins", "list"), ("pins", "remove"), ("verify",)}
    for command in commands:
        args = shlex.split(command.replace("${{ github.ref_name }}", "main"))
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0, (command, result.output)
