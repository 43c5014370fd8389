"""The physical line of each CSV row, counted while pyarrow reads the file (issue 12).

pyarrow's CSV reader numbers nothing: it skips ``skip_rows`` lines, then empty lines wherever
they are, and returns rows. :class:`LineCounter` sits between the file and the reader and counts
line breaks (``\\n``, ``\\r\\n`` and a lone ``\\r``, as pyarrow does) in the bytes it hands over,
keeping only the numbers of the empty lines (rare), so memory does not grow with the file.
:func:`row_lines` then turns row positions into line numbers. Quoted fields holding line
breaks are not supported by the reader's default options either, so one row is one line.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_LF, _CR = 10, 13


class LineCounter:
    """A readable binary file that counts the lines of what is read through it."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.lines = 0  # line breaks seen
        self._pending = 0  # bytes of the line not ended yet
        self._held_cr = False  # a chunk ended in \r: it may be half of \r\n
        self._blank: list[np.ndarray] = []

    # -- the file interface pyarrow uses -------------------------------------------------------
    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self._scan(bytes(data), end=not data)
        return bytes(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return bool(getattr(self.raw, "closed", False))

    def close(self) -> None:  # the caller closes the file it opened
        pass

    # -- counting ----------------------------------------------------------------------------
    def _scan(self, data: bytes, *, end: bool) -> None:
        if self._held_cr:
            data = b"\r" + data
            self._held_cr = False
        if data.endswith(b"\r") and not end:
            self._held_cr, data = True, data[:-1]
        if not data:
            return
        a = np.frombuffer(data, dtype=np.uint8)
        nxt = np.append(a[1:], 0)
        breaks = np.flatnonzero((a == _LF) | ((a == _CR) & (nxt != _LF)))
        if breaks.size == 0:
            self._pending += a.size
            return
        starts = np.concatenate(([-self._pending], breaks[:-1] + 1))
        length = breaks - starts
        crlf = (a[breaks] == _LF) & (breaks > 0) & (a[np.maximum(breaks - 1, 0)] == _CR)
        length -= crlf
        blank = np.flatnonzero(length == 0)
        if blank.size:
            self._blank.append(self.lines + 1 + blank)
        self.lines += int(breaks.size)
        self._pending = int(a.size - breaks[-1] - 1)

    def blank_lines(self) -> np.ndarray:
        """1-based numbers of the empty lines read so far (sorted)."""
        return np.concatenate(self._blank) if self._blank else np.zeros(0, dtype=np.int64)


def row_lines(rows: np.ndarray, blank: np.ndarray, *, skip_rows: int, header: bool) -> np.ndarray:
    """1-based lines of the data rows at 0-based positions ``rows`` of a CSV read with pyarrow:
    the first ``skip_rows`` lines are skipped whatever they hold, empty lines are skipped
    everywhere, then the header (when there is one) and the data rows follow."""
    after = blank[blank > skip_rows]
    # before_blank[j]: how many non-empty lines after the skipped ones come before empty line j
    before_blank = after - skip_rows - 1 - np.arange(after.size)
    k = np.asarray(rows, dtype=np.int64) + (1 if header else 0)
    return skip_rows + 1 + k + np.searchsorted(before_blank, k, side="right")
