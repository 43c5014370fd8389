"""Verify throughput, against plain sha256 and plain Parquet reads of the same objects.

A temporary project is resolved (setup, not timed), then ``qmtl_lock.verify.verify`` re-reads and
re-hashes every partition the lock pins. Its throughput in MB/s of canonical column bytes (8 bytes
per value, plus one validity byte per row of a column with nulls) and rows/s is compared with,
in the same run and on the same data:

- ``hashlib.sha256`` over the same column buffers, already in memory (the hashing floor);
- ``qmtl_engine.fingerprint.partition_digest`` on the same in-memory tables (canonicalize + hash);
- ``pyarrow.parquet.read_table`` of the same object files, one call per file (as verify does)
  and one multi-threaded call over the list of files (the decoding floor);
- a minimal re-implementation: per file, ``pq.read_table`` then ``partition_digest``. Reading and
  hashing each file in turn costs more than the two measured apart (cache and allocator effects),
  so that gap is shown on its own line.

The objects were just written, so every read comes from the page cache, for verify and for the
references alike.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from _common import (
    DATASET,
    PYTHON,
    SYMBOL,
    Report,
    cli_exe,
    expected_rows,
    mb,
    median_cmds,
    median_time,
    object_paths,
    parser,
    ratio,
    secs,
    step,
    temp_project,
    timed,
)

RUNS = 5


def canonical_bytes(tables: list[Any]) -> int:
    total = 0
    for t in tables:
        for col in t.columns:
            total += len(col) * 8 + (len(col) if col.null_count else 0)
    return total


# The floor of issue 11, as a whole process: read every object file with pyarrow and sha256 its
# column buffers, one file after another, nothing else.
FLOOR = """\
import hashlib, sys
import pyarrow as pa, pyarrow.parquet as pq
h = hashlib.sha256()
for path in open(sys.argv[1]).read().split("\\n"):
    for col in pq.ParquetFile(path).read().columns:
        for chunk in col.chunks:
            h.update(chunk.buffers()[1])
print(h.hexdigest())
"""


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rep = Report(f"verify: {args.years} year(s) of 1-minute bars, one symbol")

    import pyarrow as pa
    import pyarrow.parquet as pq
    import qmtl_engine.materialize  # noqa: F401  (imported by verify lazily; a per-process cost)
    from qmtl_engine.fingerprint import partition_digest

    from qmtl_lock.resolve import resolve
    from qmtl_lock.verify import verify

    with temp_project(args.years) as project:
        manifest = project / "seamless.yaml"
        step(f"setup: resolve {args.years} year(s) (not timed)")
        t_setup, res = timed(lambda: resolve(manifest))
        locked_rows = res.lock.datasets[DATASET].symbols[SYMBOL].rows
        assert locked_rows == expected_rows(args.years)
        paths = object_paths(project)

        step(f"qmtl_lock.verify.verify (median of {RUNS})")
        first = verify(manifest)
        assert not first.problems, [p.line() for p in first.problems]
        t_verify = median_time(lambda: verify(manifest), RUNS)

        step("`qmtl-lock verify` and the floor as subprocesses (median of 3)")
        listing = project / "objects.txt"
        listing.write_text("\n".join(paths), encoding="utf-8")
        procs = median_cmds({"verify": [cli_exe(), "verify"],
                             "floor": [PYTHON, "-c", FLOOR, str(listing)]}, runs=3, cwd=project)
        t_cli, t_floor = procs["verify"], procs["floor"]

        step(f"reference: pq.read_table per object file (median of {RUNS})")
        t_read_loop = median_time(lambda: [pq.read_table(p) for p in paths], RUNS)
        step(f"reference: one pq.read_table over the list of files (median of {RUNS})")
        t_read_multi = median_time(lambda: pq.read_table(paths), RUNS)

        tables = [pq.read_table(p) for p in paths]
        rows = sum(t.num_rows for t in tables)
        nbytes = canonical_bytes(tables)
        buffers = []
        for t in tables:
            for col in t.columns:
                arr = col.combine_chunks()
                if pa.types.is_timestamp(arr.type):
                    arr = arr.cast(pa.int64())
                buffers.append(memoryview(arr.to_numpy(zero_copy_only=True)))

        def sha_all() -> str:
            h = hashlib.sha256()
            for b in buffers:
                h.update(b)
            return h.hexdigest()

        step(f"reference: hashlib.sha256 over the column buffers (median of {RUNS})")
        t_sha = median_time(sha_all, RUNS)
        step(f"reference: partition_digest of the in-memory tables (median of {RUNS})")
        t_digest = median_time(lambda: [partition_digest(t) for t in tables], RUNS)
        step(f"reference: per file, pq.read_table then partition_digest (median of {RUNS})")
        t_minimal = median_time(lambda: [partition_digest(pq.read_table(p)) for p in paths], RUNS)
        file_bytes = sum(os.path.getsize(p) for p in paths)

    assert rows == first.rows == locked_rows, (rows, first.rows, locked_rows)

    def mbps(seconds: float) -> float:
        return nbytes / seconds / 1e6

    rep.row("rows / partitions / canonical bytes", f"{rows:,} / {len(paths)} / {mb(nbytes)}")
    rep.row("verify", secs(t_verify), f"read+digest loop {secs(t_minimal)}",
            ratio(t_verify, t_minimal))
    rep.row("verify MB/s", f"{mbps(t_verify):.0f} MB/s", f"sha256 {mbps(t_sha):.0f} MB/s",
            ratio(mbps(t_verify), mbps(t_sha)))
    rep.row("verify rows/s", f"{rows / t_verify / 1e6:.2f} M/s",
            f"sha256 {rows / t_sha / 1e6:.2f} M/s", ratio(t_sha, t_verify))
    rep.goal("`qmtl-lock verify` (fresh process)", t_cli, "read + sha256 process", t_floor,
             1.3)
    rep.row("`qmtl-lock verify` (CLI, fresh process)", secs(t_cli),
            f"in-process verify {secs(t_verify)}", ratio(t_cli, t_verify))
    rep.row("  sha256 of column bytes", secs(t_sha), "verify", f"{t_sha / t_verify:.0%}")
    rep.row("  partition_digest (canonicalize + sha256)", secs(t_digest), "verify",
            f"{t_digest / t_verify:.0%}")
    rep.row("  pq.read_table per file (as verify)", secs(t_read_loop), "verify",
            f"{t_read_loop / t_verify:.0%}")
    rest = t_minimal - t_digest - t_read_loop
    rep.row("  interleaving read and digest per file", secs(rest), "verify",
            f"{rest / t_verify:.0%}")
    rest = t_verify - t_minimal
    rep.row("  verify's own overhead (lock, fsspec, ...)", secs(rest), "verify",
            f"{rest / t_verify:.0%}")
    rep.row("one multi-threaded pq.read_table(files)", secs(t_read_multi),
            f"read loop {secs(t_read_loop)}", ratio(t_read_multi, t_read_loop))
    rep.row("partition_digest", f"{mbps(t_digest):.0f} MB/s", f"sha256 {mbps(t_sha):.0f} MB/s",
            ratio(mbps(t_digest), mbps(t_sha)))
    rep.row("Parquet read loop", f"{file_bytes / t_read_loop / 1e6:.0f} MB/s of files",
            f"{mbps(t_read_loop):.0f} MB/s canonical", "")
    if first.bytes_hashed != nbytes:
        rep.note(f"VerifyResult.bytes_hashed = {first.bytes_hashed:,} differs from the canonical "
                 f"column bytes {nbytes:,} (it counts Arrow buffer sizes)")
    rep.note(f"setup resolve took {secs(t_setup)}; all reads hit the page cache")
    rep.finish(args.json)


if __name__ == "__main__":
    main()
