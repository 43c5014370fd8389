"""Where coverage may end: the last closed, stable bar, and what ``end: now`` resolves to.

Pure planning arithmetic over a resolved preset and a clock reading; no I/O.
"""

from __future__ import annotations

from qmtl_engine.presets import ResolvedPreset
from qmtl_engine.ranges import floor_to
from qmtl_engine.sources import get_source_class


def closed_before(preset: ResolvedPreset, now_ms: int) -> int:
    """End of the last bar that is closed and stable at ``now_ms``."""
    interval = preset.interval_ms
    return floor_to(now_ms, interval) - preset.data.stabilization_bars * interval


def coverage_end(preset: ResolvedPreset, now_ms: int) -> int:
    """Where ``end: now`` lands: the last stable closed bar the preset's source can deliver."""
    end = closed_before(preset, now_ms)
    available = get_source_class(preset.data.source.name).available_until(now_ms)
    if available is not None:
        end = min(end, floor_to(available, preset.interval_ms))
    return end
