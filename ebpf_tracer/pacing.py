"""How long the poll loop sleeps between ring-buffer polls.

Waking up costs far more than a record (~100 us of CPU here against ~10 us per
record), so after a poll that caught up the loop sleeps to let a batch gather.
The sleep is what lets about `target` records arrive at the recent rate, kept
between `floor_s` and `ceiling_s`: at high rates a batch stays short (a short
burst of agent work for the traced apps to wait behind), at low rates a wakeup
is shared by as many records as at high ones. A rising rate shortens the
sleep at the next poll; a falling one lengthens it over a few. Pure arithmetic on the caller's
clock: no sleeping here.
"""

from __future__ import annotations


class PollPacer:
    __slots__ = ("floor_s", "ceiling_s", "target", "_last", "_per_record")

    def __init__(self, floor_s: float, ceiling_s: float, target: int, now: float) -> None:
        self.floor_s = floor_s
        self.ceiling_s = max(ceiling_s, floor_s)
        self.target = target  # 0: always floor_s
        self._last = now
        self._per_record = floor_s / max(target, 1)  # seconds between records, smoothed

    def pause(self, n: int, now: float) -> float:
        """The sleep after a poll (ending at `now`) that handled `n` > 0 records."""
        elapsed, self._last = now - self._last, now
        if not self.target:
            return self.floor_s
        # A faster rate counts at once (a burst must not overrun the ring
        # buffer); a slower one over a few polls, and an idle spell no longer
        # than the ceiling (the next burst would wait that out first).
        per = elapsed / n
        if per < self._per_record:
            self._per_record = per
        else:
            self._per_record = min(self._per_record + (per - self._per_record) * 0.3,
                                   self.ceiling_s / self.target)
        return min(max(self.floor_s, self._per_record * self.target), self.ceiling_s)
