"""The one module that runs git: a file (``seamless.lock``) as git knows it.

``diff --git REV`` reads the lock at one revision; ``gc`` reads it at HEAD, at ``--keep-revs``,
at every ref tip and at every commit of the history; ``pins push`` asks for the branch and the
remote that name the project's pins. Both go through :class:`GitFile`, and every
failure is a :class:`~qmtl_lock.errors.GitError` (exit 2).

gc deletes what no lock in the history pins, so a history that git could not read must never
look like an empty one: "not a repository" is believed only when no ``.git`` is there either, a
repository without commits only when HEAD names no commit, and a lock absent at a revision only
when that revision's tree was read and does not list it. Anything else git says is an error.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qmtl_lock.errors import GitError

_UNKNOWN_REVISION_FIX = "pass a branch, tag or commit that `git log --oneline --all` shows"
_DUBIOUS = re.compile(r"dubious ownership in repository at '([^']+)'")
_TREE, _GITLINK = b"40000", b"160000"


class _GitMissing(GitError):
    """git itself could not be started."""


def _git(folder: Path, *args: str,
         stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run git in ``folder``; a missing git is a :class:`GitError`, a failing one is not."""
    # LC_ALL=C: git's own words ("not a git repository") are then the same in every language
    env = {**os.environ, "LC_ALL": "C"}
    try:
        return subprocess.run(["git", "-C", str(folder), *args], input=stdin, env=env,
                              capture_output=True, check=False)
    except FileNotFoundError:
        raise _GitMissing("git is not installed (or not on PATH)", fix="install git") from None
    except OSError as exc:
        raise _GitMissing(f"git could not be run: {exc}", fix="install git") from None


def _said(proc: subprocess.CompletedProcess[bytes]) -> str:
    """What git said when it failed: its ``fatal:``/``error:`` lines, else all of stderr."""
    text = proc.stderr.decode(errors="replace").strip()
    lines = [line for line in text.splitlines() if line.startswith(("fatal:", "error:"))]
    return " ".join(lines) or text or f"exit status {proc.returncode}"


def _failed(proc: subprocess.CompletedProcess[bytes], args: Sequence[str], folder: Path,
            otherwise: str | None) -> GitError:
    """The error for a git command that failed in ``folder``, with the fix for its cause."""
    dubious = _DUBIOUS.search(proc.stderr.decode(errors="replace"))
    fix = (f"if you trust the repository, run `git config --global --add safe.directory "
           f"{dubious[1]}`" if dubious
           else "check the repository with `git status` and `git fsck`")
    return GitError(f"`git {' '.join(args)}` failed: {_said(proc)}", where=str(folder),
                    fix=f"{fix}, or {otherwise}" if otherwise else fix)


def _repository_marker(folder: Path) -> Path | None:
    """The ``.git`` that makes ``folder`` part of a work tree, looked for the way git looks
    (up to a ``GIT_CEILING_DIRECTORIES`` entry); ``$GIT_DIR`` when set. None: there is none."""
    if os.environ.get("GIT_DIR"):
        return Path(os.environ["GIT_DIR"])
    ceilings = {Path(p).resolve() for p in
                os.environ.get("GIT_CEILING_DIRECTORIES", "").split(os.pathsep) if p}
    here = folder.resolve()
    while True:
        if (here / ".git").exists():
            return here / ".git"
        if here.parent == here or here.parent in ceilings:
            return None
        here = here.parent


def _locate(file: Path, otherwise: str | None) -> tuple[Path, str] | None:
    """Where git runs for ``file`` (its folder, or the nearest one that exists) and the file's
    path from the top of its work tree; None outside any. Raises :class:`GitError` when git
    fails, or calls a folder with a ``.git`` no repository."""
    folder, below = file.absolute().parent, file.name
    while not folder.is_dir() and folder.parent != folder:  # a file no revision may have yet
        folder, below = folder.parent, f"{folder.name}/{below}"
    prefix = _prefix(folder, otherwise)
    return None if prefix is None else (folder, prefix + below)


def _prefix(folder: Path, otherwise: str | None) -> str | None:
    """``folder`` from the top of its work tree (``""`` at the top); None outside any."""
    args = ("rev-parse", "--show-prefix")
    found = _git(folder, *args)
    if found.returncode == 0:
        return found.stdout.decode().strip()
    if "not a git repository" in _said(found):
        marker = _repository_marker(folder)
        if marker is None:
            return None
        raise GitError(f"git does not read {marker} as a repository: {_said(found)}",
                       where=str(folder),
                       fix="check the repository with `git status` and `git fsck`"
                       + (f", or {otherwise}" if otherwise else ""))
    raise _failed(found, args, folder, otherwise)


@dataclass(frozen=True)
class GitFile:
    """One file of a git work tree: at HEAD, at given revisions, at ref tips, in history."""

    folder: Path  # the file's folder: where git runs
    path: str  # the file's path from the top of the work tree
    otherwise: str | None = field(default=None, compare=False)  # the way without git, for fixes

    @classmethod
    def of(cls, file: Path, *, otherwise: str) -> GitFile:
        """The repository holding ``file``. Raises :class:`GitError` when git is not installed,
        fails, or ``file`` is in no repository; the fix offers ``otherwise``, the way without
        git."""
        try:
            found = _locate(file, otherwise)
        except _GitMissing as exc:
            raise GitError(exc.what, fix=f"install git, or {otherwise}") from None
        if found is None:
            raise GitError(f"{file.absolute().parent} is not inside a git repository",
                           where=str(file), fix=f"run it inside your repository, or {otherwise}")
        return cls(*found, otherwise)

    @classmethod
    def find(cls, file: Path, *, otherwise: str | None = None) -> GitFile | None:
        """The repository holding ``file``, or None outside one: git says it is not in one and
        no ``.git`` says otherwise, or git is not installed and there is no ``.git`` either.

        Raises :class:`GitError` for every other answer: git refuses the repository (dubious
        ownership), the repository is damaged, or git is missing where a ``.git`` is present.
        """
        try:
            found = _locate(file, otherwise)
        except _GitMissing as exc:
            folder = file.absolute().parent
            marker = _repository_marker(folder)
            if marker is None:
                return None
            raise GitError(f"{exc.what}, and {folder} is in a git repository ({marker})",
                           where=str(file), fix="install git"
                           + (f", or {otherwise}" if otherwise else "")) from None
        return None if found is None else cls(*found, otherwise)

    def label(self, rev: str) -> str:
        """How the file at ``rev`` is named to the user: ``main:seamless.lock``."""
        return f"{rev}:{self.path}"

    def _output(self, *args: str, stdin: bytes | None = None) -> bytes:
        proc = _git(self.folder, *args, stdin=stdin)
        if proc.returncode != 0:
            raise _failed(proc, args, self.folder, self.otherwise)
        return proc.stdout

    def _damaged(self, what: str) -> GitError:
        return GitError(f"the git repository cannot give {what}: it is damaged",
                        where=str(self.folder),
                        fix="`git fsck` names what is missing; restore it (clone the repository "
                        "again)" + (f", or {self.otherwise}" if self.otherwise else ""))

    def commit(self, rev: str) -> str:
        """The commit ``rev`` names; :class:`GitError` (exit 2) if it names none."""
        args = ("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
        proc = _git(self.folder, *args)
        if proc.returncode != 0 and proc.stderr.strip():  # --quiet: git said something else
            raise _failed(proc, args, self.folder, self.otherwise)
        if proc.returncode != 0 or not rev:
            raise GitError(f"unknown git revision {rev!r}", where=str(self.folder), revision=rev,
                           fix=_UNKNOWN_REVISION_FIX)
        return proc.stdout.decode().strip()

    def has_head(self) -> bool:
        """False in a repository without commits yet (HEAD names a branch that does not exist);
        :class:`GitError` when git cannot tell."""
        args = ("rev-parse", "--verify", "--quiet", "HEAD")
        proc = _git(self.folder, *args)
        if proc.returncode == 0:
            return True
        if proc.returncode == 1 and not proc.stderr.strip():
            return False
        raise _failed(proc, args, self.folder, self.otherwise)

    def branch(self) -> str | None:
        """The branch checked out (``main``, ``release/1.2``); None when HEAD is detached."""
        return self._maybe("symbolic-ref", "--quiet", "--short", "HEAD")

    def remote_url(self, name: str = "origin") -> str | None:
        """The URL of remote ``name``; None when there is no such remote."""
        return self._maybe("config", "--get", f"remote.{name}.url")

    def _maybe(self, *args: str) -> str | None:
        """The output of a git query that answers "none" with exit 1 and nothing on stderr
        (a detached HEAD, a remote that is not set); any other failure raises."""
        proc = _git(self.folder, *args)
        if proc.returncode == 0:
            return proc.stdout.decode().strip() or None
        if proc.returncode == 1 and not proc.stderr.strip():
            return None
        raise _failed(proc, args, self.folder, self.otherwise)

    def top(self) -> Path:
        """The top folder of the work tree."""
        return Path(self._output("rev-parse", "--show-toplevel").decode().strip())

    def ref_tips(self) -> list[tuple[str, str]]:
        """``(short name, full ref name)`` of every branch, remote branch and tag that names a
        commit (a tag of a tree counts; one of a blob has no lock to read)."""
        out = self._output("for-each-ref",
                           "--format=%(refname:short)%00%(refname)%00%(objecttype)%00"
                           "%(*objecttype)", "refs/heads", "refs/remotes", "refs/tags").decode()
        tips = []
        for line in out.splitlines():
            short, full, kind, peeled = [*line.split("\0"), "", "", ""][:4]
            if full and not full.endswith("/HEAD") and (peeled or kind) in ("commit", "tree"):
                tips.append((short, full))
        return tips

    def history(self) -> list[str]:
        """Every commit reachable from a ref or still in a reflog (amended, rebased away)."""
        return self._output("rev-list", "--all", "--reflog").decode().split()

    def text_at(self, rev: str) -> str | None:
        """The file's text at ``rev``; None where the revision has no such file."""
        return self.texts_at([rev])[rev]

    def texts_at(self, revs: Sequence[str]) -> dict[str, str | None]:
        """The file's text at each revision (None where it has none). Raises
        :class:`GitError` when an object on the way cannot be read."""
        if not revs:
            return {}
        blob_of = self._blobs_at(revs)
        texts = self._read(sorted({b for b in blob_of.values() if b}), "blob")
        return {rev: (texts[b].decode("utf-8", errors="replace") if b else None)
                for rev, b in blob_of.items()}

    def _blobs_at(self, revs: Sequence[str]) -> dict[str, str | None]:
        """The file's blob at each revision, None where its tree does not list it.

        The trees are walked here, not named ``REV:PATH``: git answers "missing" alike for a
        path a tree does not list and for an object the repository lost, and only the first
        means "this revision has no lock".
        """
        node: dict[str, str | None] = dict(zip(revs, self._root_trees(revs), strict=True))
        *folders, name = os.fsencode(self.path).split(b"/")
        for part in folders:
            node = self._step(node, part, want_tree=True)
        return self._step(node, name, want_tree=False)

    def _root_trees(self, revs: Sequence[str]) -> list[str]:
        specs = [f"{rev}^{{tree}}" for rev in revs]
        out = self._output("cat-file", "--batch-check=%(objectname) %(objecttype)",
                           stdin="".join(s + "\n" for s in specs).encode()).decode()
        trees = []
        for rev, line in zip(revs, out.splitlines(), strict=True):
            oid, _, kind = line.partition(" ")
            if kind != "tree":
                raise self._damaged(f"the tree of {rev}")
            trees.append(oid)
        return trees

    def _step(self, node: dict[str, str | None], name: bytes, *,
              want_tree: bool) -> dict[str, str | None]:
        """One level down: the entry ``name`` of each revision's tree (a tree, or a file)."""
        trees = self._read(sorted({t for t in node.values() if t}), "tree")
        out: dict[str, str | None] = {}
        for rev, tree in node.items():
            entry = _tree_entry(trees[tree], name, len(tree) // 2) if tree else None
            fits = entry is not None and entry[0] != _GITLINK and (entry[0] == _TREE) == want_tree
            out[rev] = entry[1] if entry is not None and fits else None
        return out

    def _read(self, oids: list[str], kind: str) -> dict[str, bytes]:
        """The content of each object, which must exist and be a ``kind``."""
        if not oids:
            return {}
        data = self._output("cat-file", "--batch", stdin="".join(o + "\n" for o in oids).encode())
        found: dict[str, bytes] = {}
        pos = 0
        for oid in oids:  # each: "<oid> <type> <size>\n<content>\n", or "<oid> missing\n"
            end = data.index(b"\n", pos)
            header = data[pos:end].split()
            if len(header) != 3 or header[1] != kind.encode():
                raise self._damaged(f"{kind} {oid}")
            size = int(header[2])
            found[oid] = data[end + 1:end + 1 + size]
            pos = end + 1 + size + 1
        return found


def _tree_entry(tree: bytes, name: bytes, oid_size: int) -> tuple[bytes, str] | None:
    """``(mode, object id)`` of ``name`` in a raw tree object (entries: ``<mode> <name>\\0``
    then the binary id), or None when the tree does not list it."""
    pos = 0
    while pos < len(tree):
        space = tree.index(b" ", pos)
        nul = tree.index(b"\0", space)
        if tree[space + 1:nul] == name:
            return tree[pos:space], tree[nul + 1:nul + 1 + oid_size].hex()
        pos = nul + 1 + oid_size
    return None
