"""The one module that runs git: a file (``seamless.lock``) as git knows it.

``diff --git REV`` reads the lock at one revision; ``gc`` reads it at HEAD, at ``--keep-revs``,
at every ref tip and at every commit of the history. Both go through :class:`GitFile`, and every
failure is a :class:`~qmtl_lock.errors.GitError` (exit 2).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qmtl_lock.errors import GitError

_UNKNOWN_REVISION_FIX = "pass a branch, tag or commit that `git log --oneline --all` shows"


def _git(folder: Path, *args: str,
         stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run git in ``folder``; a missing git is a :class:`GitError`, a failing one is not."""
    try:
        # -C, not cwd=: a folder that does not exist is then git's "not a repository"
        return subprocess.run(["git", "-C", str(folder), *args], input=stdin,
                              capture_output=True, check=False)
    except FileNotFoundError:
        raise GitError("git is not installed (or not on PATH)", fix="install git") from None


def _prefix(folder: Path) -> str | None:
    """``folder`` from the top of its work tree (``""`` at the top); None outside one."""
    found = _git(folder, "rev-parse", "--show-prefix")
    return found.stdout.decode().strip() if found.returncode == 0 else None


@dataclass(frozen=True)
class GitFile:
    """One file of a git work tree: at HEAD, at given revisions, at ref tips, in history."""

    folder: Path  # the file's folder: where git runs
    path: str  # the file's path from the top of the work tree

    @classmethod
    def of(cls, file: Path, *, otherwise: str) -> GitFile:
        """The repository holding ``file``. Raises :class:`GitError` when git is not installed
        or ``file`` is in no repository; the fix offers ``otherwise``, the way without git."""
        folder = file.absolute().parent
        try:
            prefix = _prefix(folder)
        except GitError as exc:
            raise GitError(exc.what, fix=f"install git, or {otherwise}") from None
        if prefix is None:
            raise GitError(f"{folder} is not inside a git repository", where=str(file),
                           fix=f"run it inside your repository, or {otherwise}")
        return cls(folder, prefix + file.name)

    @classmethod
    def find(cls, file: Path) -> GitFile | None:
        """The repository holding ``file``, or None outside one (or without git)."""
        folder = file.absolute().parent
        try:
            prefix = _prefix(folder)
        except GitError:
            return None
        return None if prefix is None else cls(folder, prefix + file.name)

    def label(self, rev: str) -> str:
        """How the file at ``rev`` is named to the user: ``main:seamless.lock``."""
        return f"{rev}:{self.path}"

    def _output(self, *args: str, stdin: bytes | None = None) -> bytes:
        proc = _git(self.folder, *args, stdin=stdin)
        if proc.returncode != 0:
            raise GitError(f"`git {' '.join(args)}` failed: "
                           f"{proc.stderr.decode(errors='replace').strip()}",
                           where=str(self.folder), fix="check the repository with `git status`")
        return proc.stdout

    def commit(self, rev: str) -> str:
        """The commit ``rev`` names; :class:`GitError` (exit 2) if it names none."""
        proc = _git(self.folder, "rev-parse", "--verify", "--quiet", "--end-of-options",
                    f"{rev}^{{commit}}")
        if proc.returncode != 0 or not rev:
            raise GitError(f"unknown git revision {rev!r}", where=str(self.folder), revision=rev,
                           fix=_UNKNOWN_REVISION_FIX)
        return proc.stdout.decode().strip()

    def has_head(self) -> bool:
        """False in a repository without commits yet."""
        return _git(self.folder, "rev-parse", "--verify", "--quiet", "HEAD").returncode == 0

    def ref_tips(self) -> list[tuple[str, str]]:
        """``(short name, full ref name)`` of every branch, remote branch and tag."""
        out = self._output("for-each-ref", "--format=%(refname:short)%00%(refname)",
                           "refs/heads", "refs/remotes", "refs/tags").decode()
        tips = []
        for line in out.splitlines():
            short, _, full = line.partition("\0")
            if full and not full.endswith("/HEAD"):
                tips.append((short, full))
        return tips

    def history(self) -> list[str]:
        """Every commit reachable from a ref or still in a reflog (amended, rebased away)."""
        return self._output("rev-list", "--all", "--reflog").decode().split()

    def text_at(self, rev: str) -> str | None:
        """The file's text at ``rev``; None where the revision has no such file."""
        return self.texts_at([rev])[rev]

    def texts_at(self, revs: Sequence[str]) -> dict[str, str | None]:
        """The file's text at each revision (None where it has none), in two git calls."""
        if not revs:
            return {}
        specs = [self.label(rev) for rev in revs]
        out = self._output("cat-file", "--batch-check", stdin="".join(
            s + "\n" for s in specs).encode()).decode().splitlines()
        blob_of: dict[str, str | None] = {}
        for rev, line in zip(revs, out, strict=True):
            bits = line.split()
            blob_of[rev] = bits[0] if len(bits) == 3 and bits[1] == "blob" else None
        texts = self._read_blobs(sorted({b for b in blob_of.values() if b}))
        return {rev: (texts[b] if b else None) for rev, b in blob_of.items()}

    def _read_blobs(self, blobs: list[str]) -> dict[str, str]:
        if not blobs:
            return {}
        data = self._output("cat-file", "--batch",
                            stdin="".join(b + "\n" for b in blobs).encode())
        texts: dict[str, str] = {}
        pos = 0
        for blob in blobs:  # each: "<sha> blob <size>\n<content>\n"
            end = data.index(b"\n", pos)
            size = int(data[pos:end].split()[2])
            texts[blob] = data[end + 1:end + 1 + size].decode("utf-8", errors="replace")
            pos = end + 1 + size + 1
        return texts
