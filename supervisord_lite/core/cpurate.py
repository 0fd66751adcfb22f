"""CPU use in percent of one core, from the cumulative CPU seconds in snapshots.

The daemon reports each service's CPU seconds (its whole process tree), not a rate:
a rate needs two samples. So that the first screen of `svc status --watch` and the
first paint of the status page already show a figure, a service seen for the first
time gets its average since it started; later figures are over the last interval.
"""

from __future__ import annotations

from supervisord_lite.core.snapshot import SupervisorSnapshot


class CpuTracker:
    """Per-service CPU percent; a new pid (a restart) starts over.

    The daemon samples a process tree at most once a second, so two samples closer
    than ``min_gap`` say nothing new: the last figure stays until then.
    """

    def __init__(self, min_gap: float = 1.0) -> None:
        self.min_gap = min_gap
        self._last: dict[str, tuple[int, float, float]] = {}  # name -> (pid, cpu seconds, at)
        self.percent: dict[str, float] = {}

    def update(self, snap: SupervisorSnapshot, now: float) -> dict[str, float]:
        seen = set()
        for s in snap.services:
            if s.pid is None or s.cpu_seconds is None:
                continue
            seen.add(s.name)
            last = self._last.get(s.name)
            if last is not None and last[0] == s.pid:
                if now - last[2] < self.min_gap:
                    continue
                self.percent[s.name] = max(0.0, (s.cpu_seconds - last[1]) / (now - last[2]) * 100)
            elif s.started_at is not None and now > s.started_at:
                self.percent[s.name] = max(0.0, s.cpu_seconds / (now - s.started_at) * 100)
            else:
                self.percent.pop(s.name, None)
            self._last[s.name] = (s.pid, s.cpu_seconds, now)
        for name in set(self._last) - seen:
            del self._last[name]
            self.percent.pop(name, None)
        return self.percent
